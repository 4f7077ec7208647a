"""The hang watchdog end to end on cluster=local: a 2-process gloo torchrun training (hang_train.py)
whose rank 1 stops joining the all-reduce in the first attempt. The task's runner sees the progress
file stall, dumps both ranks' Python stacks into the task log, then either kills the ranks for
torchrun to restart them in the job (watchdog.restarts=1) or kills the step and requeues the task
(restarts=0); either way the training then completes."""
import json
import re
from pathlib import Path

import pytest

from jobs import layout

SCRIPT = Path(__file__).resolve().parent / "hang_train.py"


def _run(cli, restarts: int) -> tuple[dict, str]:
    cli("run", "pipeline=distributed", "cluster=local", f"pipeline.stages.probe.launch.script={SCRIPT}",
        "pipeline.stages.probe.watchdog.stall_s=6", "pipeline.stages.probe.watchdog.startup_s=90",
        f"pipeline.stages.probe.watchdog.restarts={restarts}")
    status = cli.wait(timeout=240)
    logs = "\n".join(p.read_text(errors="replace") for p in sorted((cli.run_dir() / "stages" / "probe" / "logs").iterdir()))
    return status, logs


@pytest.mark.parametrize("restarts", [1, 0], ids=["in-job-restart", "requeue"])
def test_a_hung_rank_is_dumped_killed_and_the_training_completes(cli, restarts):
    status, logs = _run(cli, restarts)
    assert status["state"] == "COMPLETED", logs[-4000:]
    assert "watchdog: no progress for" in logs, logs[-4000:]
    # both ranks' stacks: rank 0 waits inside the all-reduce, rank 1 sleeps where it should join it
    dumped = re.search(r"watchdog: Python stacks of 2 process\(es\)", logs)
    assert dumped, logs[-4000:]
    after = logs[dumped.end():]
    assert re.search(r'File ".*hang_train\.py", line \d+ in sleep_instead_of_all_reduce', after), after[:4000]
    assert re.search(r'line \d+ in all_reduce', after), after[:4000]
    if restarts:
        assert "their launcher restarts them in this job" in logs and "the task requeues" not in logs
    else:
        assert "killing the step; the task requeues" in logs and "requeue 1/" in logs
    # all 6 steps of the last attempt: each all-reduces 1 + 2 and takes 0.1 of it
    weight = json.loads((layout.output_dir(cli.run_dir(), "probe", 0, 0) / "weight.txt").read_text())
    assert weight == pytest.approx([-0.1 * 3 * 6] * 4, abs=1e-5)
