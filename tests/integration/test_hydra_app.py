"""A user's Hydra app (tests/integration/hydra_app: train.py and its conf/) end to end as a
`kind: hydra_app` stage after a command stage (conf/pipeline/hydra_app.yaml). Unit tests:
tests/unit/test_hydra_app_plan.py."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from jobs import layout

APP_DIR = Path(__file__).resolve().parent / "hydra_app"


def test_a_hydra_app_stage_after_a_command_stage_on_local(cli):
    cli("run", "-m", "pipeline=hydra_app", "cluster=local", f"pipeline.vars.app_dir={APP_DIR}",
        "pipeline.vars.lr=0.1,0.01", "pipeline.vars.model=b", "wait=true", "poll_s=0.3")
    run_dir = cli.run_dir()
    assert cli.status()["state"] == "COMPLETED"
    for point, lr in enumerate(["0.1", "0.01"]):
        out = layout.output_dir(run_dir, "train", point)  # the app's Hydra output folder: the point's
        assert yaml.safe_load((out / ".hydra" / "overrides.yaml").read_text()) == [
            f"lr={lr}", "model=b", "data_from=${oc.env:LAUNCHER_INPUT_MAKE}/0/data.txt"]
        result = json.loads((out / "result.json").read_text())
        assert (result["lr"], result["model"], result["data"]) == (float(lr), "b", "made by make")
        assert (result["job_num"], result["tag"], result["cwd"]) == (point, f"train-{point}", str(run_dir / "code"))
        assert result["app"] == str(run_dir / "code" / "hydra_app" / "train.py")
        task = json.loads((out / "0" / "result.json").read_text())  # the task's own output
        assert task["hydra_run_dir"] == str(out)
