"""`python -m jobs.runtime.health_allreduce <host0> <port> <world> <rank> <mb> <timeout_s>`: the node
health check's collective (jobs/runtime/health.py), one process per node in the stage's interpreter:
join a gloo group on host0:port, all-reduce a float32 buffer of <mb> MB three times (the first warms
up), print one JSON line {"ok", "gbps" (algorithm bandwidth of the best timed round: bytes / seconds / 1e9),
"sum_ok" (the sum is world x the buffer), "error"}. Imports torch: run only as a child process."""
from __future__ import annotations

import json
import sys
import time
from datetime import timedelta


def main(argv: list[str]) -> int:
    host, port, world, rank, mb, timeout = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), float(argv[4]), float(argv[5])
    try:
        import torch
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://{host}:{port}", world_size=world, rank=rank,
                                timeout=timedelta(seconds=timeout))
        buf = torch.ones(max(1, int(mb * 2**20 / 4)), dtype=torch.float32)
        best = float("inf")
        for i in range(3):
            buf.fill_(1.0)
            t0 = time.perf_counter()
            dist.all_reduce(buf)
            if i:
                best = min(best, time.perf_counter() - t0)
        sum_ok = bool(torch.all(buf == float(world)))
        dist.destroy_process_group()
        print(json.dumps({"ok": sum_ok, "gbps": buf.numel() * 4 / best / 1e9, "sum_ok": sum_ok}), flush=True)
        return 0
    except Exception as e:  # noqa: BLE001 - reported as this node's check result
        print(json.dumps({"ok": False, "gbps": None, "error": f"{type(e).__name__}: {e}"[:500]}), flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
