"""kind=classifier (a supervised fastText text classifier, word n-grams) on the login side: its config
section and the checks made before submission. The node side is jobs/kinds/classifier.py.

A kind rather than a `kind: python` stage: its keys are part of the schema (a typo is refused by name,
and the stage hash covers them), the labels are checked before submission, the generic completion
marker makes a finished training skip on `resume`, and the held-out metrics land in result.json where
`launcher summary` and reports read them.

Before submission a stage is refused, naming the stage and the key, when
  - classifier.labels has fewer than two labels, a label fastText cannot name (empty, whitespace), a
    label without values, or a value claimed by two labels;
  - held_out is not in (0, 1), or word_ngrams, epoch, dim, bucket, min_count are < 1, or lr <= 0;
  - extra sets a key the section has (wordNgrams, epoch, lr, dim, ...), or input/label_key is empty;
  - tasks or resources.nodes is not 1 (one training process);
  - a plain input path does not exist (preflight).
What the login node cannot see (how many documents each label has in the input) is checked when the
task starts, with the same form of message."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

from launcher.errors import ConfigError
from launcher.kinds.base import Kind, Problems
from launcher.config.placeholders import check_placeholders, plain_paths

# fastText names a label "__label__<name>" inside a whitespace-separated line: no whitespace in a name
LABEL_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
# train_supervised arguments the section owns (extra may not set them again)
OWN_ARGS = ("input", "wordNgrams", "epoch", "lr", "dim", "bucket", "minCount", "seed", "thread", "label")


@dataclass
class Classifier:
    """kind=classifier: fasttext.train_supervised on labelled documents; metrics on a held-out split."""

    input: str = "{input}"  # a datatrove JSONL folder (a parent's output) or a .jsonl(.gz) file
    text_key: str = "text"  # a field of the record, or a dotted path (input.text)
    label_key: str = "kind"  # the same (datatrove metadata is flattened into the record)
    labels: Dict[str, List[str]] = field(default_factory=dict)  # fastText label -> values of label_key
    held_out: float = 0.2  # share of each label's documents kept out of training (stratified)
    seed: int = 0  # the split and fastText's own seed (one thread: the same model every time)
    word_ngrams: int = 2  # fastText wordNgrams: word bigrams by default
    epoch: int = 5
    lr: float = 0.1
    dim: int = 100
    bucket: int = 2000000  # hashed n-gram rows: the model file is ~ bucket * dim * 4 bytes
    min_count: int = 1
    extra: Dict[str, Any] = field(default_factory=dict)  # other fasttext.train_supervised keywords


def check_labels(p: Problems, labels: Dict[str, Any]) -> None:
    if len(labels) < 2:
        p.add("classifier.labels", f"a classifier needs at least two labels (label -> values of label_key), got "
                                   f"{len(labels)}: {sorted(labels) or 'none'}")
    owner: Dict[str, str] = {}
    for name, values in labels.items():
        if not LABEL_NAME.match(str(name)):
            p.add(f"classifier.labels.{name}", "a fastText label name is letters, digits, '_', '.', '-' (no spaces)")
        if not values or not isinstance(values, list):
            p.add(f"classifier.labels.{name}", f"needs a non-empty list of values of label_key, got {values!r}")
            continue
        for v in values:
            if str(v) in owner and owner[str(v)] != name:
                p.add(f"classifier.labels.{name}", f"value {v!r} is also a value of label {owner[str(v)]!r}")
            owner.setdefault(str(v), name)


def check_training(p: Problems, c: Dict[str, Any]) -> None:
    if not 0 < c["held_out"] < 1:
        p.add("classifier.held_out", f"must be in (0, 1) (the share of each label kept for metrics), got {c['held_out']}")
    for k in ("word_ngrams", "epoch", "dim", "bucket", "min_count"):
        if c[k] < 1:
            p.add(f"classifier.{k}", f"must be >= 1, got {c[k]}")
    if c["lr"] <= 0:
        p.add("classifier.lr", f"must be > 0, got {c['lr']}")
    if clash := sorted(set(c["extra"]) & set(OWN_ARGS)):
        p.add("classifier.extra", f"sets {', '.join(clash)}: the section has its own key (or the kind sets it)")
    for k in ("input", "text_key", "label_key"):
        if not c[k]:
            p.add(f"classifier.{k}", "must not be empty")


class ClassifierKind(Kind):
    name = "classifier"
    section, schema = "classifier", Classifier
    payload_keys = ("classifier",)
    reads_stage_outputs = True

    def check_config(self, p: Problems, st: Dict[str, Any]) -> None:
        c = st["classifier"]
        check_labels(p, c["labels"])
        check_training(p, c)
        if st["tasks"] != 1:
            p.add("tasks", f"must be 1 (one fastText training per sweep point), got {st['tasks']}")
        if st["resources"]["nodes"] != 1:
            p.add("resources.nodes", f"fastText trains on one node, got {st['resources']['nodes']}")

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        c = st["classifier"]
        check_placeholders(p.stage, st, [(f"{p.key}.classifier.input", c["input"])] if c["input"] else [],
                           ancestors, p.errors)

    def preflight(self, plan, stage) -> List[ConfigError]:
        pairs = [(f"pipeline.stages.{stage.name}.classifier.input", p["classifier"]["input"]) for p in stage.payloads]
        return [ConfigError(f"{path} does not exist", stage=stage.name, key=key)
                for key, path in dict.fromkeys(plain_paths(pairs)) if not os.path.exists(path)]

    def targets(self, stage) -> List[Tuple[str, str]]:
        return [(f"pipeline.stages.{stage.name}.classifier", "fasttext.train_supervised")]

    def describe(self, plan, stage, plan_dir: Path) -> List[str]:
        c = stage.payloads[0]["classifier"]
        labels = "; ".join(f"{k} <- {c['label_key']} in {v}" for k, v in c["labels"].items())
        return [f"{stage.name}: fastText (wordNgrams {c['word_ngrams']}, epoch {c['epoch']}, lr {c['lr']}, dim "
                f"{c['dim']}, bucket {c['bucket']}) on {c['input']}; labels: {labels}; {c['held_out']:.0%} of each "
                f"label held out (seed {c['seed']}) for precision/recall/F1 in result.json; output model.bin"]


KIND = ClassifierKind()
