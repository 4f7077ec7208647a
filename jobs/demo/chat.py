"""Chat data for the demo's alignment stages, made offline from the same standard-library prose as the
demo corpus (jobs/demo/corpus.py, training paragraphs only):

  sft.jsonl  {"messages": [user: "Complete the sentence: <its first words>", assistant: <the sentence>]}
  dpo.jsonl  {"prompt": [user ...], "chosen": [assistant: <the sentence>],
              "rejected": [assistant: <keyword spam of the same length>]}
              (also the reward model's preference pairs)
  prompts.jsonl  {"prompt": [user ...]}: the DPO examples' prompts, for GRPO/RLOO

Deterministic for a seed. Standard library only: a `python` stage (jobs.demo.chat:stage) or
`python -m jobs.demo.chat OUT_DIR`.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

from jobs import layout
from jobs.demo.corpus import SPAM_WORDS, training_paragraphs

PROMPT_WORDS = 6


def sentences(limit: int, seed: int) -> list[str]:
    """Whole first sentences of training paragraphs, 8 to 30 words, in a seeded order."""
    out = []
    for p in training_paragraphs():
        s = re.split(r"(?<=[.!?])\s+", p)[0]
        if 8 <= len(s.split()) <= 30:
            out.append(s)
    random.Random(seed).shuffle(out)
    return out[:limit]


def user(sentence: str) -> dict:
    return {"role": "user", "content": "Complete the sentence: " + " ".join(sentence.split()[:PROMPT_WORDS])}


def write(out_dir: Path, sft: int = 256, dpo: int = 256, seed: int = 0) -> dict:
    rng = random.Random(seed + 1)
    pool = sentences(sft + dpo, seed)
    if len(pool) < sft + dpo:
        raise ValueError(f"only {len(pool)} sentences for {sft} SFT + {dpo} DPO examples")
    out_dir = Path(out_dir)
    sft_lines = [{"messages": [user(s), {"role": "assistant", "content": s}]} for s in pool[:sft]]
    dpo_lines = []
    for s in pool[sft:]:
        spam = " ".join(rng.choice(SPAM_WORDS) for _ in s.split())
        dpo_lines.append({"prompt": [user(s)], "chosen": [{"role": "assistant", "content": s}],
                          "rejected": [{"role": "assistant", "content": spam}]})
    prompt_lines = [{"prompt": x["prompt"]} for x in dpo_lines]
    for name, lines in (("sft.jsonl", sft_lines), ("dpo.jsonl", dpo_lines), ("prompts.jsonl", prompt_lines)):
        layout.atomic_write_text(out_dir / name, "".join(json.dumps(x) + "\n" for x in lines))
    return {"sft": len(sft_lines), "dpo": len(dpo_lines), "folder": str(out_dir)}


def stage(ctx) -> dict:
    """kind=python target: params sft, dpo, seed."""
    p = ctx.params or {}
    return write(ctx.output_dir, int(p.get("sft", 256)), int(p.get("dpo", 256)), int(p.get("seed", 0)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--sft", type=int, default=256)
    ap.add_argument("--dpo", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(json.dumps(write(Path(a.out_dir), a.sft, a.dpo, a.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
