"""torchrun script of the container test (tests/integration/test_containers.py): one gloo all-reduce,
then each rank writes where it ran (the image's marker file present, the host's slurmd absent)."""
import json
import os
import socket

import torch
import torch.distributed as dist


def main() -> None:
    dist.init_process_group("gloo")
    t = torch.ones(1)
    dist.all_reduce(t)
    rank = dist.get_rank()
    record = {"rank": rank, "world_size": dist.get_world_size(), "all_reduce": t.item(), "node": socket.gethostname(),
              "image_marker": os.path.exists("/etc/launcher-dev-image"),
              "slurmd_binary": os.path.exists("/usr/sbin/slurmd"), "torch": torch.__version__}
    with open(os.path.join(os.environ["LAUNCHER_OUTPUT_DIR"], f"rank-{rank}.json"), "w") as f:
        json.dump(record, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
