"""`launcher status` and `launcher logs` on the local backend say why tasks wait, show a running task's
progress, and say why a task has no log (issue 18 item 4). A few seconds: 3 throttled 2-second tasks."""
import json
import time

from conftest import CLI

from jobs import layout

PIPE = """defaults:
  - schema
  - _self_
name: why
stages:
  slow: {kind: command, tasks: 3, throttle: 1, command: "sleep 2; echo slow $LAUNCHER_TASK_INDEX"}
  after: {kind: command, after: {slow: afterok}, command: "echo after"}
  broken: {kind: command, command: "exit 3"}
  never: {kind: command, after: {broken: afterok}, command: "echo never"}
"""


def running_markers(run_dir, stage, timeout=5.0) -> list:
    """The content of the stage's running markers, as soon as one is there (a task may end meanwhile)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = []
        for p in (run_dir / "stages" / stage / "markers").glob("*/*.running-*"):
            try:
                found.append(json.loads(p.read_text()))
            except FileNotFoundError:
                continue
        if found:
            return found
        time.sleep(0.05)
    return []


def test_status_says_why_tasks_wait_and_logs_why_a_task_has_none(tmp_path):
    conf = tmp_path / "conf"
    (conf / "pipeline").mkdir(parents=True)
    (conf / "pipeline" / "why.yaml").write_text(PIPE)
    root = tmp_path / "runs"
    root.mkdir()
    cli = CLI(root)
    cli("run", "--config-dir", str(conf), "pipeline=why", "cluster=local")
    run_dir = cli.run_dir()
    for t in range(3):  # what a training task writes (jobs/runtime/progress.py); here, before it starts
        layout.atomic_write_json(layout.progress_path(run_dir, "slow", t),
                                 {"step": 120, "total_steps": 1000, "tokens_per_s": 3100.0, "loss": 2.31,
                                  "started": 1.0, "time": 9e12})

    st = cli.status()
    slow, after = st["stages"][0], st["stages"][2]
    assert [s["name"] for s in st["stages"]] == ["slow", "broken", "after", "never"]
    waiting = [t for t in slow["array"] if t["state"] == "pending"]
    assert waiting and all(t["reason"] == "JobArrayTaskLimit" for t in waiting), slow["array"]  # the %1 throttle
    assert after["array"][0]["reason"] == "Dependency" and after["array"][0]["waiting_for"] == ["slow"]
    running = [t for t in slow["array"] if t["state"] == "running"]
    assert running and running[0]["progress"]["step"] == 120, slow["array"]
    assert [m["restarts"] for m in running_markers(run_dir, "slow")] == [0]  # the attempt's (jobs/task.py)
    assert running[0]["log"]["stdout"] == str(run_dir / "stages" / "slow" / "logs" / f"{running[0]['job']}_0_log.out")

    table = cli("status", "latest", check=False)  # piped: plain text, one tab-separated row per stage
    assert table.returncode == 2
    rows = {line.split("\t")[0]: line.split("\t") for line in table.stdout.splitlines()[2:]}
    header = table.stdout.splitlines()[1].split("\t")
    assert rows["after"][header.index("waiting")] == "1 waiting for slow"
    assert "throttled" in rows["slow"][header.index("waiting")]
    assert rows["slow"][header.index("progress")].startswith("[")
    assert "step 120/1000 · 3.1k tok/s · loss 2.31" in rows["slow"][header.index("progress")]

    st = cli.wait(timeout=60)
    assert st["state"] == "FAILED" and st["stages"][3]["cancelled"] == [0] and st["stages"][1]["failed"] == [0]
    p = cli("logs", "latest", "never")
    assert p.stdout == "" and "never ran: its parent broken[0] failed" in p.stderr
    assert f"==> never[0] stdout: {run_dir}/stages/never/logs/" in p.stderr
    p = cli("logs", "latest", "slow", "--task", "1")
    assert p.stdout.strip() == "slow 1" and "==> slow[1] stderr:" in p.stderr
