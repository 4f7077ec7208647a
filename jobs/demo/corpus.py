"""A small web-like corpus made offline from what every machine has, so each data filter has work.

  clean     English prose: the docstrings of the Python standard library, unwrapped into paragraphs
  foreign   French, German, Spanish, Italian, Portuguese and Dutch prose (jobs/demo/text/foreign.txt)
  spam      keyword stuffing, navigation boilerplate, lorem ipsum, and pages on a banned-word URL
  near_dup  a clean document with one word in ~150 changed: MinHash finds these

Every document carries its ground truth in `metadata.kind` (and `metadata.dup_of` for near-duplicates),
so a test can check what each filter removed. Deterministic for a given seed and Python version.
Standard library only: `launcher demo-corpus` runs it on the login node.

Held out: a paragraph whose text hashes to 0 mod 10 (`is_held_out`, sha1 of its UTF-8 text; ~10%) is
never written into any corpus, so evaluation data made from `held_out_paragraphs()` (jobs/adapters/eval_tasks.py;
those of them that share no 10-word run with a training paragraph) is unseen by every model trained on
the demo corpus, whatever the seed or size.

  python -m jobs.demo.corpus OUT_DIR [--docs 1200] [--shards 4] [--seed 0]
"""
from __future__ import annotations

import argparse
import ast
import functools
import gzip
import hashlib
import json
import os
import random
import re
import sys
import sysconfig
from pathlib import Path

# The share of each kind; clean documents fill the rest.
SHARES = {"foreign": 0.15, "spam": 0.15, "near_dup": 0.10}
FOREIGN_TEXT = Path(__file__).with_name("text") / "foreign.txt"
HELD_OUT_OVERLAP = 10  # words: a reserved paragraph sharing this many in a row with training text is dropped


def _unwrap(docstring: str) -> list[str]:
    """Docstring → prose paragraphs: wrapped lines joined, code, doctests and field lists dropped."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", docstring):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        if not lines or any(ln.startswith((">>>", "...", "$", "-", "*", ":", "#")) or ln.endswith("::")
                            or " -- " in ln for ln in lines):
            continue
        text = " ".join(lines)
        words = text.split()
        if (len(words) >= 12 and text.endswith(".") and not re.search(r"[{}\[\]=<>|_\\`@]", text)
                and sum(w[0].isalpha() for w in words) > 0.9 * len(words)):
            paragraphs.append(text)
    return paragraphs


def stdlib_paragraphs() -> list[str]:
    """Prose paragraphs from the docstrings of the standard library, in a stable order (held-out ones too)."""
    return list(_paragraphs_under(sysconfig.get_paths()["stdlib"]))


def is_held_out(paragraph: str) -> bool:
    """True for the ~10% of paragraphs reserved for evaluation: a stable hash of the text alone."""
    return int(hashlib.sha1(paragraph.encode("utf-8")).hexdigest(), 16) % 10 == 0


def held_out_paragraphs(overlap_words: int = HELD_OUT_OVERLAP) -> list[str]:
    """The reserved paragraphs, in a stable order, less those that share a run of `overlap_words` words
    with a training paragraph (the standard library repeats itself: one reserved paragraph lies whole
    inside another docstring), so no part of one ever appears in a demo corpus."""
    def runs(text: str) -> set:
        w = text.split()
        return {tuple(w[i:i + overlap_words]) for i in range(len(w) - overlap_words + 1)}

    seen = set().union(*(runs(p) for p in training_paragraphs()))
    return [p for p in stdlib_paragraphs() if is_held_out(p) and not runs(p) & seen]


def training_paragraphs() -> list[str]:
    """The paragraphs the demo corpus's clean documents are made of."""
    return [p for p in stdlib_paragraphs() if not is_held_out(p)]


@functools.lru_cache(maxsize=4)
def _paragraphs_under(stdlib: str) -> tuple[str, ...]:
    """Scanning the standard library takes ~7 s: once per process and root."""
    root = Path(stdlib)
    seen, out = set(), []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if rel[0] in ("test", "site-packages", "idlelib", "lib2to3", "tkinter") or "tests" in rel:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                for p in _unwrap(doc or ""):
                    if p not in seen:
                        seen.add(p)
                        out.append(p)
    return tuple(out)


def foreign_paragraphs() -> dict[str, list[str]]:
    """language → paragraphs, from `[xx]` sections of foreign.txt."""
    langs: dict[str, list[str]] = {}
    lang = None
    for block in re.split(r"\n\s*\n", FOREIGN_TEXT.read_text(encoding="utf-8")):
        block = block.strip()
        m = re.match(r"^\[(\w+)\]\s*", block)
        if m:
            lang, block = m.group(1), block[m.end():].strip()
        if block and lang:
            langs.setdefault(lang, []).append(" ".join(block.split()))
    return langs


def _sentences(paragraphs: list[str]) -> list[str]:
    return [s for p in paragraphs for s in re.split(r"(?<=[.!?])\s+", p) if len(s.split()) >= 4]


def _clean(rng: random.Random, pool: list[str]) -> str:
    """Random paragraphs up to 150-400 words: two clean documents rarely share one, so only the
    planted near-duplicates look alike to MinHash."""
    paras, words, goal = [], 0, rng.randint(150, 400)
    while words < goal:
        p = pool[rng.randrange(len(pool))]
        paras.append(p)
        words += len(p.split())
    return "\n\n".join(paras)


def _foreign(rng: random.Random, langs: dict[str, list[str]]) -> tuple[str, str]:
    lang = rng.choice(sorted(langs))
    sentences = _sentences(langs[lang])
    picked = rng.sample(sentences, k=min(len(sentences), rng.randint(6, 12)))
    return lang, "\n\n".join(" ".join(picked[i:i + 3]) for i in range(0, len(picked), 3))


SPAM_WORDS = ["cheap", "watches", "best", "price", "buy", "online", "free", "shipping", "deal", "discount",
              "replica", "sale", "today", "offer", "casino", "bonus", "win", "now"]
NAV = ["Home", "About us", "Contact", "Login", "Register", "Cart (0)", "Search", "FAQ", "Blog", "Shop",
       "Privacy", "Terms", "Sitemap", "Careers", "Help"]
LOREM = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
         "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip "
         "ex ea commodo consequat.")


def _spam(rng: random.Random, clean_pool: list[str]) -> tuple[str, str, str | None]:
    """(style, text, url or None)."""
    style = rng.choice(["keywords", "navigation", "lorem", "banned_url"])
    if style == "keywords":
        line = " ".join(rng.choice(SPAM_WORDS) for _ in range(8)).capitalize() + "!"
        text = "\n".join([line] * rng.randint(8, 20) + [" ".join(rng.sample(SPAM_WORDS, 10))])
        return style, text, None
    if style == "navigation":
        lines = [rng.choice(NAV) for _ in range(rng.randint(30, 60))]
        lines += ["Copyright 2024. All rights reserved.", "This site uses cookies. Read our cookie policy.",
                  "Please enable JavaScript to view this page."]
        return style, "\n".join(lines), None
    if style == "lorem":
        return style, "\n".join([LOREM] * rng.randint(3, 8)), None
    # An ordinary-looking page on a URL that names a banned word: only the URL filter can catch it.
    return style, _clean(rng, clean_pool), f"https://cheap-cialis-{rng.randrange(10**6)}.example.com/page.html"


def _near_dup(rng: random.Random, original: str) -> str:
    words = original.split(" ")
    for _ in range(max(1, len(words) // 150)):
        i = rng.randrange(len(words))
        if words[i].isalpha():
            words[i] = words[i][::-1]
    return " ".join(words)


def make_corpus(out_dir: Path, docs: int = 1200, shards: int = 4, seed: int = 0) -> dict:
    """Write `shards` jsonl.gz files of `docs` documents (shuffled) into out_dir; return the counts."""
    rng = random.Random(seed)
    pool = training_paragraphs()
    langs = foreign_paragraphs()
    n = {k: int(docs * share) for k, share in SHARES.items()}
    n["clean"] = docs - sum(n.values())
    records = []
    clean = []
    for i in range(n["clean"]):
        text = _clean(rng, pool)
        clean.append((f"clean-{i}", text))
        records.append({"id": f"clean-{i}", "text": text, "metadata": {"kind": "clean", "url": f"https://docs.example.org/{i}"}})
    for i in range(n["foreign"]):
        lang, text = _foreign(rng, langs)
        records.append({"id": f"foreign-{i}", "text": text,
                        "metadata": {"kind": "foreign", "lang": lang, "url": f"https://{lang}.example.org/{i}"}})
    for i in range(n["spam"]):
        style, text, url = _spam(rng, pool)
        records.append({"id": f"spam-{i}", "text": text,
                        "metadata": {"kind": "spam", "style": style, "url": url or f"https://shop.example.com/{i}"}})
    for i in range(n["near_dup"]):
        orig_id, orig = clean[rng.randrange(len(clean))]
        records.append({"id": f"near_dup-{i}", "text": _near_dup(rng, orig),
                        "metadata": {"kind": "near_dup", "dup_of": orig_id, "url": f"https://mirror.example.net/{i}"}})
    rng.shuffle(records)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        tmp = out_dir / f".{s:05d}.jsonl.gz.tmp"
        with gzip.GzipFile(tmp, "wb", mtime=0) as f:  # mtime=0: the same corpus is the same bytes
            for r in records[s::shards]:
                f.write((json.dumps(r, ensure_ascii=False) + "\n").encode())
        os.replace(tmp, out_dir / f"{s:05d}.jsonl.gz")
    counts = {"documents": len(records), "kinds": n, "paragraph_pool": len(pool), "shards": shards, "seed": seed,
              "bytes": sum((out_dir / f"{s:05d}.jsonl.gz").stat().st_size for s in range(shards))}
    (out_dir / "corpus.json").write_text(json.dumps(counts, indent=1) + "\n")
    return counts


def stage(ctx) -> dict:
    """kind=python target: the corpus into the task's output folder (params docs, shards, seed)."""
    p = ctx.params or {}
    return make_corpus(ctx.output_dir, int(p.get("docs", 1200)), int(p.get("shards", 4)), int(p.get("seed", 0)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.demo.corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--docs", type=int, default=1200, help="documents in all (default 1200)")
    p.add_argument("--shards", type=int, default=4, help="jsonl.gz files (default 4)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    counts = make_corpus(a.out_dir, a.docs, a.shards, a.seed)
    print(f"wrote {counts['documents']} documents ({counts['bytes'] / 1e6:.1f} MB gzipped) in {a.shards} shard(s) "
          f"to {a.out_dir}: {counts['kinds']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
