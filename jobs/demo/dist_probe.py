"""A tiny torch.distributed program for testing the torchrun wrapper (jobs.adapters.torchrun).

Run by torchrun, once per rank: joins the process group from torchrun's environment (gloo, so it
works on CPU), all-reduces a tensor of ones (the result is the world size), and writes
$LAUNCHER_OUTPUT_DIR/rank-<RANK>.json (pipeline=distributed runs it as a cluster check).
PROBE_BACKEND=nccl uses the GPUs. Knobs, for tests:
  PROBE_FAIL_RANK=<r>      rank r exits with status 3 after the all-reduce (a dying rank)
  PROBE_WAIT_SIGNAL=USR2   after writing its file, wait for that signal; on it write
                           rank-<RANK>.stopped.json (a "checkpoint") and exit 0
Rank 0 writes the task's live progress file (jobs/runtime/progress.py): step 0 of 1 once the process
group is up, step 1 of 1 after the all-reduce (under a launcher task: $LAUNCHER_RUN_DIR is set).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path


def _progress(rank: int):
    """Rank 0's progress writer, started at step 0 of 1; None on other ranks or outside a launcher task."""
    if rank != 0 or not os.environ.get("LAUNCHER_RUN_DIR"):
        return None
    try:
        from jobs import layout
        from jobs.runtime.progress import StepProgress
    except ImportError:  # run as a script without the launcher's code on sys.path
        return None

    path = layout.progress_path(Path(os.environ["LAUNCHER_RUN_DIR"]), os.environ["LAUNCHER_STAGE"],
                                int(os.environ["LAUNCHER_TASK"]))
    progress = StepProgress(path, total_steps=1)
    progress.start(0)
    return progress


def main() -> int:
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    out = Path(os.environ["LAUNCHER_OUTPUT_DIR"])
    stopped = []
    wait_sig = os.environ.get("PROBE_WAIT_SIGNAL")
    if wait_sig:  # before init: the signal may come as soon as the files exist
        signal.signal(getattr(signal, "SIG" + wait_sig.removeprefix("SIG")), lambda s, f: stopped.append(s))

    backend = os.environ.get("PROBE_BACKEND", "gloo")  # nccl: checks the GPUs' interconnect too
    dist.init_process_group(backend)
    progress = _progress(rank)
    t = torch.ones(1)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        t = t.cuda()
    dist.all_reduce(t)
    record = {
        "rank": rank, "world_size": dist.get_world_size(), "local_rank": int(os.environ["LOCAL_RANK"]),
        "group_rank": int(os.environ.get("GROUP_RANK", -1)), "node": socket.gethostname(), "pid": os.getpid(),
        "master_addr": os.environ.get("MASTER_ADDR"), "master_port": os.environ.get("MASTER_PORT"),
        "all_reduce": t.item(),
    }
    if progress:
        progress.step(1, force=True)
    tmp = out / f".rank-{rank}.json.tmp"
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, out / f"rank-{rank}.json")
    # One write() of the whole line: under PYTHONUNBUFFERED print() writes the text and the newline apart,
    # and the ranks share one pipe, so two ranks' lines could interleave ("...=2.0probe rank 1...").
    # A write below PIPE_BUF (4 KiB) to a pipe is atomic (pipe(7)).
    sys.stdout.write(f"probe rank {rank}/{record['world_size']} on {record['node']}: "
                     f"all_reduce={record['all_reduce']}\n")
    sys.stdout.flush()

    if os.environ.get("PROBE_FAIL_RANK", "") == str(rank):
        print(f"probe rank {rank}: failing on purpose (PROBE_FAIL_RANK)", file=sys.stderr, flush=True)
        os._exit(3)  # no destroy_process_group: a rank that dies, not one that leaves politely
    if wait_sig:
        deadline = time.time() + 300
        while not stopped and time.time() < deadline:
            time.sleep(0.05)
        (out / f"rank-{rank}.stopped.json").write_text(json.dumps({"rank": rank, "signals": stopped}) + "\n")
        return 0 if stopped else 4
    dist.barrier()  # the other ranks wait here for a failing rank: torchrun must end them
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
