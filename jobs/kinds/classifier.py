"""kind=classifier on the compute node: a supervised fastText classifier (fasttext.train_supervised, word
n-grams) trained on labelled documents, measured on a held-out split. One task per sweep point.

1. records: classifier.input (a datatrove JSONL folder or a JSONL file; jobs/runtime/prompt_records.py
   reads it, datatrove metadata flattened), each labelled by the first label whose values hold
   record[label_key]; records whose value no label lists are not used (counted in result.json);
2. split: per label, the records sorted by id are shuffled by classifier.seed and the first
   ceil(held_out * n) held out: stratified, and the same split for the same input and seed;
3. training: one thread (fastText is then deterministic for a seed), the text with newlines replaced by
   spaces, as datatrove's FastTextClassifierFilter does with newline_replacement=" ";
4. output: <output>/model.bin (what FastTextClassifierFilter's model_url names), and result.json with
   precision, recall, F1 and support per label on the held-out records (`metrics`, a pure function).

A label with fewer than two documents in the input (one to train on, one to measure) fails the task at
its start, naming the stage and classifier.labels: the login node does not read the data."""
from __future__ import annotations

import math
import random
import time
from typing import Any, Dict, List, Sequence, Tuple

from jobs import layout
from jobs.runtime import prompt_records

reruns_when_complete = False
resolves_hub_references = True

MODEL = "model.bin"
TRAIN_FILE = "train.txt"


class ClassifierConfigError(ValueError):
    """Bad stage config found on the node (what the input holds): names stage and key."""


def bad(stage: str, key: str, message: str) -> ClassifierConfigError:
    return ClassifierConfigError(f"stage '{stage}': pipeline.stages.{stage}.classifier.{key}: {message}")


def field(rec: Dict[str, Any], key: str) -> Any:
    """rec[key], else a dotted path into nested mappings ("input.text": a field a generate stage kept);
    None when absent."""
    if key in rec:
        return rec[key]
    node: Any = rec
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def labelled(records, c: Dict[str, Any]) -> Tuple[List[Tuple[str, str, str]], int]:
    """([(id, label, text)], count of records no label claims). Records without text are skipped."""
    label_of = {str(v): name for name, values in c["labels"].items() for v in values}
    out, unused = [], 0
    for _, rid, rec in records:
        label = label_of.get(str(field(rec, c["label_key"])))
        text = field(rec, c["text_key"])
        if label is None or not isinstance(text, str) or not text.strip():
            unused += 1
            continue
        out.append((rid, label, text))
    return out, unused


def split(docs: List[Tuple[str, str, str]], held_out: float, seed: int):
    """(train, held-out): per label, ids sorted then shuffled by seed; ceil(held_out * n) held out."""
    train, test = [], []
    for label in sorted({d[1] for d in docs}):
        mine = sorted((d for d in docs if d[1] == label), key=lambda d: d[0])
        random.Random(f"{seed}:{label}").shuffle(mine)
        k = min(len(mine) - 1, max(1, math.ceil(held_out * len(mine))))
        test += mine[:k]
        train += mine[k:]
    return train, test


def check_counts(stage: str, c: Dict[str, Any], docs: List[Tuple[str, str, str]]) -> Dict[str, int]:
    """{label: documents}; raises when a label has fewer than 2 (nothing to train on or to measure)."""
    counts = {name: sum(1 for d in docs if d[1] == name) for name in c["labels"]}
    short = {k: n for k, n in counts.items() if n < 2}
    if short:
        raise bad(stage, "labels", f"{', '.join(f'{k!r} has {n}' for k, n in short.items())} document(s) in "
                                   f"{c['input']} ({c['label_key']} in its values): each label needs >= 2 (one to "
                                   f"train on, one held out); documents per label: {counts}")
    return counts


def metrics(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> Dict[str, Any]:
    """Precision, recall, F1 and support per label, their macro average and the accuracy. A label never
    predicted has precision 0.0 (and never present, recall 0.0): no division by zero, no NaN."""
    per: Dict[str, Dict[str, float]] = {}
    for label in labels:
        tp = sum(1 for t, p in zip(truth, predicted) if t == label and p == label)
        fp = sum(1 for t, p in zip(truth, predicted) if t != label and p == label)
        fn = sum(1 for t, p in zip(truth, predicted) if t == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per[label] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    macro = {k: sum(m[k] for m in per.values()) / len(per) if per else 0.0 for k in ("precision", "recall", "f1")}
    accuracy = sum(1 for t, p in zip(truth, predicted) if t == p) / len(truth) if truth else 0.0
    return {"labels": per, "macro": macro, "accuracy": accuracy, "documents": len(truth)}


def one_line(text: str) -> str:
    return text.replace("\n", " ").strip()


def run(task) -> Dict[str, Any]:
    import fasttext

    c = dict(task.payload["classifier"])
    c["input"] = layout.Folders(task.spec, task.point).fill(c["input"])
    try:
        docs, unused = labelled(prompt_records.file_records(c["input"]), c)
    except FileNotFoundError as e:
        raise bad(task.stage, "input", str(e)) from None
    counts = check_counts(task.stage, c, docs)
    train, test = split(docs, c["held_out"], c["seed"])
    out = task.ctx.output_dir
    out.mkdir(parents=True, exist_ok=True)
    train_file = task.ctx.checkpoint_dir / TRAIN_FILE
    train_file.parent.mkdir(parents=True, exist_ok=True)
    train_file.write_text("".join(f"__label__{label} {one_line(text)}\n" for _, label, text in train), encoding="utf-8")
    task.log(f"fastText on {len(train)} documents ({counts}), {len(test)} held out; {unused} unlabelled skipped")
    t0 = time.time()
    model = fasttext.train_supervised(input=str(train_file), wordNgrams=c["word_ngrams"], epoch=c["epoch"], lr=c["lr"],
                                      dim=c["dim"], bucket=c["bucket"], minCount=c["min_count"], seed=c["seed"],
                                      thread=1, verbose=0, **c["extra"])
    train_s = time.time() - t0
    model.save_model(str(out / MODEL))
    predicted = [model.predict(one_line(text))[0][0].removeprefix("__label__") for _, _, text in test]
    result = metrics([d[1] for d in test], predicted, list(c["labels"]))
    wrong = [{"id": d[0], "label": d[1], "predicted": p} for d, p in zip(test, predicted) if d[1] != p]
    return {"held_out": result, "misclassified": wrong[:50], "train_documents": len(train), "documents": counts,
            "unlabelled": unused, "train_s": round(train_s, 3), "model": str(task.final_out / MODEL),
            "word_ngrams": c["word_ngrams"], "seed": c["seed"]}
