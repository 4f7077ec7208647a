"""Compute-node entry point: `python -m jobs.task <stage spec.json>`, once per array task.

Finds its task from the array index, skips work that already has a completion marker, runs the
stage kind, and on success moves its output into place and writes the marker, both atomically.
On the pre-timeout/preemption signal it lets the work checkpoint, then requeues only this array
task (`scontrol requeue <jobid>_<index>`, submitit's protocol) or, on the local backend, exits with
REQUEUE_EXIT for the local scheduler to restart it.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from . import hub, layout
from .context import Cancel, Requeue, TaskContext
from .targets import locate

REQUEUE_EXIT = 75  # EX_TEMPFAIL: "run me again" for the local backend
# stage kind -> the jobs module whose run(task) does it
MODULE_KINDS = {"pretrain": "pretrain", "convert": "convert", "evaluate": "evaluate", "align": "align",
                "serve": "serve", "fetch": "hub_fetch", "publish": "hub_publish"}
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


def log(msg: str) -> None:
    print(f"[launcher {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Task:
    def __init__(self, spec: dict):
        self.spec = spec
        self.run_dir = Path(spec["run_dir"])
        self.stage, self.hash = spec["stage"], spec["hash"]
        self.task = _env_int("LAUNCHER_TASK_OFFSET") + _env_int("SLURM_ARRAY_TASK_ID", "LAUNCHER_ARRAY_TASK_ID")
        self.point, self.index = divmod(self.task, spec["tasks_per_point"])
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
            inputs={p: layout.output_dir(self.run_dir, p, self.point) for p in spec["parents"]},
            restart_count=self.restarts)
        self.child: subprocess.Popen | None = None
        self.stop_file: Path | None = None  # set by kinds whose work learns of the stop signal from a file

    # -- signals -------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        sig = getattr(signal, "SIG" + self.spec["requeue"]["signal"])
        grace = max(1.0, self.spec["requeue"]["signal_delay_s"] - 5.0)

        def on_stop_signal(signum, frame):
            if self.ctx.stop_requested.is_set():
                return
            log(f"caught {signal.Signals(signum).name}: time limit or preemption ahead, checkpointing")
            self.ctx.stop_requested.set()
            if self.stop_file is not None:
                self.stop_file.touch()
            elif self.child is not None and self.child.poll() is None:
                os.killpg(self.child.pid, signum)  # the command gets the signal; it saves and exits
            # Work that ignores the request still gets requeued before Slurm kills it.
            # Daemon: a task that checkpointed and returned must not wait for this timer.
            timer = threading.Timer(grace, self._force_requeue)
            timer.daemon = True
            timer.start()

        signal.signal(sig, on_stop_signal)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        """After the stop signal, SIGTERM comes from our own `scontrol requeue` or the time limit: we
        are already on our way out. Without it, the job was cancelled (scancel): stop now, so work
        the operator cancelled never writes a completion marker (in-process kinds would otherwise
        run on until SIGKILL, KillWait seconds later)."""
        if self.ctx.stop_requested.is_set():
            log("SIGTERM received (job ending)")
            return
        log("SIGTERM received without a stop signal: cancelled; stopping without a completion marker")
        if self.child is not None and self.child.poll() is None:
            os.killpg(self.child.pid, signal.SIGTERM)
        os._exit(128 + signal.SIGTERM)

    def _force_requeue(self) -> None:
        log("work did not stop within the signal grace period; requeueing it as it stands")
        if self.child is not None and self.child.poll() is None:
            os.killpg(self.child.pid, signal.SIGKILL)
        os._exit(self.requeue())

    def requeue(self) -> int:
        """Requeue this array task only; return the exit code for this attempt."""
        limit = self.spec["requeue"]["max"]
        if self.restarts >= limit:
            self.write_failure(f"stopped by the time limit or preemption after {self.restarts} requeue(s) "
                               f"(requeue.max={limit})", exit_code=1)
            return 1
        shutil.rmtree(self.tmp_out, ignore_errors=True)
        if self.spec["backend"] == "local":
            log(f"requeue {self.restarts + 1}/{limit} (local scheduler)")
            return REQUEUE_EXIT
        self.ctx.stop_requested.set()  # the SIGTERM that the requeue brings is expected now
        if self.rank != 0:  # a multi-node task: the first node's runner requeues the whole job
            return REQUEUE_EXIT
        log(f"requeue {self.restarts + 1}/{limit}: scontrol requeue {self.job_id}")
        subprocess.run(["scontrol", "requeue", self.job_id], check=True, timeout=60)
        return REQUEUE_EXIT

    def cancel_self(self) -> int:
        if self.spec["backend"] == "local":
            return CANCEL_EXIT
        self.ctx.stop_requested.set()  # the SIGTERM scancel brings is expected
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

    # -- kinds ---------------------------------------------------------------------------------
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
        })
        for parent, path in c.inputs.items():  # stage "tok-2.b" -> LAUNCHER_INPUT_TOK_2_B
            env[layout.input_variable(parent)] = str(path)
        return env

    def run_command(self) -> None:
        self.child = subprocess.Popen(["bash", "-euo", "pipefail", "-c", self.payload["command"]],
                                      env=self.environment(), start_new_session=True)
        rc = self.child.wait()
        if rc != 0 and self.ctx.should_stop():
            raise Requeue()
        if rc != 0:
            raise RuntimeError(f"command exited with status {rc}")

    def export_environment(self) -> None:
        """In-process kinds: the LAUNCHER_* variables and the stage's env, into this process."""
        os.environ.update({k: v for k, v in self.environment().items() if k.startswith("LAUNCHER_")})
        os.environ.update({str(k): str(v) for k, v in (self.payload.get("env") or {}).items()})

    def run_python(self) -> None:
        fn = locate(self.payload["target"])
        self.export_environment()
        result = fn(self.ctx)
        if result is not None:
            self.write_result(result)

    def run_torchrun(self) -> None:
        from . import pretrain

        pretrain.run_torchrun(self)

    def run_module(self) -> None:
        """Kinds whose module's run(task) does the work: its result (if any) becomes result.json.
        Imported here, in the stage's environment: they may import the stage's library."""
        result = importlib.import_module(f".{MODULE_KINDS[self.spec['kind']]}", __package__).run(self)
        if result is not None:
            self.write_result(result)

    def write_result(self, result) -> None:
        (self.tmp_out / "result.json").write_text(json.dumps(result, indent=1, default=str) + "\n")

    def run_preprocess(self) -> None:
        from . import preprocess  # imports datatrove: only in the stage's environment

        self.export_environment()
        self.write_result(preprocess.run_rank(self.spec, self.payload, self.point, self.index,
                                              self.spec["tasks_per_point"]))

    # -- main ----------------------------------------------------------------------------------
    def load_secrets(self) -> None:
        """KEY=VALUE lines of the profile's secrets file, into this task's environment only."""
        path = self.spec.get("secrets_file")
        if path:
            for line in Path(path).read_text().splitlines():
                key, sep, value = line.strip().partition("=")
                if sep and key and not key.startswith("#"):
                    os.environ[key.strip()] = value.strip()

    def run(self) -> int:
        # A server's marker only says it served once: resubmitted (for a resumed client), it serves again.
        if layout.marker_path(self.run_dir, self.stage, self.hash, self.task).exists() and self.spec["kind"] != "serve":
            log(f"{self.stage}[{self.task}] already complete, nothing to do")
            return 0
        log(f"{self.stage}[{self.task}] point {self.point} task {self.index} job {self.job_id} "
            f"attempt {self.restarts + 1} on {socket.gethostname()}")
        log(f"python {sys.executable} (sys.prefix {sys.prefix}), code {Path(__file__).resolve().parent.parent}")
        started = time.time()
        self.install_signal_handlers()
        # Accounting learns of a start late; this file lets status see the task running now.
        running = layout.marker_path(self.run_dir, self.stage, self.hash, self.task, f"running-{self.job_id}")
        try:
            running.parent.mkdir(parents=True, exist_ok=True)
            running.touch()
        except OSError:
            pass
        try:
            self.load_secrets()
            self.ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.tmp_out, ignore_errors=True)
            self.tmp_out.mkdir(parents=True)
            if self.spec.get("hub_cache") and self.spec["kind"] not in ("fetch", "publish"):
                # hf://org/name@rev -> its snapshot in the shared hub cache (the fetch stage put it there)
                self.payload = hub.resolve(self.payload, self.spec["hub_cache"])
                self.ctx.params = self.payload.get("params") or {}
            if self.spec.get("servers"):  # a client of a server: its endpoint first
                from . import serve

                serve.wait_for_servers(self)
            {"command": self.run_command, "python": self.run_python, "preprocess": self.run_preprocess,
             "torchrun": self.run_torchrun, **{k: self.run_module for k in MODULE_KINDS}}[self.spec["kind"]]()
            if self.rank == 0:
                self.finish(started)
        except Requeue:
            running.unlink(missing_ok=True)
            return self.requeue()
        except Cancel as e:
            log(f"{self.stage}[{self.task}] cancelled: {e}")
            running.unlink(missing_ok=True)
            shutil.rmtree(self.tmp_out, ignore_errors=True)
            return self.cancel_self()
        except BaseException as e:  # noqa: BLE001 - every failure must leave a failure marker
            self.write_failure("".join(traceback.format_exception(e)), exit_code=1)
            shutil.rmtree(self.tmp_out, ignore_errors=True)
            log(f"{self.stage}[{self.task}] failed: {e}")
            running.unlink(missing_ok=True)
            if not isinstance(e, Exception):
                raise
            return 1
        running.unlink(missing_ok=True)
        log(f"{self.stage}[{self.task}] done in {time.time() - started:.1f} s")
        return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m jobs.task <stage spec.json>", file=sys.stderr)
        return 2
    return Task(json.loads(Path(argv[0]).read_text())).run()


if __name__ == "__main__":
    sys.exit(main())
