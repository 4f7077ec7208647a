"""The node health check before a multi-node or GPU task's work (the spec's "health_check", written by
launcher/plan/health.py): each node checks itself, reports into the run directory, and the first node
decides which nodes are bad. Standard library only (torch runs in jobs/runtime/health_allreduce.py).

Per node: the run directory takes an fsynced write; its filesystem has `min_free_gb` free; the stage's
interpreter imports `imports`; where nvidia-smi exists, it lists at least `gpus_per_node` GPUs and
none has uncorrected ECC errors (volatile count), and, for a stage with GPUs, no NVLink link is down
(`nvidia-smi nvlink --status`); on several nodes, an all-reduce across all of them (gloo on CPU, NCCL
on the GPUs where the stage has GPUs and the node nvidia-smi) sums right and reaches
`min_allreduce_gbps` (a collective property: when it fails or is slow and no node is bad by itself,
nobody can be blamed, and the check says so without excluding anyone).
Files: stages/<stage>/health/<job>-<attempt>/<node>.json (each node's report), decision.json (the
first node's decision)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from jobs import layout
from jobs.runtime import polling

_GPU_LINE = re.compile(r"^\s*GPU (\d+):")  # nvidia-smi nvlink --status
_LINK_LINE = re.compile(r"^\s*Link (\d+): (.*)$")
_LINK_UP = re.compile(r"^\s*[\d.]+\s*GB/s")


def writable(folder: Path) -> Optional[str]:
    """None when a file can be written, fsynced and removed in `folder`, else why not."""
    probe = Path(folder) / f".health-{os.getpid()}"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        return f"{folder} is not writable: {e.strerror or e}"
    return None


def free_space(folder: Path, min_gb: float) -> Optional[str]:
    """None when the filesystem of `folder` has at least min_gb GB (1e9 bytes) free for this user."""
    try:
        free = shutil.disk_usage(folder).free / 1e9
    except OSError as e:
        return f"cannot read the free space of {folder}: {e}"
    return None if free >= min_gb else f"{free:.2f} GB free under {folder}, below health_check.min_free_gb={min_gb:g}"


def imports(python: str, modules: List[str], timeout: float) -> Optional[str]:
    """None when `python -c "import m1, m2"` succeeds within `timeout` seconds, else its last error line."""
    if not modules:
        return None
    try:
        p = subprocess.run([python, "-c", "import " + ", ".join(modules)], capture_output=True, text=True,
                           timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{python} could not import {', '.join(modules)}: {e}"
    if p.returncode:
        last = (p.stderr.strip().splitlines() or ["exit " + str(p.returncode)])[-1]
        return f"{python} cannot import {', '.join(modules)}: {last}"
    return None


def gpu_problems(csv: str, want: int) -> List[str]:
    """Problems in `nvidia-smi --query-gpu=index,ecc.errors.uncorrected.volatile.total --format=csv,noheader`
    output: fewer than `want` GPUs, a GPU with uncorrected ECC errors ("[N/A]": ECC off, not counted)."""
    rows = [[c.strip() for c in line.split(",")] for line in csv.strip().splitlines() if line.strip()]
    out = [f"nvidia-smi lists {len(rows)} GPU(s), the stage asks for {want}"] if len(rows) < want else []
    for row in rows:
        if len(row) >= 2 and row[1].isdigit() and int(row[1]) > 0:
            out.append(f"GPU {row[0]}: {row[1]} uncorrected ECC error(s)")
    return out


def nvlink_problems(text: str) -> List[str]:
    """Links down in `nvidia-smi nvlink --status` output: a "GPU <i>: <name> (UUID: …)" line, then one
    "Link <l>: 26.562 GB/s" line per link that is up, "Link <l>: <inactive>" per link that is down
    (other lines, such as "Link 0, P2P is supported: true" or a status never seen, are neither). A node
    with no link up has no NVLink to check (a PCIe card lists nothing, or, with an unbridged NVLink
    port, only inactive links): []. Else every inactive link is a problem: on an NVLink board every
    link is cabled, and one down sends GPU-to-GPU traffic over PCIe or stops peer access."""
    up, down, gpu = 0, [], "?"
    for line in text.splitlines():
        if m := _GPU_LINE.match(line):
            gpu = m.group(1)
        elif m := _LINK_LINE.match(line):
            if "inactive" in m.group(2).lower():
                down.append(f"GPU {gpu}: NVLink {m.group(1)} is down (nvidia-smi nvlink --status: <inactive>)")
            elif _LINK_UP.match(m.group(2)):
                up += 1
    return down if up else []


def nvlink(smi: str, timeout: float) -> List[str]:
    """nvlink_problems() of this node; [] when the query fails (a driver or GPU without NVLink support
    answers with an error, and a node must not be excluded for that: the ECC query already showed the
    driver answers)."""
    try:
        p = subprocess.run([smi, "nvlink", "--status"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return nvlink_problems(p.stdout) if p.returncode == 0 else []


def gpus(want: int, timeout: float) -> List[str]:
    """gpu_problems() of this node's nvidia-smi, and for a stage with GPUs (`want` > 0) its NVLink links
    (nvlink()); [] without nvidia-smi (no GPU driver: nothing to check)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        p = subprocess.run([smi, "--query-gpu=index,ecc.errors.uncorrected.volatile.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"nvidia-smi failed: {e}"]
    if p.returncode:
        return [f"nvidia-smi failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()[-300:]}"]
    return gpu_problems(p.stdout, want) + (nvlink(smi, timeout) if want > 0 else [])


def local_problems(cfg: Dict[str, Any], run_dir: Path, python: str) -> List[str]:
    """Every check of this node alone (no collective): the problems found, [] when healthy."""
    found = []
    for folder in [Path(run_dir) / "stages", *map(Path, cfg.get("scratch_dirs") or [])]:
        found += [writable(folder), free_space(folder, float(cfg["min_free_gb"]))]
    found.append(imports(python, list(cfg.get("imports") or []), float(cfg["timeout_s"]) / 2))
    return [p for p in found if p] + gpus(int(cfg.get("gpus_per_node") or 0), 60)


def collective(python: str, hosts: List[str], rank: int, port: int, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """This node's part of the all-reduce across `hosts` (jobs/runtime/health_allreduce.py): NCCL on the
    GPUs for a stage with GPUs on a node with nvidia-smi, else gloo (the argv without a backend)."""
    timeout = float(cfg["timeout_s"]) / 2
    on_gpus = int(cfg.get("gpus_per_node") or 0) > 0 and shutil.which("nvidia-smi") is not None
    argv = [python, "-m", "jobs.runtime.health_allreduce", hosts[0], str(port), str(len(hosts)), str(rank),
            str(cfg["allreduce_mb"]), str(timeout)] + (["nccl"] if on_gpus else [])
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30)
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as e:
        return {"ok": False, "gbps": None, "error": f"the all-reduce did not report: {e}"}


def decide(hosts: List[str], reports: Dict[str, Optional[Dict[str, Any]]], floor_gbps: float) -> Dict[str, Any]:
    """The first node's decision from the nodes' reports ({host: {"problems": [...], "collective": {...}}}
    or None when it did not report in time). {"bad": {host: [reasons]}, "fault": why the check failed
    without a node to blame, or None}. A node is bad when it found problems or never reported."""
    bad = {}
    for h in hosts:
        rep = reports.get(h)
        if rep is None:
            bad[h] = ["no health report in time (node down, run directory unreachable, or stuck)"]
        elif rep.get("problems"):
            bad[h] = list(rep["problems"])
    fault = None
    if not bad and len(hosts) > 1:
        results = [reports[h].get("collective") or {} for h in hosts]
        failed = [r.get("error") or "wrong sum" for r in results if not r.get("ok")]
        slowest = min((r["gbps"] for r in results if r.get("gbps") is not None), default=None)
        if failed:
            fault = f"the all-reduce across {len(hosts)} nodes failed: {failed[0]}"
        elif slowest is not None and slowest < floor_gbps:
            fault = (f"the all-reduce across {len(hosts)} nodes reached {slowest:.3f} GB/s, below "
                     f"health_check.min_allreduce_gbps={floor_gbps:g}")
    return {"bad": bad, "fault": fault}


def run_check(cfg: Dict[str, Any], folder: Path, run_dir: Path, hosts: List[str], rank: int, port: int, python: str,
              log: Callable[[str], None]) -> Optional[Dict[str, Any]]:
    """This node's check: report into `folder` (the job attempt's health folder); the first node (rank 0)
    collects every report, decides, writes decision.json and returns the decision; the others wait for
    it and return it (None when none came within the timeout)."""
    started = time.time()
    problems = local_problems(cfg, run_dir, python)
    coll = collective(python, hosts, rank, port, cfg) if len(hosts) > 1 and not any("import" in p for p in problems) else None
    report = {"host": hosts[rank], "problems": problems, "collective": coll, "time": time.time()}
    log(f"health: {hosts[rank]}: {'; '.join(problems) if problems else 'ok'}"
        + (f"; all-reduce{' (nccl)' if coll.get('backend') == 'nccl' else ''} {coll.get('gbps') or 0:.3f} GB/s{'' if coll.get('ok') else ' FAILED: ' + str(coll.get('error'))}"
           if coll else ""))
    try:
        layout.atomic_write_json(folder / f"{hosts[rank]}.json", report)
    except OSError as e:
        log(f"health: cannot write this node's report: {e}")
    deadline = float(cfg["timeout_s"]) - (time.time() - started) + 10
    if rank != 0:
        return decision_of(folder, deadline)
    polling.until(lambda: all((folder / f"{h}.json").exists() for h in hosts[1:]), max(1.0, deadline), 0.5)
    reports = {h: layout.read_json(folder / f"{h}.json") if h != hosts[0] else report for h in hosts}
    decision = decide(hosts, reports, float(cfg["min_allreduce_gbps"]))
    try:
        layout.atomic_write_json(folder / "decision.json", decision)
    except OSError as e:
        log(f"health: cannot write the decision: {e}")
    return decision


def decision_of(folder: Path, timeout: float) -> Optional[Dict[str, Any]]:
    """The first node's decision, waited for up to `timeout` seconds (None if it did not come)."""
    path = folder / "decision.json"
    polling.until(path.exists, max(1.0, timeout), 0.5)
    try:
        return layout.read_json(path)
    except (OSError, ValueError):
        return None
