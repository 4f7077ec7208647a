"""Evaluation tasks for the lighteval stage: held-out data made offline, and the task specs that name it.

The demo corpus (jobs/demo/corpus.py) is made of standard-library docstring paragraphs; ~10% of them are
reserved and never written into any corpus (`demo_corpus.held_out_paragraphs()`). `write_tasks` turns
those into two tasks:

  clean_next  multiple choice: the first half (by words) of a held-out paragraph is the query; the
              choices are its true second half and the second halves of 3 other held-out paragraphs
              (seeded, gold at a seeded position). Metric `acc_norm`: the choice with the highest
              log-likelihood per character wins (lighteval's LoglikelihoodAcc with LogProbCharNorm).
              Random baseline 0.25.
  clean_bpb   held-out paragraphs scored by bits per byte (lighteval's loglikelihood_rolling +
              `bits_per_byte`: -sum(log p) / ln 2 / UTF-8 bytes). Lower is better. No random baseline in
              the spec (None): what an uninformed model scores depends on the tokenizer (uniform over a
              vocabulary of V tokens: log2(V) x tokens / bytes), not on the task.

A task spec is a plain dict (a stage config carries a list of them):

  {"name": "clean_next", "kind": "multiple_choice", "path": "/abs/clean_next.jsonl", "metric": "acc_norm",
   "random_baseline": 0.25, "higher_is_better": true}
  {"name": "clean_bpb", "kind": "perplexity", "path": "/abs/clean_bpb.jsonl", "metric": "bits_per_byte",
   "random_baseline": null, "higher_is_better": false}

Point `path` at your own jsonl (one JSON object a line, UTF-8) to evaluate other data:

  kind multiple_choice  {"query": "The capital of France", "choices": [" is Paris.", " is Rome."], "gold": 0}
                        the model scores query + choice; write the space between them into the choices
                        (or end the query with it). metric: acc_norm (per character) or acc (raw).
  kind perplexity       {"text": "A whole document to score."}
                        metric: bits_per_byte, byte_perplexity or word_perplexity.

Other keys in a row are ignored. `name` becomes lighteval's task name (letters, digits, `_ . -`).
Standard library only at import: the login node can write and check these files.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

from jobs.layout import atomic_write_text

KINDS = {
    "multiple_choice": {"metrics": ("acc_norm", "acc"), "fields": ("query", "choices", "gold")},
    "perplexity": {"metrics": ("bits_per_byte", "byte_perplexity", "word_perplexity"), "fields": ("text",)},
}
HIGHER_IS_BETTER = {"acc_norm": True, "acc": True, "bits_per_byte": False, "byte_perplexity": False,
                    "word_perplexity": False}
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
CHOICES = 4
SUITE_TASKS = ("clean_next", "clean_bpb")  # the task names write_tasks gives the demo suite


def held_out_paragraphs() -> list[str]:
    """The standard-library paragraphs no demo corpus contains (see jobs/demo/corpus.py)."""
    from jobs.demo.corpus import held_out_paragraphs as held_out

    return held_out()


def _halves(paragraph: str) -> tuple[str, str]:
    """(first half by words, the rest from the space before it on): together, the paragraph again."""
    words = list(re.finditer(r"\S+", paragraph))
    cut = words[len(words) // 2 - 1].end()
    return paragraph[:cut], paragraph[cut:]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    # Every evaluation task of a run writes the same files at the same time: each through its own
    # temporary name (identical content, so whichever rename lands last is right).
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def spec(name: str, kind: str, path: str | Path, metric: str | None = None,
         random_baseline: float | None = None) -> dict:
    """A task spec for a jsonl file of your own (see the module docstring for the row formats)."""
    if kind not in KINDS:
        raise ValueError(f"task {name!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    metric = metric or KINDS[kind]["metrics"][0]
    s = {"name": name, "kind": kind, "path": str(path), "metric": metric, "random_baseline": random_baseline,
         "higher_is_better": HIGHER_IS_BETTER.get(metric)}
    problems = check_spec(s, read=False)
    if problems:
        raise ValueError("; ".join(problems))
    return s


def write_tasks(out_dir: str | Path, n: int = 200, seed: int = 0) -> dict:
    """Write clean_next.jsonl and clean_bpb.jsonl (up to `n` rows each, fewer if fewer paragraphs are
    held out) into out_dir; return {task name: spec}. Deterministic for (n, seed, Python version)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pool = held_out_paragraphs()
    if len(pool) < CHOICES:
        raise ValueError(f"only {len(pool)} held-out paragraphs: too few for {CHOICES} choices")
    rng = random.Random(seed)
    picked = rng.sample(range(len(pool)), k=min(n, len(pool)))

    mc = []
    for i in picked:
        query, answer = _halves(pool[i])
        others = rng.sample([j for j in range(len(pool)) if j != i], k=CHOICES - 1)
        choices = [_halves(pool[j])[1] for j in others]
        gold = rng.randrange(CHOICES)
        choices.insert(gold, answer)
        mc.append({"query": query, "choices": choices, "gold": gold})
    text = [{"text": pool[i]} for i in picked]

    _write_jsonl(out / "clean_next.jsonl", mc)
    _write_jsonl(out / "clean_bpb.jsonl", text)
    specs = {
        "clean_next": spec("clean_next", "multiple_choice", (out / "clean_next.jsonl").resolve(), "acc_norm",
                           random_baseline=1 / CHOICES),
        "clean_bpb": spec("clean_bpb", "perplexity", (out / "clean_bpb.jsonl").resolve(), "bits_per_byte"),
    }
    for s in specs.values():
        s["samples"] = len(picked)
    atomic_write_text(out / "tasks.json", json.dumps(specs, indent=1) + "\n")
    return specs


# -- reading and checking -------------------------------------------------------------------------------
def _row_problem(kind: str, row) -> str | None:
    if not isinstance(row, dict):
        return "not a JSON object"
    if kind == "perplexity":
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            return '"text" must be a non-empty string'
        return None
    if not isinstance(row.get("query"), str):
        return '"query" must be a string'
    choices = row.get("choices")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        return '"choices" must be a list of at least 2 non-empty strings'
    gold = row.get("gold")
    if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(choices):
        return f'"gold" must be an index into "choices" (0..{len(choices) - 1})'
    return None


def load_rows(task: dict) -> list[dict]:
    """The rows of a task's jsonl, checked against its kind; ValueError names the file and line."""
    path = Path(task["path"])
    if not path.is_file():
        raise ValueError(f"task {task.get('name')!r}: path {path} is not a file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"task {task.get('name')!r}: {path}:{lineno} is not JSON ({e})") from None
            problem = _row_problem(task["kind"], row)
            if problem:
                raise ValueError(f"task {task.get('name')!r}: {path}:{lineno}: {problem} (kind {task['kind']})")
            rows.append(row)
    if not rows:
        raise ValueError(f"task {task.get('name')!r}: {path} has no rows")
    return rows


def check_spec(task, read: bool = True) -> list[str]:
    """Problems with one task spec (an empty list if none); with read=True, its file is read too."""
    if not isinstance(task, dict):
        return [f"a task spec must be a mapping, not {type(task).__name__}"]
    name = task.get("name")
    where = f"task {name!r}"
    problems = []
    if not isinstance(name, str) or not NAME.match(name):
        problems.append(f"{where}: name must be letters, digits, '_', '.' or '-'")
    kind = task.get("kind")
    if kind not in KINDS:
        problems.append(f"{where}: kind must be one of {', '.join(KINDS)} (it is {kind!r})")
    elif task.get("metric") not in KINDS[kind]["metrics"]:
        problems.append(f"{where}: metric for kind {kind} must be one of {', '.join(KINDS[kind]['metrics'])} "
                        f"(it is {task.get('metric')!r})")
    if not isinstance(task.get("path"), str) or not task["path"]:
        problems.append(f"{where}: path must name a jsonl file")
    if read and not problems:
        try:
            load_rows(task)
        except ValueError as e:
            problems.append(str(e))
    return problems
