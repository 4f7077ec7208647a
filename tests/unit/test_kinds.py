"""The node side's kind registry (jobs/kinds/__init__.py), its Runner protocol and the task handle
(jobs/kinds/base.py, implemented by jobs.task.Task): parity with the schema, dispatch through the
registry or a spec's own runner module, and what a kind may ask of its task."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobs import kinds, layout
from jobs.context import Requeue
from jobs.kinds.base import Runner
from jobs.runtime import polling
from jobs.task import Task

ROOT = Path(__file__).resolve().parents[2]


def test_the_node_registry_knows_every_kind_of_the_schema():
    """Parity: every kind the schema accepts (the login registry, launcher/kinds) runs on the node
    (BUILTIN) or is expanded by the plan into kinds that do (EXPANDED)."""
    from launcher import kinds as login_kinds

    assert kinds.names() == set(login_kinds.names())
    assert not set(kinds.BUILTIN) & set(kinds.EXPANDED)
    assert set(kinds.EXPANDED.values()) <= set(kinds.BUILTIN)


@pytest.mark.parametrize("name", sorted(kinds.BUILTIN))
def test_every_builtin_runner_is_a_module_of_its_own_with_the_protocol(name):
    module = kinds.runner_for({"kind": name})
    assert module.__name__ == f"jobs.kinds.{name}" and Path(module.__file__).parent == ROOT / "jobs" / "kinds"
    assert isinstance(module, Runner)
    assert isinstance(module.reruns_when_complete, bool) and isinstance(module.resolves_hub_references, bool)


def test_a_module_without_the_protocol_is_not_a_runner():
    assert not isinstance(json, Runner)


def test_an_unknown_kind_names_the_known_ones():
    with pytest.raises(LookupError, match="no runner for stage kind 'toy' .*command"):
        kinds.runner_for({"kind": "toy"})


# -- a task through the registry, in a real jobs.task process --------------------------------------
TOY = '''
import os
reruns_when_complete = {reruns}
resolves_hub_references = {resolves}


def run(task):
    task.log("toy: running")
    runs = task.ctx.checkpoint_dir / "runs"
    runs.write_text(str(int(runs.read_text()) + 1) if runs.exists() else "1")
    return {{"payload": task.payload, "stage": task.stage, "point": task.point, "job_id": task.job_id}}
'''


def spec(tmp_path: Path, **extra) -> dict:
    return {"run_dir": str(tmp_path / "run"), "run_id": "r", "stage": "s", "hash": "h", "kind": "toy",
            "tasks_per_point": 1, "points": 1, "payloads": [{"toy": {"model": "hf://org/m@main"}}], "parents": [],
            "backend": "local", "requeue": {"max": 1, "signal": "USR2", "signal_delay_s": 30, "term_grace_s": 5},
            **extra}


def run_task(tmp_path: Path, s: dict, reruns=False, resolves=True) -> subprocess.CompletedProcess:
    (tmp_path / "plugin").mkdir(exist_ok=True)
    (tmp_path / "plugin" / "toyrunner.py").write_text(TOY.format(reruns=reruns, resolves=resolves))
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(s))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LAUNCHER_"))}
    env.update(PYTHONPATH=f"{ROOT}:{tmp_path / 'plugin'}", LAUNCHER_ARRAY_TASK_ID="0", LAUNCHER_JOB_ID="7_0")
    return subprocess.run([sys.executable, "-m", "jobs.task", str(path)], env=env, capture_output=True, text=True,
                          timeout=60)


def result(s: dict) -> dict:
    return json.loads((layout.output_dir(Path(s["run_dir"]), "s", 0, 0) / "result.json").read_text())


def runs(s: dict) -> int:
    return int((layout.checkpoint_dir(Path(s["run_dir"]), "s", 0) / "runs").read_text())


def test_a_kind_from_a_plugin_runs_through_the_runner_its_spec_names(tmp_path):
    s = spec(tmp_path, runner="toyrunner")
    p = run_task(tmp_path, s)
    assert p.returncode == 0, p.stderr
    assert "toy: running" in p.stderr and layout.marker_path(Path(s["run_dir"]), "s", "h", 0).exists()
    assert result(s) == {"payload": {"toy": {"model": "hf://org/m@main"}}, "stage": "s", "point": 0, "job_id": "7_0"}
    p = run_task(tmp_path, s)  # complete: not run again
    assert p.returncode == 0 and "already complete, nothing to do" in p.stderr and runs(s) == 1


def test_a_kind_that_reruns_when_complete_runs_again(tmp_path):
    s = spec(tmp_path, runner="toyrunner")
    for _ in range(2):
        p = run_task(tmp_path, s, reruns=True)
        assert p.returncode == 0, p.stderr
    assert runs(s) == 2 and "already complete" not in p.stderr


def test_hub_references_are_resolved_unless_the_kind_keeps_them(tmp_path):
    cache = tmp_path / "hub"
    snap = cache / "models--org--m" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (cache / "models--org--m" / "refs").mkdir()
    (cache / "models--org--m" / "refs" / "main").write_text("abc")
    s = spec(tmp_path, runner="toyrunner", hub_cache=str(cache))
    assert run_task(tmp_path, s).returncode == 0
    assert result(s)["payload"] == {"toy": {"model": str(snap)}}
    s = spec(tmp_path / "keep", runner="toyrunner", hub_cache=str(cache))
    (tmp_path / "keep").mkdir()
    assert run_task(tmp_path / "keep", s, resolves=False).returncode == 0
    assert result(s)["payload"] == {"toy": {"model": "hf://org/m@main"}}


def test_a_kind_without_a_runner_fails_with_a_marker_that_says_so(tmp_path):
    s = spec(tmp_path)  # kind toy, no "runner"
    p = run_task(tmp_path, s)
    assert p.returncode == 1
    failure = json.loads(layout.marker_path(Path(s["run_dir"]), "s", "h", 0, "failed").read_text())
    assert "no runner for stage kind 'toy'" in failure["error"]


# -- the handle: child processes --------------------------------------------------------------------
def handle(tmp_path: Path, monkeypatch) -> Task:
    for k in ("SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "SLURM_RESTART_COUNT", "LAUNCHER_TASK_OFFSET"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LAUNCHER_ARRAY_TASK_ID", "0")
    t = Task(spec(tmp_path))
    t.ctx.checkpoint_dir.mkdir(parents=True)
    return t


WAITS_FOR_FILE = "import pathlib, sys, time\nwhile not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.02)\nsys.exit(3)"


def test_run_child_with_a_stop_file_requeues_once_the_child_stopped(tmp_path, monkeypatch):
    t = handle(tmp_path, monkeypatch)
    stop_file = t.ctx.checkpoint_dir / "STOP-0"
    stop_file.write_text("an earlier attempt's")
    t.ctx.stop_requested.set()  # the request came before the child started: it still learns of it
    with pytest.raises(Requeue):
        t.run_child([sys.executable, "-c", WAITS_FOR_FILE, str(stop_file)], os.environ, "exit {rc}", stop="file",
                    stop_file=stop_file)
    assert stop_file.exists() and t.child.returncode == 3


def test_run_child_forwards_the_stop_signal_to_the_group_and_fails_with_its_status(tmp_path, monkeypatch):
    t = handle(tmp_path, monkeypatch)
    with pytest.raises(RuntimeError, match="^child exited 4$"):
        t.run_child([sys.executable, "-c", "raise SystemExit(4)"], os.environ, "child exited {rc}")
    ready = tmp_path / "ready"
    script = ("import pathlib, signal, sys, time\nsignal.signal(signal.SIGUSR2, lambda *a: sys.exit(5))\n"
              f"pathlib.Path({str(ready)!r}).touch()\ntime.sleep(30)")

    def stop():  # what the stop signal does (request_stop), without its deadline, once the child listens
        polling.until(ready.exists, 20, 0.02)
        t.ctx.stop_requested.set()
        t._tell_child(signal.SIGUSR2)

    threading.Thread(target=stop, daemon=True).start()
    t0 = time.time()
    with pytest.raises(Requeue):  # it failed after the stop request: requeued, not failed
        t.run_child([sys.executable, "-c", script], os.environ, "exit {rc}")
    assert time.time() - t0 < 25 and t.child.returncode == 5


def test_start_and_stop_child_leave_nothing_of_its_session(tmp_path, monkeypatch):
    t = handle(tmp_path, monkeypatch)
    proc = t.start_child([sys.executable, "-c", "import time; time.sleep(60)"], os.environ, stop="file",
                         die_with_parent=True)
    assert t.stop_file == t.ctx.checkpoint_dir / "STOP"
    t.request_stop(signal.SIGUSR2, grace=30)
    t._cancel_deadlines()
    assert t.stop_file.exists() and proc.poll() is None  # told through the file, not signalled
    assert t.stop_child(5, "the server") and t.child is None and t.stop_file is None
    assert polling.until(lambda: proc.poll() is not None, 5, 0.05)
