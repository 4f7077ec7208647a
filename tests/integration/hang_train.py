"""A small 2-rank gloo training for the hang watchdog's test (tests/integration/test_watchdog.py), run by
torchrun as a kind=torchrun stage: each step all-reduces a gradient-like tensor into a weight, and
rank 0 writes the live progress file (jobs/runtime/progress.py). In the first attempt (no `hung-once`
file in the checkpoint folder) rank 1 stops at step HANG_AT and sleeps where it should join the
all-reduce, so rank 0 waits inside the collective: a hang the watchdog must see, dump and restart.
Later attempts (in-job restart or requeue) start from step 0 and finish."""
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from jobs.runtime.progress import ProgressWriter

STEPS, HANG_AT = int(os.environ.get("HANG_STEPS", "6")), int(os.environ.get("HANG_AT", "3"))


def sleep_instead_of_all_reduce(flag: Path) -> None:
    flag.touch()
    print(f"rank 1: step {HANG_AT}: sleeping instead of joining the all-reduce", flush=True)
    time.sleep(3600)


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    flag = Path(os.environ["LAUNCHER_CHECKPOINT_DIR"]) / "hung-once"
    progress = ProgressWriter(Path(os.environ["LAUNCHER_PROGRESS_FILE"]), min_interval_s=0.2) if rank == 0 else None
    weight = torch.zeros(4)
    for step in range(STEPS):
        if step == HANG_AT and rank == 1 and not flag.exists():
            sleep_instead_of_all_reduce(flag)
        grad = torch.full((4,), float(rank + 1))
        dist.all_reduce(grad)
        weight -= 0.1 * grad
        if progress:
            progress.update(step=step + 1, total_steps=STEPS, loss=float(weight.abs().sum()), force=step + 1 == STEPS)
        time.sleep(0.3)
    if rank == 0:
        Path(os.environ["LAUNCHER_OUTPUT_DIR"], "weight.txt").write_text(f"{weight.tolist()}\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
