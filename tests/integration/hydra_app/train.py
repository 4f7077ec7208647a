"""A tiny Hydra app for the launcher's tests (tests/integration/test_hydra_app.py): counts to `steps`,
one step every `step_s`, keeping its count in its own output folder, and writes result.json there with
what Hydra's job runtime told it, and returns its count (kept by the launcher's Hydra callback). On its
first attempt it can send its task the stop signal at `force_requeue_at` (as Slurm would before a time
limit): the task forwards it, the app sees it through the launcher's `should_stop()`, saves its count
and exits non-zero, the task is requeued, and the next attempt continues from the count. With
`fail_once` it fails the first time it runs in its folder (`launcher resume` then reruns it)."""
import json
import os
import signal
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from jobs.runtime.stop_request import reason as stop_reason, should_stop


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> dict:
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    saved = out / "count.txt"
    start = int(saved.read_text()) if saved.exists() else 0
    should_stop()  # the launcher's stop API (jobs/runtime/stop_request.py): handlers installed now
    with open(out / "attempts.txt", "a") as f:
        f.write(f"{start}\n")
    if cfg.fail_once and not (out / "failed_once").exists():
        (out / "failed_once").touch()
        raise RuntimeError("failing once, as asked (fail_once=true)")
    i = start
    while i < cfg.steps:
        if should_stop():
            saved.write_text(str(i))
            print(f"stop request ({stop_reason()}) at {i}: saved", flush=True)
            sys.exit(99)
        time.sleep(cfg.step_s)
        i += 1
        if i == cfg.force_requeue_at and os.environ.get("LAUNCHER_RESTART_COUNT") == "0":
            os.kill(os.getppid(), getattr(signal, "SIG" + os.environ["LAUNCHER_STOP_SIGNAL"]))
    saved.write_text(str(i))
    data = Path(cfg.data_from).read_text().strip() if cfg.data_from else None
    (out / "result.json").write_text(json.dumps({
        "lr": cfg.lr, "model": cfg.model.name, "count": i, "data": data, "job_num": hc.job.num, "job_id": hc.job.id,
        "output_dir": hc.runtime.output_dir, "cwd": os.getcwd(), "app": os.path.abspath(__file__),
        "sweep_dir": hc.sweep.dir, "tag": cfg.tag, "config": OmegaConf.to_container(cfg, resolve=True)}))
    return {"count": i, "lr": cfg.lr}  # what a sweep's objective would be: kept by the launcher's callback


if __name__ == "__main__":
    main()
