"""The product on one GPU machine (scripts/gpu-check, docs/gpu-check.md), through `launcher run ...
cluster=local-gpu wait=true` (the embedded local backend; every stage in the machine's own python3):

  hf       kind=pretrain, backend hf (transformers' Trainer), a Llama made here, bf16 on the GPU;
  sft      kind=align, TRL's SFTTrainer through `accelerate launch`, bf16 on the GPU;
  requeue  the hf run again, stopped after step k by the pre-timeout signal (USR2 to the task's process,
           as Slurm's --signal sends it), requeued by the task itself, and resumed: from the newest complete checkpoint, to the last step, to the same final loss.
  quantize kind=quantize method=bnb (bitsandbytes NF4, saved as a Hugging Face folder) on a ~0.5B Llama
           made from a config: size before/after, bits per byte of both on held-out text (GPU only;
           bitsandbytes comes as a wheel, scripts/gpu-check --fetch-wheels).

For hf and sft: tokens/s as the product reports it (result.json: trained tokens over the seconds of
trainer.train(), data loading, logging and the final checkpoint save included) next to the same model
and batch trained by a plain transformers/torch loop (benchmarks/gpu_check_helper.py `direct`), and the
MFU of each: 6 x active parameters (launcher/kinds/pretrain.py param_count, the formula of `launcher plan`)
x tokens/s over the GPU's dense bf16 peak (cluster.gpu_peak_tflops of the profile, 989 TFLOP/s).

`--cpu`: the same code path with tiny sizes in float32 on the CPU (no MFU), for machines without a GPU.
This module runs with the launcher's interpreter and imports no torch; the stage interpreter runs the
helper. The table is printed last; everything measured goes to <out>/gpu-check.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HELPER = ROOT / "benchmarks" / "gpu_check_helper.py"
PROFILE = "local-gpu"  # cluster_profiles/local-gpu.yaml
PEAK_TFLOPS = 989.0  # its gpu_peak_tflops: H100/H200 SXM dense bf16, NVIDIA's datasheet
# The local scheduler process names its module on its command line (launcher/local/backend.py DRIVER):
# cleanup waits for it to exit. tests/unit/test_gpu_check.py checks the two agree.
DRIVER_MODULE = "launcher.local.driver"

# Sizes per mode. gpu: the 100m preset's shape (conf/model/100m.yaml) with a 32k vocabulary (the
# tokenizer made here has `tokenizer_vocab` tokens; the model's vocabulary may be larger), sequences
# of 1024, 16 per micro-batch. cpu: a 2-layer, hidden-32 Llama, seconds per run.
MODEL_100M = {"name": "gpu-check", "hidden_size": 768, "intermediate_size": 2048, "num_layers": 12, "num_heads": 12,
              "num_kv_heads": 4, "vocab_size": 32768, "max_position_embeddings": 2048, "rope_theta": 10000.0,
              "rms_norm_eps": 1e-5, "tie_embeddings": True, "init_std": 0.02, "num_experts": 0, "experts_top_k": 2,
              "moe_intermediate_size": None}
MODEL_TINY = {**MODEL_100M, "hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 4,
              "num_kv_heads": 2, "vocab_size": None, "max_position_embeddings": 256}
SIZES: Dict[str, Dict[str, Any]] = {
    "gpu": {"cuda": True, "dtype": "bfloat16", "model": MODEL_100M, "docs": 3000, "tokenizer_vocab": 2000,
            "hf": {"seq_len": 1024, "micro_batch": 16, "steps": 480, "log_every": 40, "warmup": 5, "direct_steps": 30},
            "requeue": {"every": 120, "stop_after": 120},
            "sft": {"seq_len": 1024, "micro_batch": 16, "steps": 120, "log_every": 20, "warmup": 5, "direct_steps": 30},
            "sft_max_length": 1024, "sft_examples": 16 * 120, "mem_gb": 32, "loss_rtol": 2e-2,
            "budget_s": 480, "reserve_s": {"hf": 260, "sft": 170},
            # ~0.5B: 24 layers x (4 x 1024^2 attention-ish + 3 x 1024 x 4096 MLP) + a 32k embedding, tied
            "quantize": {"model": {**MODEL_100M, "hidden_size": 1024, "intermediate_size": 4096, "num_layers": 24,
                                   "num_heads": 16, "num_kv_heads": 4}, "type": "nf4", "samples": 16}},
    "cpu": {"cuda": False, "dtype": "float32", "model": MODEL_TINY, "docs": 300, "tokenizer_vocab": 400,
            "hf": {"seq_len": 32, "micro_batch": 4, "steps": 60, "log_every": 10, "warmup": 2, "direct_steps": 20},
            "requeue": {"every": 15, "stop_after": 15},
            "sft": {"seq_len": 64, "micro_batch": 4, "steps": 8, "log_every": 2, "warmup": 2, "direct_steps": 8},
            "sft_max_length": 64, "sft_examples": 4 * 8, "mem_gb": 3, "loss_rtol": 1e-4,
            "budget_s": 900, "reserve_s": {"hf": 200, "sft": 100}},
}
CHECKS = ("hf", "sft", "requeue", "quantize")


# -- pure arithmetic and rendering (tests/unit/test_gpu_check.py) -------------------------------------
def active_params(model: Dict[str, Any], vocab: int) -> int:
    """Active parameters per token of a Llama-style model: launcher/kinds/pretrain.py param_count, the count
    `launcher plan` uses for its GPU-hour estimate (embeddings included, tied ones once)."""
    from launcher.kinds.pretrain import param_count

    return param_count(model, vocab)["active"]


def mfu(tokens_per_s: Optional[float], params: int, peak_tflops: Optional[float]) -> Optional[float]:
    """Model FLOPs utilization: 6 x params x tokens/s (forward + backward of a dense decoder, the 6N rule
    of Kaplan et al. 2020 that launcher/kinds/pretrain.py estimate() uses; attention's own FLOPs left out) over
    the peak rate. None when there is no rate or no peak (CPU mode)."""
    if not tokens_per_s or not peak_tflops:
        return None
    return 6.0 * params * tokens_per_s / (peak_tflops * 1e12)


def fmt_rate(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def fmt_ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pastes into notes and issues) with columns padded to their widest cell; cells
    are str()-ed, '|' in a cell is escaped."""
    cells = [[str(h) for h in headers]] + [[str(c).replace("|", "\\|") for c in r] for r in rows]
    if any(len(r) != len(headers) for r in cells):
        raise ValueError(f"every row needs {len(headers)} cells")
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def speed_row(name: str, launcher: Optional[dict], direct: Optional[dict], params: Optional[int],
              peak: Optional[float], status: str) -> List[str]:
    """One row of the table: launcher and direct tokens/s, their ratio, the MFU of each, the verdict."""
    lt = (launcher or {}).get("tokens_per_s")
    dt = (direct or {}).get("tokens_per_s")
    return [name, fmt_rate(lt), fmt_rate(dt), fmt_ratio(lt, dt), fmt_pct(mfu(lt, params or 0, peak)),
            fmt_pct(mfu(dt, params or 0, peak)), status]


HEADERS = ("check", "launcher tok/s", "direct tok/s", "launcher/direct", "MFU launcher", "MFU direct", "result")


# -- running things -----------------------------------------------------------------------------------
class Runner:
    """One gpu-check: its work folder, interpreters, sizes and what was found so far."""

    def __init__(self, mode: str, work: Path, stage_python: str, launcher_python: str, peak: Optional[float]):
        self.mode, self.work, self.sizes = mode, work, json.loads(json.dumps(SIZES[mode]))
        self.sizes["work"] = str(work)
        self.stage_python, self.launcher_python, self.peak = stage_python, launcher_python, peak
        self.env = {**os.environ, "LAUNCHER_GPU_PYTHON": stage_python, "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        if mode == "cpu":  # one thread on both sides, as benchmarks/bench_train_hf.py: the numbers compare
            self.env["SLURM_CPUS_PER_TASK"] = "1"
        self.sizes_file = work / "sizes.json"
        self.prepared: Dict[str, Any] = {}
        self.deadline = time.time() + float(self.sizes["budget_s"])
        self.report: Dict[str, Any] = {"mode": mode, "stage_python": stage_python, "sizes": self.sizes}

    def say(self, msg: str) -> None:
        print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def helper(self, *args: str, timeout: float = 600) -> dict:
        """Run the helper in the stage interpreter; its last stdout line is JSON."""
        p = subprocess.run([self.stage_python, str(HELPER), *args], capture_output=True, text=True, env=self.env,
                           timeout=timeout, cwd=self.work)
        if p.returncode != 0:
            raise RuntimeError(f"helper {args[0]} exited {p.returncode}: {(p.stderr or p.stdout)[-1500:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    def launcher(self, name: str, overrides: List[str]) -> subprocess.Popen:
        """`launcher run <overrides> cluster=local-gpu wait=true` in its own run root; output to a log."""
        root = self.work / "runs" / name
        root.mkdir(parents=True, exist_ok=True)
        argv = [self.launcher_python, "-m", "launcher", "run", *overrides, f"cluster={PROFILE}", "wait=true", "poll_s=1",
                f"run_root={root}"]
        (root / "command.txt").write_text(" ".join(argv) + "\n")
        log = open(root / "launcher.log", "w")
        # From the checkout's root, as a user runs it: `-m launcher` finds this checkout's package there
        # (the GPU machine has the launcher's dependencies as wheels, not the launcher installed).
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)

    def left(self, reserve: float = 0.0) -> float:
        """Seconds of the budget left, less `reserve` (kept for the checks still to come)."""
        return self.deadline - time.time() - reserve

    def finish(self, name: str, proc: subprocess.Popen, timeout: float) -> tuple[int, Optional[Path]]:
        """Wait for a `launcher run` (at most `timeout` s); past it, `launcher cancel` the run (its tasks
        run on under the local scheduler otherwise) and return rc -9. (rc, run directory or None)."""
        root = self.work / "runs" / name

        def run_dir() -> Optional[Path]:
            return next((p.parent for p in sorted(root.glob("*/run.json"))), None)

        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            self.say(f"{name}: over its {timeout:.0f} s: cancelling the run")
            proc.kill()
            if run_dir():
                subprocess.run([self.launcher_python, "-m", "launcher", "cancel", str(run_dir())], env=self.env,
                               capture_output=True, timeout=60)
            rc = -9
        return rc, run_dir()

    # -- the three checks -------------------------------------------------------------------------
    def hf_overrides(self, steps: int, every_steps: int) -> List[str]:
        s, m, prep = self.sizes["hf"], self.sizes["model"], self.prepared
        tps = s["seq_len"] * s["micro_batch"]
        st = "pipeline.stages.train"
        model = [f"model.{k}={'null' if v is None else v}" for k, v in m.items() if k != "name"]
        return ["pipeline=train", "~pipeline.stages.evaluate", f"pipeline.vars.data={prep['data']}",
                f"pipeline.vars.tokenizer={prep['tokenizer']}", f"pipeline.vars.tokens={steps * tps}",
                f"pipeline.vars.checkpoint_every_tokens={every_steps * tps}", *model,
                f"{st}.train.seq_len={s['seq_len']}", f"{st}.train.micro_batch={s['micro_batch']}",
                f"{st}.train.dtype={self.sizes['dtype']}", f"{st}.train.log_every_steps={s['log_every']}",
                f"{st}.resources.gpus_per_node={1 if self.sizes['cuda'] else 0}", f"{st}.resources.mem_gb={self.sizes['mem_gb']}"]

    def check_hf(self) -> dict:
        s = self.sizes["hf"]
        proc = self.launcher("hf", self.hf_overrides(s["steps"], s["steps"]))
        rc, run_dir = self.finish("hf", proc, self.left(reserve=self.sizes["reserve_s"]["hf"]))
        result = read_result(run_dir, "train")
        return {"rc": rc, "run_dir": str(run_dir), "result": result,
                "ok": rc == 0 and bool(result) and result.get("final_step") == s["steps"]
                and result.get("device") == ("cuda" if self.sizes["cuda"] else "cpu")}

    def check_sft(self) -> dict:
        s, prep, st = self.sizes["sft"], self.prepared, "pipeline.stages.sft"
        overrides = ["pipeline=align", "~pipeline.stages.dpo", "~pipeline.stages.serve", "~pipeline.stages.smoke",
                     f"pipeline.vars.model={prep['sft_model']}", f"pipeline.vars.sft_data={prep['sft_data']}",
                     f"pipeline.vars.dpo_data={prep['sft_data']}", f"pipeline.vars.steps={s['steps']}",
                     f"pipeline.vars.gpus={1 if self.sizes['cuda'] else 0}", f"{st}.align.max_length={s['seq_len']}",
                     f"{st}.align.micro_batch={s['micro_batch']}", f"{st}.align.checkpoint_every_steps=0",
                     f"{st}.align.log_every_steps={s['log_every']}", f"{st}.align.dtype={self.sizes['dtype']}",
                     f"{st}.resources.mem_gb={self.sizes['mem_gb']}"]
        rc, run_dir = self.finish("sft", self.launcher("sft", overrides), self.left(reserve=self.sizes["reserve_s"]["sft"]))
        result = read_result(run_dir, "sft")
        if result and result.get("train_seconds"):
            result["tokens_per_s"] = round(result["tokens"] / result["train_seconds"], 1)  # what TRL counted
        return {"rc": rc, "run_dir": str(run_dir), "result": result,
                "ok": rc == 0 and bool(result) and result.get("final_step") == s["steps"]
                and result.get("device") == ("cuda" if self.sizes["cuda"] else "cpu")}

    def check_quantize(self) -> dict:
        """kind=quantize method=bnb on the ~0.5B model: its result.json (sizes, bits per byte)."""
        q = self.sizes["quantize"]
        self.sizes_file.write_text(json.dumps(self.sizes))
        made = self.helper("quant-model", str(self.work / "data" / "prepared.json"), str(self.sizes_file),
                           str(self.work / "quant-model"))
        st = "pipeline.stages.q8"
        overrides = ["pipeline=quantize", "~pipeline.stages.q4", f"pipeline.vars.model={made['model']}",
                     "pipeline.vars.gpus=1", f"pipeline.vars.eval_samples={q['samples']}", f"{st}.quantize.method=bnb",
                     f"{st}.quantize.type={q['type']}", f"{st}.resources.mem_gb={self.sizes['mem_gb']}"]
        rc, run_dir = self.finish("quantize", self.launcher("quantize", overrides), self.left())
        result = read_result(run_dir, "q8")
        quant = (result or {}).get("quantization") or {}
        return {"rc": rc, "run_dir": str(run_dir), "result": result, "params": made["params"],
                "ok": rc == 0 and quant.get("method") == "bnb" and bool(quant.get("bits_per_byte"))}

    def check_requeue(self, uninterrupted: Optional[dict]) -> dict:
        s, rq = self.sizes["hf"], self.sizes["requeue"]
        proc = self.launcher("requeue", self.hf_overrides(s["steps"], rq["every"]))
        root = self.work / "runs" / "requeue"
        signalled = stop_after(root, "train", rq["stop_after"], proc, timeout=self.left())
        rc, run_dir = self.finish("requeue", proc, self.left())
        out = {"rc": rc, "run_dir": str(run_dir), "signalled": signalled}
        out.update(judge_resume(run_dir, s["steps"], rq["stop_after"], uninterrupted, self.sizes["loss_rtol"]))
        out["ok"] = rc == 0 and out.pop("resume_ok")
        return out


# -- the run directory (jobs/layout.py) ------------------------------------------------------------------
def read_result(run_dir: Optional[Path], stage: str) -> Optional[dict]:
    """result.json of task 0 of the stage's first point, or None."""
    if run_dir is None:
        return None
    f = Path(run_dir) / "stages" / stage / "out" / "0" / "0" / "result.json"
    return json.loads(f.read_text()) if f.is_file() else None


def checkpoint_markers(run_dir: Path, stage: str) -> Dict[int, dict]:
    """{step: marker} of the stage's complete checkpoints (jobs/runtime/checkpoints.py MARKER)."""
    from jobs.runtime.checkpoints import MARKER

    out = {}
    for f in (Path(run_dir) / "stages" / stage / "ckpt" / "0").glob(f"checkpoint-*/{MARKER}"):
        out[int(f.parent.name.split("-")[1])] = json.loads(f.read_text())
    return dict(sorted(out.items()))


def processes_naming(root: Path, needle: str = " -m jobs.task ") -> List[int]:
    """Pids of the running processes whose command line holds `needle` and names a path under `root`
    (" -m jobs.task ": a task; DRIVER_MODULE: a run's local scheduler, launcher/local/backend.py DRIVER)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd and str(root) in cmd:
            pids.append(int(d.name))
    return sorted(pids)


def stop_after(root: Path, stage: str, step: int, proc: subprocess.Popen, timeout: float) -> dict:
    """Once checkpoint-<step> of the run under `root` is marked complete, send the stage's stop signal
    (SIGUSR2, requeue.signal) to its task process: what Slurm's --signal does ahead of a time limit or
    a preemption ("all job steps will be signaled, but not the batch shell itself", sbatch(1)).
    {step seen, pids signalled, seconds}."""
    from jobs.runtime.checkpoints import MARKER

    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if list(root.glob(f"*/stages/{stage}/ckpt/0/checkpoint-{step}/{MARKER}")):
            pids = processes_naming(root)
            for pid in pids:
                os.kill(pid, signal.SIGUSR2)
            return {"after_step": step, "pids": pids, "seconds": round(time.time() - t0, 2)}
        time.sleep(0.05)
    why = f"the run ended before checkpoint-{step} was marked" if proc.poll() is not None else "timeout"
    return {"after_step": step, "pids": [], "seconds": round(time.time() - t0, 2), "error": why}


def judge_resume(run_dir: Optional[Path], steps: int, stop_after_step: int, uninterrupted: Optional[dict],
                 rtol: float) -> dict:
    """Did the stopped run resume at the right step? The stop checkpoint S (reason "stop", S >= the step
    after which the signal went) is the newest complete checkpoint when the task requeued; the second
    attempt must resume from S (result.json resumed_from, its log line), reach the last step, and end with
    the uninterrupted run's final loss (within rtol: bf16 kernels on a GPU are not bit-reproducible)."""
    if run_dir is None:
        return {"resume_ok": False, "why": "no run directory"}
    result = read_result(run_dir, "train") or {}
    marks = checkpoint_markers(run_dir, "train")
    stops = [s for s, m in marks.items() if m.get("reason") == "stop"]
    done = next(iter(sorted((Path(run_dir) / "stages" / "train" / "markers").glob("*/0.done"))), None)
    restarts = json.loads(done.read_text()).get("restarts") if done else None
    stop = stops[-1] if stops else None
    newest_then = max([s for s in marks if stop is not None and s <= stop], default=None)
    log_says = stop is not None and any(f"resuming from checkpoint-{stop} " in p.read_text(errors="replace")
                                        for p in (Path(run_dir) / "stages" / "train").rglob("*") if p.is_file()
                                        and p.suffix in (".out", ".err", ".log") and p.stat().st_size < 50_000_000)
    loss, ref = result.get("final_loss"), (uninterrupted or {}).get("final_loss")
    dloss = abs(loss - ref) if loss is not None and ref is not None else None
    checks = {"stop checkpoint after the signal's step": stop is not None and stop >= stop_after_step,
              "resumed from the newest complete checkpoint": stop is not None and result.get("resumed_from") == stop
              and newest_then == stop, "the log says where it resumed": log_says,
              "one requeue": restarts == 1, "reached the last step": result.get("final_step") == steps,
              "same final loss as uninterrupted": ref is None or (dloss is not None and dloss <= rtol * abs(ref))}
    return {"resume_ok": all(checks.values()), "checks": checks, "stop_checkpoint": stop, "checkpoints": list(marks),
            "resumed_from": result.get("resumed_from"), "final_step": result.get("final_step"), "restarts": restarts,
            "final_loss": loss, "uninterrupted_final_loss": ref, "abs_loss_diff": dloss}


def requeue_row(r: Optional[dict], k: int, steps: int) -> List[str]:
    if not r:
        return ["requeue-resume (hf)", "-", "-", "-", "-", "-", "not run"]
    failed = [c for c, ok in (r.get("checks") or {}).items() if not ok]
    d = r.get("abs_loss_diff")
    note = (f"stop after step {k} -> ckpt {r.get('stop_checkpoint')}, resumed from {r.get('resumed_from')}, "
            f"step {r.get('final_step')}/{steps}, restarts {r.get('restarts')}"
            + (f", |dloss| {d:.2e}" if d is not None else ""))
    verdict = "ok" if r.get("ok") else "FAIL" + (f" ({'; '.join(failed)})" if failed else f" (rc {r.get('rc')})")
    return ["requeue-resume (hf)", "-", "-", "-", "-", "-", f"{verdict}: {note}"]


# -- main -------------------------------------------------------------------------------------------------
def default_stage_python(mode: str) -> str:
    if os.environ.get("LAUNCHER_GPU_PYTHON"):
        return os.environ["LAUNCHER_GPU_PYTHON"]
    cpu_env = ROOT / ".envs" / "cpu" / "bin" / "python"
    if mode == "cpu" and cpu_env.exists():
        return str(cpu_env)
    return shutil.which("python3") or "python3"


def run_checks(r: Runner, only: Sequence[str]) -> List[List[str]]:
    """Prepare, then each check with its baseline; returns the table's rows (r.report holds the rest)."""
    rows, params = [], None
    r.sizes_file.write_text(json.dumps(r.sizes, indent=1))
    r.prepared = r.report["prepared"] = r.helper("prepare", str(r.work / "data"), str(r.sizes_file))
    r.report["versions"] = r.prepared.pop("versions")
    r.say(f"versions: {json.dumps(r.report['versions'])}")
    if r.sizes["cuda"] and not r.report["versions"].get("cuda"):
        raise RuntimeError(f"torch in {r.stage_python} sees no GPU (a machine without one: --cpu)")
    params = active_params(r.sizes["model"], r.prepared["vocab"])
    r.report["active_params"] = params
    r.say(f"prepared in {r.prepared['seconds']} s: {r.prepared['tokens']:,} tokens, vocab {r.prepared['vocab']}, "
          f"{params:,} active parameters")
    for name, label in (("hf", "hf backend (pretrain)"), ("sft", "TRL SFT (align)")):
        if name not in only:
            continue
        direct = guarded(r, f"{name}-direct", lambda n=name: r.helper("direct", str(r.sizes_file), n))
        r.say(f"{name} direct: {direct.get('tokens_per_s')} tokens/s")
        t0 = time.time()
        res = guarded(r, name, getattr(r, f"check_{name}"))
        res["wall_s"] = round(time.time() - t0, 1)
        r.report[name], r.report[f"{name}-direct"] = res, direct
        status = "ok" if res.get("ok") else f"FAIL ({res.get('error') or 'rc %s' % res.get('rc')}; {where(r, name, res)})"
        r.say(f"{name} through the launcher: {status}, {(res.get('result') or {}).get('tokens_per_s')} tokens/s, "
              f"{res['wall_s']} s wall")
        rows.append(speed_row(label, res.get("result"), direct, params, r.peak, status))
    if "requeue" in only:
        res = guarded(r, "requeue", lambda: r.check_requeue((r.report.get("hf") or {}).get("result")))
        r.report["requeue"] = res
        rows.append(requeue_row(res, r.sizes["requeue"]["stop_after"], r.sizes["hf"]["steps"]))
        r.say(f"requeue: {rows[-1][-1]}")
    if "quantize" in only:
        res = guarded(r, "quantize", r.check_quantize) if r.sizes.get("quantize") else \
            {"ok": True, "skipped": "bnb needs a GPU (--cpu)"}
        r.report["quantize"] = res
        rows.append(quantize_row(res))
        r.say(f"quantize: {rows[-1][-1]}")
    return rows


def quantize_row(res: dict) -> List[str]:
    """The quantize check's row: sizes in the rate columns, bits per byte in the MFU ones."""
    if res.get("skipped"):
        return ["quantize bnb", "-", "-", "-", "-", "-", f"ok (skipped: {res['skipped']})"]
    q = (res.get("result") or {}).get("quantization") or {}
    b = q.get("bits_per_byte") or {}
    status = "ok" if res.get("ok") else f"FAIL ({res.get('error') or 'rc %s' % res.get('rc')})"
    mb = lambda v: "-" if v is None else f"{v:,.0f} MB"  # noqa: E731
    bpb = lambda v: "-" if v is None else f"{v:.4f} bpb"  # noqa: E731
    return [f"quantize bnb {q.get('type', '')}".strip(), mb(q.get("size_mb")), mb(q.get("original_size_mb")),
            fmt_ratio(q.get("size_mb"), q.get("original_size_mb")), bpb(b.get("quantized")), bpb(b.get("original")),
            status + (f"; bpb {b['relative']:+.2%}" if b.get("relative") is not None else "")]


def save_report(report: dict, work: Path, out: Path) -> None:
    """<out>/gpu-check.json, and <out>/logs.tar.gz: the launcher's output and the task logs of every run
    (files of at most 5 MB; no checkpoints). Two files: a device call brings back at most eight."""
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str))
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for p in sorted((work / "runs").rglob("*")) if (work / "runs").exists() else []:
            if p.is_file() and not {"ckpt", "code", "model"} & set(p.parts) and p.suffix in (".log", ".out", ".err", ".txt", ".json") \
                    and p.stat().st_size <= 5_000_000:
                tar.add(p, arcname=str(p.relative_to(work)))


def where(r: Runner, name: str, res: dict) -> str:
    """Why a check failed, in a line: the last line of the task's failure marker (jobs/task.py
    write_failure), else its run directory, else the launcher's last output line."""
    if res.get("run_dir") not in (None, "None"):
        for f in sorted(Path(res["run_dir"]).glob("stages/*/markers/*/*.failed")):
            error = (json.loads(f.read_text()).get("error") or "").strip().splitlines()
            if error:
                return f"task: {error[-1][-200:]}"
        return f"see {res['run_dir']}"
    log = r.work / "runs" / name / "launcher.log"
    lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
    return f"launcher: {lines[-1][-160:]}" if lines else "no launcher output"


def guarded(r: Runner, what: str, fn) -> dict:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - one failing check must not hide the others' numbers
        r.say(f"{what} failed: {type(e).__name__}: {e}")
        return {"ok": False, "error": f"{type(e).__name__}: {str(e)[-300:]}"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="tiny sizes, float32, on the CPU (no GPU needed)")
    ap.add_argument("--python", help="the stages' interpreter (default: $LAUNCHER_GPU_PYTHON, else python3; "
                                     "--cpu: .envs/cpu/bin/python when built)")
    ap.add_argument("--out", help="folder for gpu-check.json and logs.tar.gz (default: $OUT, else <work>-report)")
    ap.add_argument("--work", help="scratch folder for data, runs and checkpoints (default: a new one under "
                                   "$TMPDIR; several GB on a GPU)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder after a run where every check passed")
    ap.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help=f"the MFU denominator per GPU (default {PEAK_TFLOPS:g}; none in --cpu mode)")
    a = ap.parse_args(argv)
    mode = "cpu" if a.cpu else "gpu"
    only = [c.strip() for c in a.only.split(",") if c.strip()]
    if set(only) - set(CHECKS):
        ap.error(f"--only: unknown check(s) {', '.join(sorted(set(only) - set(CHECKS)))} ({', '.join(CHECKS)})")
    if a.work:
        Path(a.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"gpu-check-{mode}-", dir=a.work))
    out = Path(a.out or os.environ.get("OUT") or work.with_name(work.name + "-report"))
    out.mkdir(parents=True, exist_ok=True)
    peak = a.peak_tflops if a.peak_tflops is not None else (None if a.cpu else PEAK_TFLOPS)
    r = Runner(mode, work, a.python or default_stage_python(mode), sys.executable, peak)
    t0 = time.time()
    r.say(f"mode {mode}, stages in {r.stage_python}, work in {work}")
    try:
        rows = run_checks(r, only)
    except Exception as e:  # noqa: BLE001 - the preparation failed: say why, still print a table
        r.say(f"preparation failed: {type(e).__name__}: {e}")
        rows = [[c, "-", "-", "-", "-", "-", f"not run: preparation failed ({type(e).__name__})"] for c in only]
    r.report["seconds"] = round(time.time() - t0, 1)
    r.report["rows"] = rows
    save_report(r.report, work, out)
    v = r.report.get("versions") or {}
    print(f"\ngpu-check ({mode}): {v.get('gpu') or 'cpu'}, torch {v.get('torch')}, transformers {v.get('transformers')}, "
          f"trl {v.get('trl')}; model {r.report.get('active_params') or 0:,} active params; "
          f"MFU = 6 x params x tokens/s / {fmt_rate(peak) if peak else '-'} TFLOP/s; {r.report['seconds']} s; "
          f"details in {out / 'gpu-check.json'}; work folder {work}\n")
    print(render_table(HEADERS, rows), flush=True)
    ok = all(row[-1].startswith("ok") for row in rows) and len(rows) == len(only)
    if ok and not a.keep:  # data, runs, checkpoints; a failed run's stay for a look
        deadline = time.time() + 30  # a run's local scheduler writes its state once more as it exits
        while processes_naming(work, DRIVER_MODULE) and time.time() < deadline:
            time.sleep(0.2)
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
