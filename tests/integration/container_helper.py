"""User code for the container tests (tests/integration/test_containers.py): a reducer that also
records where it ran (interpreter, the image's marker file, the hub cache, Slurm binaries)."""
import json
import os
import platform
import sys

from jobs.demo import smoke


def reduce_and_probe(ctx):
    result = smoke.reduce(ctx)
    cache = os.environ.get("HF_HUB_CACHE", "")
    probe = {
        "executable": sys.executable, "version": list(sys.version_info[:3]), "node": platform.node(),
        "image_marker": open("/etc/launcher-dev-image").read() if os.path.exists("/etc/launcher-dev-image") else None,
        "slurmd_binary": os.path.exists("/usr/sbin/slurmd"), "cwd": os.getcwd(),
        "hub_cache": sorted(os.listdir(cache)) if cache and os.path.isdir(cache) else None,
    }
    (ctx.output_dir / "probe.json").write_text(json.dumps(probe) + "\n")
    return {**result, "probe": probe}
