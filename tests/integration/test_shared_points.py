"""Shared sweep points on cluster=local: the ablation's shape (data variants x seeds; a data stage per
variant, a tokenizer for all, a training per point) with command stages, so it runs in seconds. Points
with equal content keys run once; every point reads the right output; status, logs and resume see
the shared tasks."""
import json
import os

from conftest import stage_counts

from jobs import layout

PIPELINE = """\
defaults: [schema, _self_]
name: shape
vars: {data: x, seed: 1, fail: none, corpus: /nonexistent}
stages:
  data:        # per data variant (2 tasks per point, like a datatrove stage's ranks)
    kind: command
    tasks: 2
    env: {CORPUS: "${pipeline.vars.corpus}"}
    command: |
      if [ "$LAUNCHER_POINT-$LAUNCHER_TASK_INDEX" = "${pipeline.vars.fail}" ] && [ ! -e "$LAUNCHER_CHECKPOINT_DIR/once" ]; then
        touch "$LAUNCHER_CHECKPOINT_DIR/once"; exit 3
      fi
      echo "${pipeline.vars.data}-$LAUNCHER_TASK_INDEX" > "$LAUNCHER_OUTPUT_DIR/docs.txt"
  tokenizer:   # the same for every point
    kind: command
    command: echo tok > "$LAUNCHER_OUTPUT_DIR/tok.txt"
  train:       # per point
    kind: command
    after: {data: afterok, tokenizer: afterok}
    command: >-
      cat "$LAUNCHER_INPUT_DATA/0/docs.txt" "$LAUNCHER_INPUT_DATA/1/docs.txt" "$LAUNCHER_INPUT_TOKENIZER/0/tok.txt"
      > "$LAUNCHER_OUTPUT_DIR/read.txt"; echo "seed ${pipeline.vars.seed}" >> "$LAUNCHER_OUTPUT_DIR/read.txt"
"""


def test_points_with_equal_keys_run_once_and_every_point_reads_its_data(cli, tmp_path):
    """Task 1 of the y variant (point 2) fails once: the trainings (afterok on the whole data array) are
    cancelled, resume resubmits that one data task and the trainings, and everything reads right."""
    conf = tmp_path / "conf"
    (conf / "pipeline").mkdir(parents=True)
    (conf / "pipeline" / "shape.yaml").write_text(PIPELINE)
    p = cli("run", "-m", "--config-dir", str(conf), "pipeline=shape", "cluster=local", "pipeline.vars.data=x,y",
            "pipeline.vars.seed=1,2", "pipeline.vars.fail=2-1", "wait=true", "poll_s=0.3", check=False)
    assert p.returncode == 1
    counts = stage_counts(cli.status())
    assert counts["data"]["failed"] == 2 and counts["data"]["completed"] == 6  # task 5, and 7 that shares it
    assert counts["train"]["cancelled"] == 4 and counts["tokenizer"]["completed"] == 4
    before = len(cli.ledger())
    cli("resume", "latest")
    assert [(r["stage"], r["tasks"]) for r in cli.ledger()[before:] if "job_id" in r] == \
        [("data", [5]), ("train", [0, 1, 2, 3])]
    assert cli.wait()["state"] == "COMPLETED"
    run = cli.run_dir()
    submitted = {}
    for rec in cli.ledger()[:before]:
        if "job_id" in rec:
            submitted.setdefault(rec["stage"], []).extend(rec["tasks"])
    # points: 0 x/1, 1 x/2, 2 y/1, 3 y/2 -> data: points 0 and 2 (2 tasks each), tokenizer: point 0
    assert submitted == {"data": [0, 1, 4, 5], "tokenizer": [0], "train": [0, 1, 2, 3]}
    for point, (variant, seed) in enumerate([("x", 1), ("x", 2), ("y", 1), ("y", 2)]):
        read = (layout.output_dir(run, "train", point, 0) / "read.txt").read_text().split("\n")
        assert read[:4] == [f"{variant}-0", f"{variant}-1", "tok", f"seed {seed}"], (point, read)
    assert not (layout.output_dir(run, "data", 1)).exists()  # nothing computed twice
    plan = json.loads((run / "plan.json").read_text())
    stages = {s["name"]: s for s in plan["stages"]}
    assert stages["data"]["shared"] == [0, 0, 2, 2] and stages["tokenizer"]["shared"] == [0, 0, 0, 0]
    assert {d["parent"]: (d["kind"], d["note"]) for d in stages["train"]["deps"]} == \
        {"data": ("afterok", ""), "tokenizer": ("afterok", "shared")}
    st = cli.status()
    assert st["state"] == "COMPLETED"
    assert stage_counts(st)["data"]["completed"] == 8  # a shared task shows its computing task's state
    assert {s["name"]: len(s["shared"]) for s in st["stages"]} == {"data": 4, "tokenizer": 3, "train": 0}
    # the logs of a shared task are those of the task that computed it
    logs = cli("logs", "latest", "data", "--task", "6")
    assert logs.returncode == 0 and "no log yet" not in logs.stderr
    assert "nothing to resume" in cli("resume", "latest").stdout


def submitted_by(cli, run="latest"):
    out = {}
    for rec in cli.ledger(run):
        if "job_id" in rec:
            out.setdefault(rec["stage"], []).extend(rec["tasks"])
    return out


def test_a_second_run_reads_what_the_first_computed_and_a_touched_input_or_rerun_computes_again(cli, tmp_path):
    """Across runs (issue 20 item 3): the same command again submits nothing and is COMPLETED from the
    cache; a touched input document reruns the data stages and the trainings (not the tokenizer);
    --rerun tokenizer reruns it and the trainings, which read the data another run computed."""
    conf = tmp_path / "conf"
    (conf / "pipeline").mkdir(parents=True)
    (conf / "pipeline" / "shape.yaml").write_text(PIPELINE)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "doc.jsonl").write_text("{}\n")
    cmd = ("run", "-m", "--config-dir", str(conf), "pipeline=shape", "cluster=local", "pipeline.vars.data=x,y",
           "pipeline.vars.seed=1,2", f"pipeline.vars.corpus={corpus}", "wait=true", "poll_s=0.3")
    cli(*cmd)
    first = cli.run_dir()
    out = cli(*cmd).stdout
    assert "0 job(s) submitted" in out and submitted_by(cli) == {}
    st = cli.status()
    assert st["state"] == "COMPLETED"
    counts = stage_counts(st)
    assert counts["data"]["cached"] == 8 and counts["tokenizer"]["cached"] == 4 and counts["train"]["cached"] == 4
    plan = {s["name"]: s for s in json.loads((cli.run_dir() / "plan.json").read_text())["stages"]}
    n = plan["train"]["tasks_per_point"]
    assert plan["train"]["cached"]["3"] == {"run": str(first), "point": 3, "hash": plan["train"]["hash"],
                                            "tasks": [3 * n, 4 * n]}

    os.utime(corpus / "doc.jsonl", (1, 1))  # touched: same content, another time
    cli(*cmd)
    touched = cli.run_dir()
    assert submitted_by(cli) == {"data": [0, 1, 4, 5], "train": [0, 1, 2, 3]}
    cli(*cmd, "--rerun", "tokenizer")
    assert submitted_by(cli) == {"tokenizer": [0], "train": [0, 1, 2, 3]}
    spec = json.loads((layout.stage_dir(cli.run_dir(), "train") / "spec.json").read_text())
    assert {p: layout.located(spec, "data", p)[0] for p in range(4)} == {p: touched for p in range(4)}
    for point, (variant, seed) in enumerate([("x", 1), ("x", 2), ("y", 1), ("y", 2)]):
        read = (layout.output_dir(cli.run_dir(), "train", point, 0) / "read.txt").read_text().split("\n")
        assert read[:4] == [f"{variant}-0", f"{variant}-1", "tok", f"seed {seed}"], (point, read)
    assert cli("run", *cmd[1:], "--rerun", "nope", check=False).returncode != 0
