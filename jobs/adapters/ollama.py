"""An Ollama Modelfile beside a GGUF file (templates/ollama_modelfile.j2): FROM the file, the chat
template, stop tokens, so that `ollama create NAME -f Modelfile` works in that folder.

Ollama's TEMPLATE is a Go template over .Messages, a Hugging Face chat template is Jinja2: the first is
derived from the second by rendering it with marker contents (one user turn with and without the
generation prompt, a user + assistant exchange, a system turn), which gives each role's text before and
after its content and the generation prompt. The Go template put together from these pieces is then
checked: emulated here on a 4-message conversation, it must give exactly what the Jinja2 template
gives. A template that is not a concatenation of per-message pieces (a BOS once at the start, content
rewritten, roles refused) fails the check, and the Modelfile then has no TEMPLATE (Ollama falls back
to the chat template it detects in the GGUF metadata, tokenizer.chat_template), which `result.json`
says. Stops: the EOS token and the user turn's opening text (the model starting the next turn).

Standard library at import; `apply` is the tokenizer's apply_chat_template."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

Apply = Callable[[List[Dict[str, str]], bool], str]
MARK = {"system": "\x02S\x03", "user": "\x02U\x03", "assistant": "\x02A\x03"}
ROLES = ("system", "user", "assistant")


def _around(text: str, mark: str) -> tuple[str, str]:
    i = text.index(mark)
    return text[:i], text[i + len(mark):]


def pieces(apply: Apply) -> Optional[Dict[str, str]]:
    """{"<role>_pre", "<role>_suf", "gen"} of a chat template, or None when they cannot be found."""
    s, u, a = ({"role": r, "content": MARK[r]} for r in ROLES)
    try:
        nogen, withgen, exchange = apply([u], False), apply([u], True), apply([u, a], False)
        out = {"user_pre": _around(nogen, MARK["user"])[0], "user_suf": _around(nogen, MARK["user"])[1]}
        if not withgen.startswith(nogen):
            return None
        out["gen"] = withgen[len(nogen):]
        between, out["assistant_suf"] = _around(_around(exchange, MARK["user"])[1], MARK["assistant"])
        if not between.startswith(out["user_suf"]):
            return None
        out["assistant_pre"] = between[len(out["user_suf"]):]
    except (ValueError, KeyError):
        return None
    try:
        before, rest = _around(apply([s, u], False), MARK["system"])
        out["system_pre"], out["system_suf"] = before, rest[:len(rest) - len(nogen)]
        if not rest.endswith(nogen):
            raise ValueError
    except Exception:  # a template may refuse a system turn (raise_exception): then it has none
        out["system_pre"] = out["system_suf"] = None
    return out


def go_template(p: Dict[str, str]) -> str:
    """Ollama's Go template of the pieces: each message as its role's pre + content + suf, the generation
    prompt after a last message that is not the assistant's (Ollama's own templates' $last idiom). One
    line without trim markers ({{- ... -}} would eat the pieces' own newlines)."""
    branches = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{r}" }}}}{_go(p[r + "_pre"])}{{{{ .Content }}}}'
        + ("{{ if not $last }}" + _go(p[r + "_suf"]) + "{{ end }}" if r == "assistant" else _go(p[r + "_suf"]))
        for i, r in enumerate(r for r in ROLES if p[r + "_pre"] is not None))
    return ("{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}" + branches
            + f'{{{{ end }}}}{{{{ if and $last (ne .Role "assistant") }}}}{_go(p["gen"])}{{{{ end }}}}{{{{ end }}}}')


def _go(text: str) -> str:
    """Literal text inside a Go template: only "{{" needs quoting."""
    return text.replace("{{", '{{ "{{" }}')


def emulate(p: Dict[str, str], messages: List[Dict[str, str]]) -> str:
    """What go_template(p) renders for `messages` (checked against the Jinja2 template)."""
    out = []
    for i, m in enumerate(messages):
        last = i == len(messages) - 1
        suf = p[m["role"] + "_suf"] if m["role"] != "assistant" or not last else ""
        out.append(p[m["role"] + "_pre"] + m["content"] + suf)
        if last and m["role"] != "assistant":
            out.append(p["gen"])
    return "".join(out)


def template_for(apply: Apply) -> Optional[str]:
    """The Go template of a chat template when its emulation matches the Jinja2 rendering, else None."""
    p = pieces(apply)
    if p is None:
        return None
    convo = [{"role": "user", "content": "Hello there."}, {"role": "assistant", "content": "Hi! How can I help?"},
             {"role": "user", "content": "Say {{ nothing }}."}]
    if p["system_pre"] is not None:
        convo.insert(0, {"role": "system", "content": "Be brief."})
    if emulate(p, convo) != apply(convo, True) or '"""' in "".join(v or "" for v in p.values()):
        return None
    return go_template(p)


def stops(p: Optional[Dict[str, str]], eos: Optional[str]) -> List[str]:
    """Stop strings: the EOS token, and the user turn's opening (stripped) when it has one."""
    out = [eos] if eos else []
    opening = (p or {}).get("user_pre", "").strip()
    if opening and opening not in out:
        out.append(opening)
    return out


def modelfile(apply: Optional[Apply], eos: Optional[str], gguf: str, **context) -> tuple[str, bool]:
    """(the Modelfile's text, whether it has a TEMPLATE). context: stage, run_id, source, name."""
    from jobs.runtime import templating

    template = template_for(apply) if apply else None
    p = pieces(apply) if template else None
    return templating.render("ollama_modelfile.j2", gguf=gguf, template=template, stops=stops(p, eos),
                             **context), template is not None
