"""`python -m jobs.runtime.health_allreduce <host0> <port> <world> <rank> <mb> <timeout_s> [gloo|nccl]`: the
node health check's collective (jobs/runtime/health.py), one process per node in the stage's interpreter:
join a process group on host0:port, all-reduce a float32 buffer of <mb> MB three times (the first warms
up), print one JSON line {"ok", "gbps" (algorithm bandwidth of the best timed round: bytes / seconds / 1e9),
"sum_ok" (the sum is world x the buffer), "backend", "error"}. gloo (the default) reduces in host memory;
nccl (where the node has GPUs) reduces on the node's first visible GPU (cuda:0 under the job's
CUDA_VISIBLE_DEVICES), so the path tested is the one training uses: GPU, NVLink/PCIe, the NIC (NCCL's
choice). Imports torch: run only as a child process. The nccl path has not run here (no GPU so far:
docs/node-health.md)."""
from __future__ import annotations

import json
import sys
import time
from datetime import timedelta


def main(argv: list[str]) -> int:
    host, port, world, rank, mb, timeout = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), float(argv[4]), float(argv[5])
    backend = argv[6] if len(argv) > 6 else "gloo"
    try:
        import torch
        import torch.distributed as dist

        device = "cpu"
        if backend == "nccl":
            torch.cuda.set_device(0)  # before the group: NCCL binds its communicator to the current device
            device = "cuda"
        dist.init_process_group(backend, init_method=f"tcp://{host}:{port}", world_size=world, rank=rank,
                                timeout=timedelta(seconds=timeout))
        buf = torch.ones(max(1, int(mb * 2**20 / 4)), dtype=torch.float32, device=device)
        # a CUDA all_reduce returns when queued: wait for the GPU on both sides of the timed call
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        best = float("inf")
        for i in range(3):
            buf.fill_(1.0)
            sync()
            t0 = time.perf_counter()
            dist.all_reduce(buf)
            sync()
            if i:
                best = min(best, time.perf_counter() - t0)
        sum_ok = bool(torch.all(buf == float(world)))
        dist.destroy_process_group()
        print(json.dumps({"ok": sum_ok, "gbps": buf.numel() * 4 / best / 1e9, "sum_ok": sum_ok, "backend": backend}),
              flush=True)
        return 0
    except Exception as e:  # noqa: BLE001 - reported as this node's check result
        print(json.dumps({"ok": False, "gbps": None, "backend": backend, "error": f"{type(e).__name__}: {e}"[:500]}),
              flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
