"""Scores a Hugging Face model folder with lighteval 0.13 (transformers backend) on local task files.

`evaluate(model_dir, tasks, out_dir)` runs in the calling process, offline, on CPU (or the one GPU
accelerate finds): the tasks are the plain specs of jobs/adapters/eval_tasks.py (`{"name", "kind", "path",
"metric", ...}`), their rows read from local jsonl files, nothing fetched from a hub. A stage evaluates
many checkpoints by calling it repeatedly in one process: lighteval is imported once, and each call
builds its own model, tasks and results.

How lighteval is kept offline and local (lighteval 0.13):
- Its task registry imports every built-in task module when it is built, and some of them go online at
  import. `Pipeline._init_tasks_and_requests` is overridden to build a registry holding only our
  `LightevalTaskConfig`s (`OfflineRegistry`: the attributes `Registry.__init__` would set, without
  calling `Registry.load_all_task_configs`), so no built-in task module is imported; nothing of
  lighteval is patched, so repeated calls (and other lighteval users in the process) see it unchanged.
- The datasets are not loaded with `datasets.load_dataset` (which wants a hub name or a folder and
  caches copies under ~/.cache): each task's `dataset` is set to an in-memory `DatasetDict` made from
  the checked jsonl rows, before lighteval asks for its documents.
- The model config's `get_model_sha` (a hub call) returns "" for a local folder, and lighteval's sample
  cache (keyed by the model *path* and task config, not by weights or file contents: a rewritten
  checkpoint or jsonl would be served stale answers) is turned off; its folder is a temporary one.

What else differs from plain lighteval 0.13, and why:
- Whole-text scoring (kind perplexity) uses our `loglikelihood_rolling`: lighteval's fails on a Doc
  without choices and, given the text as a choice, scores token i with the logits of position i.
  Ours conditions on the end-of-document token, as in training, and checks against a direct
  computation (tests/integration/test_lighteval.py).
- Autograd: importing lighteval's transformers model switches it off for the whole process; the
  import restores it and the evaluation runs under torch.no_grad() instead.
- Standard errors: lighteval's bootstrap (corpus-level metrics) forks cpu_count() processes and divides
  the resamples' spread by sqrt(resamples); it is switched off and `_stderrs` fills in the standard
  errors (lighteval's mean_stderr for averaged metrics, a seeded bootstrap for corpus-level ones).

Results: lighteval writes `<out_dir>/results_<time>.json` (its own format); the return value is
{task name: {metric: value, metric + "_stderr": value or None}} read from that file.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from jobs.adapters.eval_tasks import check_spec, load_rows

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
BOOTSTRAP = 1000  # resamples for the standard error of corpus-level metrics


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """The folder as a Path if it looks like a Hugging Face model checkpoint (a config.json naming a
    model_type, weights, a tokenizer); else ValueError naming the folder and what is missing.
    Standard library only (no loading)."""
    path = Path(model_dir)
    if not path.is_dir():
        raise ValueError(f"model folder {path} does not exist or is not a folder")
    files = sorted(p.name for p in path.iterdir())
    shown = ", ".join(files[:12]) + (", ..." if len(files) > 12 else "") if files else "it is empty"
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"{path} is not a model checkpoint: it has no config.json ({shown})")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a model checkpoint: its config.json is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ValueError(f"{path} is not a model checkpoint: its config.json names no model_type")
    if not any((path / w).is_file() for w in WEIGHTS):
        raise ValueError(f"{path} is not a model checkpoint: no weights ({' or '.join(WEIGHTS[::2])}); "
                         f"it holds {shown}")
    if not any((path / t).is_file() for t in TOKENIZER):
        raise ValueError(f"{path} has no tokenizer ({' or '.join(TOKENIZER[:2])}): lighteval needs one in the "
                         f"model folder")
    return path


def _imports():
    """lighteval's (and torch's, numpy's, datasets') names this module uses, imported once."""
    import types

    import numpy as np
    import torch

    grad = torch.is_grad_enabled()
    from datasets import Dataset, DatasetDict
    from lighteval.logging.evaluation_tracker import EvaluationTracker
    from lighteval.metrics.metrics import Metrics
    from lighteval.metrics.metrics_sample import LoglikelihoodAcc
    from lighteval.metrics.normalizations import LogProbCharNorm
    from lighteval.metrics.utils.metric_utils import SampleLevelMetric
    from lighteval.metrics.utils.stderr import mean_stderr
    from lighteval.models.model_output import ModelResponse
    from lighteval.models.transformers.transformers_model import TransformersModel, TransformersModelConfig
    from lighteval.pipeline import ParallelismManager, Pipeline, PipelineParameters
    from lighteval.tasks.lighteval_task import LightevalTaskConfig
    from lighteval.tasks.registry import Registry
    from lighteval.tasks.requests import Doc, SamplingMethod

    # importing lighteval's transformers model runs torch.set_grad_enabled(False) for the whole process
    # (a training loop after it would silently get no gradients): undone here, evaluate() uses no_grad
    torch.set_grad_enabled(grad)
    return types.SimpleNamespace(
        np=np, torch=torch, Dataset=Dataset, DatasetDict=DatasetDict, EvaluationTracker=EvaluationTracker,
        Metrics=Metrics, LoglikelihoodAcc=LoglikelihoodAcc, LogProbCharNorm=LogProbCharNorm,
        SampleLevelMetric=SampleLevelMetric, mean_stderr=mean_stderr, ModelResponse=ModelResponse,
        TransformersModel=TransformersModel, TransformersModelConfig=TransformersModelConfig,
        ParallelismManager=ParallelismManager, Pipeline=Pipeline, PipelineParameters=PipelineParameters,
        LightevalTaskConfig=LightevalTaskConfig, Registry=Registry, Doc=Doc, SamplingMethod=SamplingMethod)


def _metric(le, name: str):
    """lighteval's metric for a task spec's `metric`."""
    if name == "acc_norm":  # lighteval < 0.10 had it as Metrics.loglikelihood_acc_norm
        return le.SampleLevelMetric(metric_name="acc_norm",
                                    sample_level_fn=le.LoglikelihoodAcc(logprob_normalization=le.LogProbCharNorm()),
                                    category=le.SamplingMethod.LOGPROBS, corpus_level_fn=le.np.mean,
                                    higher_is_better=True)
    return {"acc": le.Metrics.loglikelihood_acc, "bits_per_byte": le.Metrics.bits_per_byte,
            "byte_perplexity": le.Metrics.byte_perplexity, "word_perplexity": le.Metrics.word_perplexity}[name]


def _prompts(le) -> dict:
    """A task spec's `kind` -> lighteval's prompt function (a jsonl row -> Doc)."""
    def multiple_choice(line: dict, task_name: str | None = None):
        return le.Doc(task_name=task_name, query=line["query"], choices=list(line["choices"]),
                      gold_index=int(line["gold"]))

    def perplexity(line: dict, task_name: str | None = None):
        # the whole text is scored (LocalTransformersModel.loglikelihood_rolling); lighteval's metric
        # counts the bytes / words of original_query
        return le.Doc(task_name=task_name, query=line["text"], original_query=line["text"], choices=None,
                      gold_index=None)

    return {"multiple_choice": multiple_choice, "perplexity": perplexity}


def _windows(model, docs: list, start_id) -> tuple[list, list]:
    """(windows, encoded docs) of whole-text scoring: each doc after start_id, in windows of the model's
    context length, each conditioned on the max_length tokens before it. A window is
    (doc index, input ids, first scored position, target ids)."""
    max_len = int(model.max_length)
    windows, encoded = [], []
    for d, doc in enumerate(docs):
        ids = list(model.tok_encode(doc.query, add_special_tokens=False))
        seq = ([start_id] if start_id is not None else []) + ids
        encoded.append(ids)
        begin = 1  # seq[0] is the context (or, without EOS/BOS, the unscored first token)
        while begin < len(seq):
            end = min(begin + max_len - 1, len(seq))
            lo = max(0, end - max_len)
            windows.append((d, seq[lo:end], begin - lo - 1, seq[begin:end]))
            begin = end
    return windows, encoded


def _rolling_loglikelihood(model, docs: list, le) -> list:
    """LocalTransformersModel.loglikelihood_rolling: each text's total log-likelihood, scored as a
    document is seen in training (after the end-of-document token; windows of the context length)."""
    torch = le.torch
    start_id = model.tokenizer.eos_token_id
    if start_id is None:
        start_id = model.tokenizer.bos_token_id
    windows, encoded = _windows(model, docs, start_id)
    totals = [0.0] * len(docs)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(windows)), key=lambda w: -len(windows[w][1]))
    step = max(1, int(model.config.batch_size or 1))
    with torch.no_grad():
        for b in range(0, len(order), step):
            batch = [windows[w] for w in order[b:b + step]]
            width = max(len(x) for _, x, _, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, x, _, _) in enumerate(batch):
                ids[row, :len(x)] = torch.tensor(x)
                mask[row, :len(x)] = 1
            logits = model.model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, (d, _, first, targets) in enumerate(batch):
                pos = torch.arange(first, first + len(targets), device=logprobs.device)
                tgt = torch.tensor(targets, device=logprobs.device)
                totals[d] += float(logprobs[row, pos, tgt].sum())
    return [le.ModelResponse(logprobs=[totals[d]], input_tokens=[start_id] if start_id is not None else [],
                             output_tokens=[encoded[d]], argmax_logits_eq_gold=[False])
            for d in range(len(docs))]


def _model_classes(le) -> tuple[type, type]:
    """(LocalModelConfig, LocalTransformersModel): lighteval's transformers model config and model
    with what a local folder and whole-text scoring need."""
    class LocalModelConfig(le.TransformersModelConfig):
        def get_model_sha(self):  # a local folder has no hub revision; the base class asks the hub
            return ""

    class LocalTransformersModel(le.TransformersModel):
        """lighteval's transformers model, with a log-likelihood of whole texts that works.

        lighteval 0.13's `loglikelihood_rolling` (transformers backend) fails on a Doc without choices,
        and with the text as a choice it gathers the logits of position i for token i (no shift),
        while its `loglikelihood` cannot score a continuation after an empty context (and drops a
        context that is only EOS). Here each text is scored as a document is seen in training: after
        the end-of-document token, every token predicted by the positions before it, in windows of
        the model's context length (each window conditioned on the max_length tokens before it)."""

        def loglikelihood_rolling(self, docs: list) -> list:
            return _rolling_loglikelihood(self, docs, le)

        def loglikelihood(self, docs: list) -> list:
            # lighteval cuts the context from the left to fit, but a choice longer than the model's
            # context fails deep inside with a tensor size mismatch: say which task and choice instead
            limit = int(self.max_length)
            for doc in docs:
                for choice in doc.choices:
                    n = len(self.tok_encode(choice, add_special_tokens=False))
                    if n >= limit:
                        raise ValueError(f"task {doc.task_name.split('|')[0]!r}, document {doc.id}: a choice is "
                                         f"{n} tokens, the model's context only {limit}")
            return super().loglikelihood(docs)

    return LocalModelConfig, LocalTransformersModel


def _pipeline_class(le, model_cls: type) -> type:
    """LocalPipeline: lighteval's Pipeline with only our task configs and in-memory datasets."""
    class OfflineRegistry(le.Registry):
        """Only the given task configs: Registry.__init__ would import every built-in task module."""

        def __init__(self, configs: list):
            self.tasks_list = [f"{c.name}|0" for c in configs]
            self._load_multilingual = False
            self._custom_tasks = None
            self._task_registry = {c.name: c for c in configs}
            self.task_to_configs = self._update_task_configs()

    class LocalPipeline(le.Pipeline):
        def __init__(self, *, task_configs: list, datasets: dict, model_dir: str, **kwargs):
            self._task_configs, self._datasets, self._model_dir = task_configs, datasets, model_dir
            super().__init__(tasks=",".join(f"{c.name}|0" for c in task_configs), **kwargs)

        def _init_tasks_and_requests(self, tasks: str):
            # Pipeline._init_tasks_and_requests of lighteval 0.13, with our registry and in-memory datasets
            self.registry = OfflineRegistry(self._task_configs)
            self.tasks_dict = self.registry.load_tasks()
            for task in self.tasks_dict.values():
                task.dataset = self._datasets[task.name]
            self.documents_dict = {task.full_name: task.get_docs(self.pipeline_parameters.max_samples)
                                   for task in self.tasks_dict.values()}
            self.sampling_docs = {}
            for docs in self.documents_dict.values():
                for doc in docs:
                    for sampling in doc.sampling_methods:
                        self.sampling_docs.setdefault(sampling, []).append(doc)
            self.evaluation_tracker.task_config_logger.log(self.tasks_dict)

        def _init_model(self, model_config, model):
            try:
                return model_cls(model_config)
            except Exception as e:  # noqa: BLE001 - any load failure means: not a usable checkpoint
                raise ValueError(f"{self._model_dir} is not a loadable model checkpoint: "
                                 f"{type(e).__name__}: {e}") from e

    return LocalPipeline


@functools.lru_cache(maxsize=1)
def _lighteval():
    """lighteval's classes and ours built on them: imported and defined once per process."""
    le = _imports()
    le.LocalModelConfig, le.LocalTransformersModel = _model_classes(le)
    le.LocalPipeline = _pipeline_class(le, le.LocalTransformersModel)
    le.metric = functools.partial(_metric, le)
    le.prompts = _prompts(le)
    return le


def _stderrs(pipeline, le, resamples: int = BOOTSTRAP) -> None:
    """Standard errors into lighteval's aggregated results (before they are saved): a metric averaged
    over documents gets lighteval's `mean_stderr`; a corpus-level one (bits_per_byte, perplexities)
    the standard deviation of the metric over `resamples` bootstrap resamples of the documents
    (numpy, seed 0, in this process)."""
    import numpy as np

    logger = pipeline.evaluation_tracker.metrics_logger
    for task_name, metrics in logger.metrics_values.items():
        aggregations = pipeline.tasks_dict[task_name].aggregation()
        for metric_name, values in metrics.items():
            if len(values) < 2 or metric_name not in aggregations:
                continue
            fn = aggregations[metric_name]
            if fn is np.mean:
                stderr = le.mean_stderr(values)
            else:
                rng = np.random.default_rng(0)
                stats = [fn([values[i] for i in rng.integers(0, len(values), len(values))])
                         for _ in range(resamples)]
                stderr = float(np.std(stats, ddof=1))
            logger.metric_aggregated[task_name][f"{metric_name}_stderr"] = float(stderr)


def _check_loadable(path: Path) -> None:
    """Config and tokenizer load with transformers (cheap; the weights are loaded by lighteval)."""
    from transformers import AutoConfig, AutoTokenizer

    for what, load in (("config", AutoConfig.from_pretrained), ("tokenizer", AutoTokenizer.from_pretrained)):
        try:
            load(str(path))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{path} is not a loadable model checkpoint: its {what} does not load "
                             f"({type(e).__name__}: {e})") from None


def _check_tasks(tasks: list[dict]) -> list:
    """The task names; ValueError naming every problem of the specs (without reading their rows)."""
    problems = [p for t in tasks for p in check_spec(t, read=False)]
    names = [t.get("name") for t in tasks if isinstance(t, dict)]
    if not tasks:
        problems.append("no tasks given")
    if len(set(names)) != len(names):
        problems.append(f"task names repeat: {names}")
    if problems:
        raise ValueError("invalid task specs: " + "; ".join(problems))
    return names


def _read_scores(out: Path, before: set, tasks: list[dict]) -> dict:
    """{task name: {metric: value, metric + "_stderr": value or None}} from the results file lighteval
    wrote into `out` (the newest one not in `before`)."""
    written = sorted(set(out.glob("results_*.json")) - before, key=lambda p: p.stat().st_mtime)
    if not written:
        raise RuntimeError(f"lighteval wrote no results file into {out}")
    results = json.loads(written[-1].read_text())["results"]
    scores = {}
    for t in tasks:
        got = results.get(f"{t['name']}|0")
        if got is None:
            raise RuntimeError(f"lighteval's results ({written[-1]}) have no entry for task {t['name']!r}: "
                               f"{sorted(results)}")
        scores[t["name"]] = {k: v for k, v in got.items() if not k.endswith("_stderr")}
        for k in list(scores[t["name"]]):
            scores[t["name"]][f"{k}_stderr"] = got.get(f"{k}_stderr")
    return scores


def evaluate(model_dir: str, tasks: list[dict], out_dir: str, *, batch_size: int = 8, max_samples: int | None = None,
             dtype: str = "float32", log: Callable[[str], None] = print) -> dict:
    """Score the Hugging Face model in `model_dir` on the task specs with lighteval, in this process.

    batch_size: sequences per forward pass in lighteval's sense (for multiple choice it is divided by
    the number of choices and rounded to a multiple of 8 documents, at least 1). max_samples: the first
    N documents of each task after lighteval's fixed shuffle (seed 42); None: all.
    Returns {task name: {metric: value, metric + "_stderr": value or None}}.
    Raises ValueError naming the folder when model_dir is not a model checkpoint, and naming the task
    (file and line) when a task spec or its rows are invalid."""
    t0 = time.time()
    names = _check_tasks(tasks)
    path = check_model_dir(model_dir).resolve()
    rows = {t["name"]: load_rows(t) for t in tasks}

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    le = _lighteval()
    t_import = time.time() - t0
    _check_loadable(path)

    configs, datasets = [], {}
    for t in tasks:
        configs.append(le.LightevalTaskConfig(
            name=t["name"], prompt_function=le.prompts[t["kind"]], hf_repo=str(t["path"]), hf_subset="default",
            metrics=[le.metric(t["metric"])], hf_avail_splits=["test"], evaluation_splits=["test"],
            few_shots_split="test", generation_size=-1, version=0))
        datasets[t["name"]] = le.DatasetDict({"test": le.Dataset.from_list(rows[t["name"]])})

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("results_*.json"))
    cache = tempfile.mkdtemp(prefix="lighteval-cache-")
    try:
        model_config = le.LocalModelConfig(model_name=str(path), batch_size=batch_size, dtype=dtype,
                                           model_parallel=False, cache_dir=cache)
        tracker = le.EvaluationTracker(output_dir=str(out), results_path_template="{output_dir}", save_details=False)
        # bootstrap_iters=0: lighteval's own bootstrap forks a pool of cpu_count() processes and divides
        # the spread of its resamples by sqrt(iterations); _stderrs computes the standard errors instead
        params = le.PipelineParameters(launcher_type=le.ParallelismManager.NONE, max_samples=max_samples,
                                       bootstrap_iters=0)
        t1 = time.time()
        with le.torch.no_grad():
            pipeline = le.LocalPipeline(task_configs=configs, datasets=datasets, model_dir=str(path),
                                        pipeline_parameters=params, evaluation_tracker=tracker,
                                        model_config=model_config)
            pipeline.model._cache = None  # no sample cache: see the module docstring
            t2 = time.time()
            pipeline.evaluate()
        _stderrs(pipeline, le)
        pipeline.save_and_push_results()
        t3 = time.time()
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    scores = _read_scores(out, before, tasks)
    log(f"lighteval: {path.name} on {len(tasks)} task(s) in {time.time() - t0:.1f} s (imports {t_import:.1f} s, "
        f"load {t2 - t1:.1f} s, evaluate {t3 - t2:.1f} s): "
        + ", ".join(f"{n} {t['metric']}={scores[n][t['metric']]:.4f}" for n, t in zip(names, tasks)))
    return scores
