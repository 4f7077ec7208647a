"""The extension point (issue 17): a stage kind that only a plugin defines (tests/integration/
toy_kind_plugin: a Kind on the login side, a runner module on the node side, its config section, one
entry point) is checked, planned, described and run end to end on cluster=local, touching no file
of the project."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import CLI, ROOT

PLUGIN = Path(__file__).resolve().parent / "toy_kind_plugin"


def plugin_cli(tmp_path) -> CLI:
    root = tmp_path / "runs"
    root.mkdir()
    return CLI(root, env={"PYTHONPATH": str(PLUGIN)})  # the plugin "installed": its dist-info on the path


ARGS = ["pipeline=greet", "cluster=local", f"hydra.searchpath=[file://{PLUGIN}/conf]", f"pipeline.code=[{PLUGIN}]"]


def test_a_kind_from_a_plugin_runs_end_to_end_on_the_local_backend(tmp_path):
    cli = plugin_cli(tmp_path)
    plan = cli("plan", *ARGS).stdout
    assert "hello: greets 'hi' x 3 per task" in plan  # its own `launcher plan` paragraph
    cli("run", *ARGS, "wait=true", "poll_s=0.3")
    st = cli.wait()
    assert st["state"] == "COMPLETED", st
    run = cli.run_dir()
    spec = json.loads((run / "stages" / "hello" / "spec.json").read_text())
    assert spec["kind"] == "greet" and spec["runner"] == "toykind.node"
    assert spec["payloads"][0]["greet"] == {"text": "hi", "times": 3}
    out = run / "stages" / "hello" / "out" / "0"
    assert (out / "1" / "greeting.txt").read_text() == "hi from task 1 of point 0\n" * 3
    assert json.loads((out / "0" / "result.json").read_text()) == {"lines": 3}
    assert (run / "stages" / "count" / "out" / "0" / "0" / "lines.txt").read_text().strip() == "6"


def test_a_plugin_kind_is_checked_like_a_builtin_one(tmp_path):
    """Its own check, in the usual form, before anything is submitted; its section is part of the schema
    (a typo in it is an unknown key with the closest field)."""
    cli = plugin_cli(tmp_path)
    p = cli("run", *ARGS, "pipeline.stages.hello.greet.times=0", check=False)
    assert p.returncode == 1 and "stage 'hello': pipeline.stages.hello.greet.times: must be >= 1, got 0" in p.stderr
    p = cli("run", *ARGS, "+pipeline.stages.hello.greet.tims=2", check=False)
    assert p.returncode == 1 and "Key 'tims' not in 'Greet'; did you mean 'times'?" in p.stderr
    assert not list(cli.run_root.glob("*/submissions.jsonl"))  # nothing submitted


def test_without_the_plugin_the_kind_is_unknown_and_the_project_names_it_nowhere(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    cli = CLI(root)
    p = cli("run", *ARGS, check=False)  # the schema has no section of that name
    assert p.returncode == 1 and "pipeline.stages.hello.greet: In 'pipeline/greet': Key 'greet' not in 'Stage'" in p.stderr
    p = cli("run", "pipeline=smoke", "cluster=local", "pipeline.stages.reduce.kind=greet", check=False)
    assert p.returncode == 1
    assert "stage 'reduce': pipeline.stages.reduce.kind: unknown stage kind 'greet' (kinds: command, python" in p.stderr
    found = subprocess.run(["grep", "-rlw", "greet", "launcher", "jobs", "conf", "templates"], cwd=ROOT,
                           capture_output=True, text=True).stdout
    assert found == ""
