"""The run directory: the one contract both sides share. Standard library only (and jobs/runtime/jsonl.py).

<run_dir>/
  run.json                  what was launched: id, overrides, sweep points, cluster, code version,
                            accounting (false: the cluster has none; status asks squeue only)
  config/point-<p>.yaml     resolved config of each sweep point
  plan.json                 the plan: stages, hashes, dependencies, resources
  submissions.jsonl         ledger of sbatch calls (login node only, append-only): one line per queued
                            job (a job a failed or unreadable sbatch queued anyway too, found_by squeue),
                            and one per rolled-back submission {rolled_back: [job ids], error}
  submission-failed.json    only when the launch failed before anything stayed queued: not a run then
                            (`latest` and `launcher runs` skip it; a resume that submits it removes it)
  bad-nodes/<node>.json     nodes a health check found bad: every later submission of the run excludes them
  stages/<stage>/
    spec.json               what a task needs to run (written at plan time)
    scripts/<sub>-<chunk>.sbatch
    logs/                   stdout/stderr per array task
    markers/<hash>/<task>.done    completion marker, written atomically by the task itself; the
                                  stage's config hash in the path keeps markers of another config
                                  from counting, and one listdir gives a stage's completed tasks
    markers/<hash>/<task>.failed  last failure (best effort: a SIGKILLed task leaves none)
    markers/<hash>/<task>.running-<jobid>_<index>  while the task works (status: accounting lags);
                                  {restarts, started, host} of the attempt
    out/<point>/<task>/     task output, renamed into place only when the task succeeded; a point
                            whose content key an earlier point has (spec.json "shared_points") has
                            none: its readers use the computing point's (point_of); a point
                            another run computed ("cached_outputs") is read there (located)
    ckpt/<task>/            task checkpoint state, survives requeues (kind=pretrain: the
                            trainer's checkpoints: hf checkpoint-<N>/, nanotron <step>/ + latest.txt)
    nanotron/<point>/       kind=pretrain, backend nanotron: config.yaml, tokenizer/
    accelerate/<point>.yaml kind=align: accelerate's launch config (rendered at submission)
    progress/<task>.json    a running training/alignment task's live progress (jobs/runtime/progress.py)
    health/<job>/<node>.json  the node health check (jobs/runtime/health.py): each node's report, and
                            decision.json by the first node; health/<task>.requeues: requeues for bad nodes
    endpoints/<point>.json  kind=serve: host, port, model once the server answers; `stopped` when it ends
    datatrove/<hash>/<point>/     kind=preprocess (datatrove) stages, one folder per config:
      output/                     what the stage writes, one file set per rank ({output})
      removed/<i>-<Block>/        documents block i (a filter) removed ({removed})
      logs/                       datatrove's logging_dir: completions/<rank>, stats/<rank>.json, logs/
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from jobs.runtime import jsonl


# Folder placeholders in the string arguments of datatrove blocks, filled in on the compute node:
# {input} (the one parent's output), {input:<stage>}, {output}, {removed}, {run}.
PLACEHOLDER = re.compile(r"\{(input|output|removed|run)(?::([A-Za-z0-9_.-]+))?\}")


def map_strings(node: Any, fn) -> Any:
    """node with fn applied to every string inside it (dicts and lists are rebuilt, not changed)."""
    if isinstance(node, str):
        return fn(node)
    if isinstance(node, dict):
        return {k: map_strings(v, fn) for k, v in node.items()}
    if isinstance(node, list):
        return [map_strings(v, fn) for v in node]
    return node


def variable_part(stage: str) -> str:
    """A stage name as it appears in variable names: upper case, every other character '_'
    ("tok-2.b" -> "TOK_2_B"). Different stages may meet here (prep/Prep, a.b/a_b): the plan refuses
    such pairs (launcher/plan/model.py _check_collisions)."""
    return "".join(ch if ch.isalnum() else "_" for ch in stage.upper())


def input_variable(stage: str) -> str:
    """The variable a child task finds a parent stage's output folder in."""
    return "LAUNCHER_INPUT_" + variable_part(stage)


def endpoint_variables(stage: str) -> tuple[str, str]:
    """The variables a client of a serve stage finds its endpoint in: (base URL, model name)."""
    base = "LAUNCHER_ENDPOINT_" + variable_part(stage)
    return base, base + "_MODEL"


def point_of(spec: dict, stage: str, point: int) -> int:
    """The sweep point whose task computes `stage`'s output for `point`: itself, unless the plan found
    the two points' content keys equal (spec "shared_points", launcher/plan/keys.py), then the first such."""
    shared = (spec.get("shared_points") or {}).get(stage)
    return shared[point] if shared else point


def located(spec: dict, stage: str, point: int) -> tuple[Path, str | None, int]:
    """Where `stage`'s output for `point` is: (run dir, stage hash there, point there). This run's,
    at the point that computes it (point_of), unless another run computed it (spec "cached_outputs",
    launcher/run/cache.py: read it there, never write it)."""
    point = point_of(spec, stage, point)
    source = ((spec.get("cached_outputs") or {}).get(stage) or {}).get(str(point))
    if source:
        return Path(source["run"]), source["hash"], int(source["point"])
    return Path(spec["run_dir"]), (spec.get("stage_hashes") or {}).get(stage), point


class Folders:
    """The run folders a stage's config may name through placeholders, for one sweep point.
    spec: a stage spec (run_dir, stage, parents, stage_hashes)."""

    def __init__(self, spec: dict, point: int):
        self.spec, self.point = spec, point
        self.run_dir = Path(spec["run_dir"])

    def of(self, stage: str, part: str) -> Path:
        where = (self.spec.get("stage_outputs") or {}).get(stage, "datatrove")
        run_dir, stage_hash, point = located(self.spec, stage, self.point)  # shared or cached: where it is
        if where == "datatrove" or part != "output":
            return datatrove_dir(run_dir, stage, stage_hash or self.spec["stage_hashes"][stage], point, part)
        # other kinds: the task's output folder (one task per point), or the point's (several)
        return output_dir(run_dir, stage, point, 0 if where == "task" else None)

    def fill(self, node: Any) -> Any:
        return map_strings(node, lambda x: PLACEHOLDER.sub(lambda m: str(self._folder(*m.groups())), x))

    def _folder(self, what: str, ref: str | None) -> Path:
        if what == "run":
            return self.run_dir
        if what == "input":
            return self.of(ref or self.spec["parents"][0], "output")
        return self.of(self.spec["stage"], "output" if what == "output" else "removed")


def stage_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "stages" / stage


def markers_dir(run_dir: Path, stage: str, stage_hash: str) -> Path:
    return stage_dir(run_dir, stage) / "markers" / stage_hash


def marker_path(run_dir: Path, stage: str, stage_hash: str, task: int, suffix: str = "done") -> Path:
    return markers_dir(run_dir, stage, stage_hash) / f"{task}.{suffix}"


class Markers:
    """What one listing of a stage's marker folder says: done (set of tasks), failed (set of tasks that
    left a failure marker) and running ({task: "<jobid>_<index>"})."""

    def __init__(self, done: set[int], failed: set[int], running: dict[int, str]):
        self.done, self.failed, self.running = done, failed, running


def markers(run_dir: Path, stage: str, stage_hash: str) -> Markers:
    """The markers of a stage's config, from one directory listing (no file reads)."""
    try:
        names = os.listdir(markers_dir(run_dir, stage, stage_hash))
    except FileNotFoundError:
        return Markers(set(), set(), {})
    done, failed, running = set(), set(), {}
    for n in names:
        head, dot, tail = n.partition(".")
        if not head.isdigit():
            continue
        if tail == "done":
            done.add(int(head))
        elif tail == "failed":
            failed.add(int(head))
        elif tail.startswith("running-"):
            running[int(head)] = tail[len("running-"):]
    return Markers(done, failed, running)


def output_dir(run_dir: Path, stage: str, point: int, task: int | None = None) -> Path:
    d = stage_dir(run_dir, stage) / "out" / str(point)
    return d if task is None else d / str(task)


def datatrove_dir(run_dir: Path, stage: str, stage_hash: str, point: int, part: str) -> Path:
    """part: output, removed or logs."""
    return stage_dir(run_dir, stage) / "datatrove" / stage_hash / str(point) / part


def checkpoint_dir(run_dir: Path, stage: str, task: int) -> Path:
    return stage_dir(run_dir, stage) / "ckpt" / str(task)


def accelerate_config(run_dir: Path, stage: str, point: int) -> Path:
    return stage_dir(run_dir, stage) / "accelerate" / f"{point}.yaml"


def progress_path(run_dir: Path, stage: str, task: int) -> Path:
    """A task's live progress file (jobs/runtime/progress.py says what is in it)."""
    return stage_dir(run_dir, stage) / "progress" / f"{task}.json"


def bad_node_file(run_dir: Path, node: str) -> Path:
    """A node a health check found bad (jobs/runtime/health.py): excluded from the run's later jobs."""
    return Path(run_dir) / "bad-nodes" / f"{node}.json"


def bad_nodes(run_dir: Path) -> dict:
    """{node: record} of the run's bad nodes (one listing, one small read each)."""
    folder = Path(run_dir) / "bad-nodes"
    out = {}
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):
            out[p.stem] = {}
    return out


def health_dir(run_dir: Path, stage: str) -> Path:
    """stages/<stage>/health/: per job the nodes' reports and the first node's decision; per task the
    requeues spent on bad nodes (<task>.requeues, not counted against requeue.max)."""
    return stage_dir(run_dir, stage) / "health"


def endpoint_file(run_dir: Path, stage: str, point: int) -> Path:
    return stage_dir(run_dir, stage) / "endpoints" / f"{point}.json"


def nanotron_dir(run_dir: Path, stage: str, point: int) -> Path:
    """kind=pretrain, backend nanotron: config.yaml (rendered at submission) and tokenizer/."""
    return stage_dir(run_dir, stage) / "nanotron" / str(point)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary name in the same directory, fsync, then rename: readers see the old
    file or the whole new one, never half of it (also on a shared filesystem)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`atomic_write_text` for bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any, compact: bool = False) -> None:
    """`obj` as JSON (keys sorted), written atomically: indented for a reader, or `compact` (no indent:
    json's C encoder, ~5x faster for a plan of thousands of sweep points; the same objects read back)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":")) if compact else \
        json.dumps(obj, indent=1, sort_keys=True)
    atomic_write_text(path, text + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


def task_ended(run_dir: Path, stage: str, stage_hash: str, task: int, backend: str, ask_slurm: bool = True) -> bool:
    """Another stage's task has a completion or failure marker, or (on Slurm, when ask_slurm) it is no
    longer in the queue: SIGKILLed or cancelled work leaves no marker."""
    import subprocess

    for suffix in ("done", "failed"):
        if marker_path(run_dir, stage, stage_hash, task, suffix).exists():
            return True
    if backend != "slurm" or not ask_slurm:
        return False
    # a launcher killed mid-append leaves a torn last line: skipped (that sbatch call is not recorded)
    jobs = jsonl.read(Path(run_dir) / "submissions.jsonl")
    mine = [j for j in jobs
            if isinstance(j, dict) and j.get("stage") == stage and task in j.get("tasks", ()) and "job_id" in j]
    if not mine:
        return False  # not submitted yet (a resume on its way)
    job = mine[-1]
    index = task - (job.get("offset") or 0)
    out = subprocess.run(["squeue", "-h", "-r", "-j", str(job["job_id"]), "-o", "%i"], capture_output=True, text=True,
                         timeout=60)
    if out.returncode != 0:
        # slurmctld no longer knows the job (purged, lost): it is not in the queue, so it has ended.
        # Any other failure: the controller did not answer; ask again next round.
        return "Invalid job id specified" in out.stderr + out.stdout
    # one id per line; a site's wrapper may print other lines around them
    return f"{job['job_id']}_{index}" not in {line.strip() for line in out.stdout.splitlines()}
