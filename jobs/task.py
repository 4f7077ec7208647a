"""Compute-node entry point: `python -m jobs.task <stage spec.json>`, once per array task.

Finds its task from the array index, skips work that already has a completion marker, runs the
stage kind's runner (jobs/kinds: the module the spec names as "runner", else the built-in one of its
kind; it gets this Task as its TaskHandle, jobs/kinds/base.py), and on success moves its output into
place and writes the marker, both atomically.
On the pre-timeout/preemption signal it lets the work checkpoint, then requeues only this array
task (`scontrol requeue <jobid>_<index>`, submitit's protocol) or, on the local backend, exits with
REQUEUE_EXIT for the local scheduler to restart it.

A SIGTERM that comes without that signal means the scheduler is ending this attempt: on Slurm a
`scontrol requeue`, a scancel, a requeue-mode preemption (sent while the job is still RUNNING, its
GraceTime before the SIGKILL) or a plain `kill`; on the local backend `launcher cancel` or the time
limit. The work gets `requeue.term_grace_s` to checkpoint and stop (python stages see
ctx.should_stop(), commands and launchers get the SIGTERM forwarded, the others their stop file),
never writes a completion marker, and then the task asks Slurm for its job's state: one Slurm is
already ending (COMPLETING: its requeue or cancel) is left to Slurm; one still RUNNING (a preemption
with a grace time, which would otherwise be recorded FAILED, or a plain kill) requeues itself.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional

from jobs import layout
from jobs.adapters import hub_refs as hub
from jobs.context import Cancel, Requeue, TaskContext
from jobs.guards import REQUEUE_EXIT, BadNodes, NodeGuards
from jobs.runtime import allocation, endpoints, processes
from jobs.runtime.log import log

CANCEL_EXIT = 76  # "count me as cancelled" for the local backend (on Slurm the task scancels itself)


def _env_int(*names: str, default: int = 0) -> int:
    for n in names:
        if os.environ.get(n, "") != "":
            return int(os.environ[n])
    return default


def _job_id() -> str:
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("LAUNCHER_JOB_ID", "local")


def _where(spec: dict, stage: str, point: int) -> tuple[Path, str, int]:
    """(run dir, stage, point) of a parent's output folder: shared or cached (layout.located)."""
    run_dir, _, at = layout.located(spec, stage, point)
    return run_dir, stage, at


class Task(NodeGuards):
    """One array task: what jobs/kinds/base.py's TaskHandle describes, and the runner around the kind's
    work (markers, signals, requeue)."""

    def __init__(self, spec: dict):
        self.task = _env_int("LAUNCHER_TASK_OFFSET") + _env_int("SLURM_ARRAY_TASK_ID", "LAUNCHER_ARRAY_TASK_ID")
        self.point, self.index = divmod(self.task, spec["tasks_per_point"])
        if spec.get("point_resources"):  # a sweep that changes the resources: this point's (render.stage_spec)
            spec = {**spec, "resources": spec["point_resources"][self.point]}
        self.spec = spec
        self.run_dir = Path(spec["run_dir"])
        self.stage, self.hash = spec["stage"], spec["hash"]
        self.payload = spec["payloads"][self.point]
        self.rank = _env_int("SLURM_PROCID")
        self.restarts = _env_int("SLURM_RESTART_COUNT", "LAUNCHER_RESTART_COUNT")
        self.job_id = _job_id()
        self.final_out = layout.output_dir(self.run_dir, self.stage, self.point, self.index)
        self.tmp_out = self.final_out.parent / f".{self.index}.partial-{self.job_id}-{self.restarts}"
        self.ctx = TaskContext(
            run_dir=self.run_dir, run_id=spec["run_id"], stage=self.stage, task=self.task, index=self.index,
            num_tasks=spec["tasks_per_point"], point=self.point, params=self.payload.get("params") or {},
            output_dir=self.tmp_out, checkpoint_dir=layout.checkpoint_dir(self.run_dir, self.stage, self.task),
            inputs={p: layout.output_dir(*_where(spec, p, self.point)) for p in spec["parents"]},
            restart_count=self.restarts)
        self.child: subprocess.Popen | None = None  # the kind's child process tree (start_child)
        self.tee: threading.Thread | None = None  # copies a piped child's stdout (start_child on_line)
        self.stop_file: Path | None = None  # the child learns of the stop request from this file (stop="file")
        self.terminated = False  # a SIGTERM came that this task did not ask for (see _on_sigterm)
        self.ending = False  # this task asked Slurm to end this attempt (its requeue, its scancel)
        self.server_failure: Optional[str] = None  # a server this client uses failed while serving (why)
        self._deadlines: list[threading.Timer] = []

    # -- signals -------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        sig = self._stop_signal()
        grace = max(1.0, self.spec["requeue"]["signal_delay_s"] - 5.0)

        def on_stop_signal(signum, _frame):
            if self.ctx.stop_requested.is_set():
                return
            log(f"caught {signal.Signals(signum).name}: time limit or preemption ahead, checkpointing")
            self.request_stop(signum, grace)

        signal.signal(sig, on_stop_signal)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def request_stop(self, signum: int, grace: float) -> None:
        """Ask the work to checkpoint and stop: ctx.should_stop() turns true, the stop file (kinds whose
        work reads one) is created, or else the command/launcher child gets `signum` in its process
        group. Work that is still going `grace` seconds later is ended as it stands (_deadline)."""
        self.ctx.stop_requested.set()
        self._tell_child(signum)
        self._start_deadline(grace)

    def _tell_child(self, signum: int) -> None:
        if self.stop_file is not None:
            self.stop_file.touch()
        elif self.child is not None:
            processes.signal_tree(self.child, signum)  # the command gets the signal; it saves and exits

    def _start_deadline(self, grace: float) -> None:
        # Daemon: a task that checkpointed and returned must not wait for this timer.
        timer = threading.Timer(grace, self._deadline, args=(grace,))
        timer.daemon = True
        timer.start()
        self._deadlines.append(timer)

    def _cancel_deadlines(self) -> None:
        """The work has returned: what follows (markers, requeue) must not be cut short by a timer."""
        for timer in self._deadlines:
            timer.cancel()

    def _on_sigterm(self, signum, _frame) -> None:
        """SIGTERM. From our own `scontrol requeue` or scancel: expected, we are on our way out. Otherwise
        the scheduler is ending this attempt (see the module docstring): stop the work as the stop
        signal does, with `requeue.term_grace_s`; requeue() later decides whether to requeue. Slurm
        sends SIGTERM more than once (a preemption: at its start and again at the end of GraceTime)."""
        if self.ending:
            log("SIGTERM received (the requeue or cancel this task asked for)")
            return
        if self.terminated:
            return
        self.terminated = True
        grace = float(self.spec["requeue"]["term_grace_s"])
        if self.spec["backend"] == "local":
            who = "the local scheduler is ending this task (launcher cancel, or its time limit)"
        else:
            who = "Slurm is ending, requeueing or preempting this task, or it was killed"
        if self.ctx.stop_requested.is_set():  # the stop signal came first: the work is already saving
            log(f"SIGTERM: {who}; already checkpointing after the stop signal; ending within {grace:.0f} s, "
                f"no completion marker")
            self._start_deadline(grace)
            return
        log(f"SIGTERM without the stop signal: {who}; checkpointing within {grace:.0f} s, no completion marker")
        self.request_stop(signal.SIGTERM, grace)

    def _deadline(self, grace: float) -> None:
        log(f"work did not stop within {grace:.0f} s of the stop request; ending it as it stands")
        if self.child is not None and self.child.poll() is None:
            processes.kill(self.child)
        os._exit(self.requeue())

    def job_state(self) -> tuple[str, int] | None:
        """(JobState, Restarts) of this task's job, from one `scontrol -o show job`; None if Slurm did not
        answer. Read token by token: a site's wrapper may print banners around the record."""
        try:
            p = subprocess.run(["scontrol", "-o", "show", "job", self.job_id], capture_output=True, text=True,
                               timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            log(f"could not ask Slurm for the state of job {self.job_id}: {e}")
            return None
        state, restarts = re.search(r"\bJobState=(\S+)", p.stdout), re.search(r"\bRestarts=(\d+)", p.stdout)
        if p.returncode != 0 or not state:
            log(f"could not read the state of job {self.job_id} (scontrol exit {p.returncode}): "
                f"{(p.stderr or p.stdout).strip()[-300:]}")
            return None
        return state.group(1), int(restarts.group(1)) if restarts else self.restarts

    def after_sigterm(self) -> int | None:
        """The work stopped after a SIGTERM we did not ask for: the exit code when the scheduler is
        ending this attempt itself, None when this task must requeue itself.

        Measured on Slurm 22.05: `scontrol requeue` and scancel send SIGTERM with the job already
        COMPLETING (a requeue has raised Restarts), and Slurm requeues or cancels it whatever the exit
        code; `scontrol requeue` of such a job would succeed, bringing a cancelled job back. A
        requeue-mode preemption sends SIGTERM while the job is RUNNING and kills it after GraceTime;
        a job that exits by itself before that is recorded FAILED and not requeued."""
        exit_code = 128 + signal.SIGTERM
        if self.spec["backend"] == "local":
            log("stopped after SIGTERM; the local scheduler records the task as cancelled (launcher cancel) or "
                "failed (time limit); `launcher resume` continues from its checkpoint")
            return exit_code
        if self.rank != 0:
            return None  # requeue(): the first rank's runner decides for the whole job
        found = self.job_state()
        if found is None:
            log("stopped after SIGTERM; leaving this task to Slurm (no requeue from here)")
            return exit_code
        state, restarts = found
        if state == "RUNNING":
            log("the job is still RUNNING after SIGTERM (a preemption with a grace time, or a plain kill): "
                "requeueing it so that Slurm does not record it as failed")
            return None
        if restarts > self.restarts:
            log(f"Slurm is requeueing this task (job {state}, restart {restarts}): it continues from its "
                f"checkpoint; no requeue from here")
        else:
            log(f"Slurm is ending this task (job {state}: scancel, time limit or node failure): no requeue, "
                f"no completion marker")
        return exit_code

    def requeue(self) -> int:
        """End this attempt so that the task runs again, from its checkpoint; return the exit code.

        After a SIGTERM, after_sigterm() decides first whether Slurm is already doing it. Otherwise:
        on Slurm `scontrol requeue <jobid>_<index>` (this array task only, submitit's protocol; at most
        requeue.max times, then the task fails), by the first rank only: the other ranks of a
        multi-node task exit 0, so that `srun --kill-on-bad-exit` does not end the step before the
        first rank has requeued it (the requeue ends them). The local backend: REQUEUE_EXIT."""
        shutil.rmtree(self.tmp_out, ignore_errors=True)
        if self.terminated:
            code = self.after_sigterm()
            if code is not None:
                return code
        if self.rank != 0:
            log(f"rank {self.rank} stopped; the first rank's runner decides whether the job is requeued")
            return 0
        limit = self.spec["requeue"]["max"] + self.health_requeues()  # requeues for bad nodes do not count
        if self.restarts >= limit:
            self.write_failure(f"stopped by the time limit or preemption after {self.restarts} requeue(s) "
                               f"(requeue.max={limit})", exit_code=1)
            return 1
        if self.spec["backend"] == "local":
            log(f"requeue {self.restarts + 1}/{limit} (local scheduler)")
            return REQUEUE_EXIT
        self.ending = True  # the SIGTERM that the requeue brings is expected now
        if os.environ.get("LAUNCHER_IN_CONTAINER") == "1":  # no Slurm clients in the image
            log(f"requeue {self.restarts + 1}/{limit}: exit {REQUEUE_EXIT}, the batch script (on the host) "
                f"runs scontrol requeue {self.job_id}")
            return REQUEUE_EXIT
        log(f"requeue {self.restarts + 1}/{limit}: scontrol requeue {self.job_id}")
        subprocess.run(["scontrol", "requeue", self.job_id], check=True, timeout=60)
        return REQUEUE_EXIT

    def cancel_self(self) -> int:
        if self.spec["backend"] == "local":
            return CANCEL_EXIT
        self.ending = True  # the SIGTERM scancel brings is expected
        if os.environ.get("LAUNCHER_IN_CONTAINER") == "1":  # the batch script (on the host) scancels
            return CANCEL_EXIT
        subprocess.run(["scancel", self.job_id], check=False, timeout=60)
        time.sleep(30)  # Slurm ends the task; the exit code below is only seen if it did not
        return CANCEL_EXIT

    # -- markers -------------------------------------------------------------------------------
    def write_failure(self, error: str, exit_code: int) -> None:
        try:
            layout.atomic_write_json(layout.marker_path(self.run_dir, self.stage, self.hash, self.task, "failed"), {
                "task": self.task, "job_id": self.job_id, "restarts": self.restarts, "exit_code": exit_code,
                "host": socket.gethostname(), "time": time.time(), "error": error[-4000:]})
        except OSError as e:  # e.g. the filesystem is full: the log still says why
            log(f"could not write the failure marker: {e}")

    def finish(self, started: float) -> None:
        """Output first, marker last: a marker always means the output is whole."""
        if self.final_out.exists():
            old = self.final_out.with_name(f".{self.index}.old-{self.job_id}-{self.restarts}")
            os.replace(self.final_out, old)
            os.replace(self.tmp_out, self.final_out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp_out, self.final_out)
        layout.atomic_write_json(layout.marker_path(self.run_dir, self.stage, self.hash, self.task), {
            "task": self.task, "point": self.point, "index": self.index, "job_id": self.job_id,
            "restarts": self.restarts, "host": socket.gethostname(), "hash": self.hash,
            "started": started, "finished": time.time(), "seconds": round(time.time() - started, 3)})
        layout.marker_path(self.run_dir, self.stage, self.hash, self.task, "failed").unlink(missing_ok=True)

    # -- what a kind may use (jobs/kinds/base.py TaskHandle) -----------------------------------------
    def log(self, msg: str) -> None:
        log(msg)

    def environment(self) -> dict:
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in (self.payload.get("env") or {}).items()})
        c = self.ctx
        env.update({
            "LAUNCHER_RUN_DIR": str(c.run_dir), "LAUNCHER_RUN_ID": c.run_id, "LAUNCHER_STAGE": c.stage,
            "LAUNCHER_TASK": str(c.task), "LAUNCHER_TASK_INDEX": str(c.index),
            "LAUNCHER_NUM_TASKS": str(c.num_tasks), "LAUNCHER_POINT": str(c.point),
            "LAUNCHER_OUTPUT_DIR": str(c.output_dir), "LAUNCHER_CHECKPOINT_DIR": str(c.checkpoint_dir),
            "LAUNCHER_RESTART_COUNT": str(c.restart_count), "LAUNCHER_PARAMS": json.dumps(c.params),
            "LAUNCHER_STOP_SIGNAL": self.spec["requeue"]["signal"], "LAUNCHER_BACKEND": self.spec["backend"],
            "LAUNCHER_PROGRESS_FILE": str(layout.progress_path(c.run_dir, c.stage, c.task)),
        })
        for parent, path in c.inputs.items():  # stage "tok-2.b" -> LAUNCHER_INPUT_TOK_2_B
            env[layout.input_variable(parent)] = str(path)
        return env

    def export_environment(self) -> None:
        """In-process kinds: the LAUNCHER_* variables and the stage's env, into this process."""
        os.environ.update({k: v for k, v in self.environment().items() if k.startswith("LAUNCHER_")})
        os.environ.update({str(k): str(v) for k, v in (self.payload.get("env") or {}).items()})

    def write_result(self, result: Any) -> None:
        (self.tmp_out / "result.json").write_text(json.dumps(result, indent=1, default=str) + "\n")

    def start_child(self, argv: List[str], env: Mapping[str, str], stop: str = "signal",
                    stop_file: Optional[Path] = None, die_with_parent: bool = False,
                    cwd: Optional[Path] = None, on_line: Optional[Callable[[str], Any]] = None) -> subprocess.Popen:
        """Start the kind's child process tree in a session of its own (jobs/runtime/processes.py), in
        `cwd` (default: the task's own, the code snapshot). The stop request reaches it as a signal to
        its process group (stop="signal") or as `stop_file` (stop="file"; default <checkpoint_dir>/STOP;
        a file an earlier attempt left is removed first). At the deadline after a stop request its
        process group is SIGKILLed."""
        if stop not in ("signal", "file"):
            raise ValueError(f"stop must be 'signal' or 'file', not {stop!r}")
        if stop == "file":
            stop_file = Path(stop_file or self.ctx.checkpoint_dir / "STOP")
            stop_file.unlink(missing_ok=True)  # a request of an earlier attempt
        self.stop_file = stop_file if stop == "file" else None
        sys.stdout.flush()  # what this task printed comes before the child's lines
        piped = {"stdout": subprocess.PIPE} if on_line else {}
        self.child = processes.start(argv, env, die_with_parent=die_with_parent, cwd=cwd, **piped)
        self.tee = processes.tee_lines(self.child.stdout, on_line) if on_line else None
        if self.ctx.should_stop():  # the request came while it was starting: it has not seen it
            self._tell_child(signal.SIGTERM if self.terminated else self._stop_signal())
        return self.child

    def run_child(self, argv: List[str], env: Mapping[str, str], failure: str, stop: str = "signal",
                  stop_file: Optional[Path] = None, cwd: Optional[Path] = None,
                  on_line: Optional[Callable[[str], Any]] = None) -> None:
        """start_child() and wait: Requeue if it failed after a stop request, RuntimeError(failure with
        {rc} filled in) if it failed otherwise."""
        rc = self.start_child(argv, env, stop=stop, stop_file=stop_file, cwd=cwd, on_line=on_line).wait()
        if self.tee is not None:
            self.tee.join(timeout=10)  # the child's last lines (a final progress record) are read
        if rc != 0 and (self.ctx.should_stop() or self.stalled):
            raise Requeue()
        if rc != 0:
            raise RuntimeError(failure.format(rc=rc))

    def stop_child(self, grace: float, what: str = "the child") -> bool:
        """Stop the started child's session (SIGTERM, SIGKILL after `grace` s) and forget it; True when
        nothing of it is left."""
        child, self.child, self.stop_file = self.child, None, None
        return child is None or processes.stop(child, grace, log, what)

    def _stop_signal(self) -> int:
        return getattr(signal, "SIG" + self.spec["requeue"]["signal"])

    # -- main ----------------------------------------------------------------------------------
    def load_secrets(self) -> None:
        """KEY=VALUE lines of the profile's secrets file, into this task's environment only."""
        path = self.spec.get("secrets_file")
        if path:
            for line in Path(path).read_text().splitlines():
                key, sep, value = line.strip().partition("=")
                if sep and key and not key.startswith("#"):
                    os.environ[key.strip()] = value.strip()

    def load_runner(self) -> tuple[Any, Optional[Exception]]:
        """(the kind's runner module, None), or (None, why it does not import): jobs/kinds/__init__.py."""
        from jobs import kinds  # here: the login side imports this module for its exit codes

        try:
            return kinds.runner_for(self.spec), None
        except Exception as e:  # noqa: BLE001 - reported as this task's failure, with a marker
            return None, e

    def prepare(self, code: Path, runner: Any) -> None:
        """Before the work: the code snapshot check, secrets, folders, hub references, servers."""
        snapshot = self.spec.get("code_dir")
        if snapshot and code != Path(snapshot).resolve():
            raise RuntimeError(f"the jobs package was imported from {code}, not from the run's code snapshot "
                               f"{snapshot}: this task would run code other than what the run recorded")
        self.load_secrets()
        self.ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp_out, ignore_errors=True)
        self.tmp_out.mkdir(parents=True)
        if self.spec.get("hub_cache") and getattr(runner, "resolves_hub_references", True):
            # hf://org/name@rev -> its snapshot in the shared hub cache (the fetch stage put it there)
            self.payload = hub.resolve(self.payload, self.spec["hub_cache"])
            self.ctx.params = self.payload.get("params") or {}
        if self.spec.get("servers"):  # a client of a server: its endpoint first, then watched
            endpoints.wait_for_servers(self)
            signal.signal(signal.SIGINT, self._on_sigint)
            endpoints.watch_servers(self, self._server_failed)

    def _server_failed(self, why: str) -> None:
        """(The watcher thread) a server this client uses failed: its child is stopped, and SIGINT to
        this process interrupts the work (a blocking call too) with Cancel."""
        self.server_failure = why
        log(f"{self.stage}[{self.task}]: {why}")
        if self.child is not None:
            processes.signal_tree(self.child, signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)

    def _on_sigint(self, signum, _frame) -> None:
        if self.server_failure:
            raise Cancel(self.server_failure)
        raise KeyboardInterrupt

    def run(self) -> int:
        runner, unloadable = self.load_runner()
        # A kind that reruns when complete (a server: its marker only says it served once) runs again.
        if (layout.marker_path(self.run_dir, self.stage, self.hash, self.task).exists()
                and not getattr(runner, "reruns_when_complete", False)):
            log(f"{self.stage}[{self.task}] already complete, nothing to do")
            return 0
        log(f"{self.stage}[{self.task}] point {self.point} task {self.index} job {self.job_id} "
            f"attempt {self.restarts + 1} on {socket.gethostname()}")
        code = Path(__file__).resolve().parent.parent
        log(f"python {sys.executable} (sys.prefix {sys.prefix}), code {code}, working directory {os.getcwd()}")
        started = time.time()
        self.install_signal_handlers()
        # Accounting learns of a start late; this file lets status see the task running now, and
        # which attempt it is (sacct keeps no restart count; `status --json` reads it from here).
        running = layout.marker_path(self.run_dir, self.stage, self.hash, self.task, f"running-{self.job_id}")
        try:
            layout.atomic_write_json(running, {"restarts": self.restarts, "started": started,
                                               "host": socket.gethostname()})
        except OSError:
            pass
        try:
            if unloadable is not None:
                raise unloadable
            self.health_gate()
            self.prepare(code, runner)
            self.start_watchdog()
            try:
                result = runner.run(self)
                if result is not None:
                    self.write_result(result)
            finally:
                self._cancel_deadlines()
                if self.watchdog is not None:
                    self.watchdog.stop()
            if self.terminated:  # ended after a SIGTERM: its output is not trusted to be whole
                log(f"{self.stage}[{self.task}] returned after SIGTERM: no completion marker")
                raise Requeue()
            if self.rank == 0:
                self.finish(started)
        except Requeue:
            running.unlink(missing_ok=True)
            return self.requeue()
        except BadNodes as e:
            running.unlink(missing_ok=True)
            try:
                return self.requeue_without(e.nodes)
            except Exception as err:  # noqa: BLE001 - out of requeues for bad nodes: a failure
                return self.failed(err, running)
        except Cancel as e:
            return self.cancelled(e, running)
        except BaseException as e:  # noqa: BLE001 - every failure must leave a failure marker
            if why := self.server_failed_meanwhile(e):
                return self.cancelled(Cancel(why), running)
            return self.failed(e, running)
        running.unlink(missing_ok=True)
        log(f"{self.stage}[{self.task}] done in {time.time() - started:.1f} s")
        return 0

    def cancelled(self, e: Cancel, running: Path) -> int:
        """What it waited on failed: its child stopped, no marker, cancelled (jobs.context.Cancel)."""
        log(f"{self.stage}[{self.task}] cancelled: {e}")
        self.stop_child(10, what="the cancelled task's child")
        running.unlink(missing_ok=True)
        shutil.rmtree(self.tmp_out, ignore_errors=True)
        return self.cancel_self()

    def server_failed_meanwhile(self, e: BaseException) -> Optional[str]:
        """A client's work failed (a refused connection, a cut answer): why, when its server failed
        meanwhile (the watcher may not have seen it yet), else None."""
        if self.server_failure:
            return self.server_failure
        if not self.spec.get("servers") or not isinstance(e, Exception):
            return None
        return endpoints.server_failure(self, wait_s=endpoints.FAILURE_GRACE_S)

    def lost_peer_nodes(self) -> List[str]:
        """The other nodes of this multi-node Slurm allocation whose slurmd no longer answers ([] on one
        node, on the local backend, or when Slurm's configuration cannot be read)."""
        env = dict(os.environ)
        if self.spec.get("backend") == "local" or int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1) < 2:
            return []
        try:
            hosts = allocation.node_hosts(env)
        except RuntimeError:
            return []
        port = allocation.slurmd_port(env)
        me = hosts[allocation.node_rank(env)] if allocation.node_rank(env) < len(hosts) else None
        return allocation.unreachable_nodes([h for h in hosts if h != me], port) if port else []

    def failed(self, e: BaseException, running: Path) -> int:
        """The work raised e (called while it is handled): a failure marker, then the running marker goes,
        exit 1 (e re-raised if it is not an Exception); after a SIGTERM, counted as stopped instead."""
        if self.terminated and isinstance(e, Exception):
            # The scheduler is ending this attempt: a failure now is most likely its doing (a killed
            # child, a peer rank gone). Stopped, not failed: after_sigterm() decides what follows.
            log(f"{self.stage}[{self.task}] failed after SIGTERM, counted as stopped (no failure marker): "
                f"{type(e).__name__}: {e}")
            running.unlink(missing_ok=True)
            return self.requeue()
        lost = self.lost_peer_nodes() if isinstance(e, Exception) else []
        if lost:
            # A peer node died under the step (its ranks with it): not the work's failure. Slurm ends the
            # job NODE_FAIL once it notices and requeues it (--requeue); the next attempt resumes.
            log(f"{self.stage}[{self.task}] stopped: node(s) {', '.join(lost)} of the allocation no longer answer "
                f"({type(e).__name__}: {e}); no failure marker: Slurm requeues the job when it declares them down")
            running.unlink(missing_ok=True)
            shutil.rmtree(self.tmp_out, ignore_errors=True)
            return 0
        self.write_failure("".join(traceback.format_exception(e)), exit_code=1)
        shutil.rmtree(self.tmp_out, ignore_errors=True)
        log(f"{self.stage}[{self.task}] failed: {e}")
        running.unlink(missing_ok=True)
        if not isinstance(e, Exception):
            raise
        return 1


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m jobs.task <stage spec.json>", file=sys.stderr)
        return 2
    return Task(json.loads(Path(argv[0]).read_text())).run()


if __name__ == "__main__":
    sys.exit(main())
