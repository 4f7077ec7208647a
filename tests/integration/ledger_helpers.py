"""Shared by the "the ledger never lies" tests: a pipeline with an afternotok stage, Slurm client
wrappers that print like a site's, and ways to ask the dev cluster what it holds."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import ROOT, CLI

# work (2 tasks) -> alert (afternotok: runs only if some work task failed) -> notify (afterok: alert);
# report waits on alert with afterany (runs whatever alert did, also when it was skipped).
# pipeline.vars.fail_once_task makes that work task fail on its first attempt only.
ALERTING = """\
defaults:
  - schema
  - _self_
name: alerting
vars:
  fail_once_task: -1
stages:
  work:
    kind: command
    tasks: 2
    resources: {time: "00:05:00"}
    command: |
      if [ "$LAUNCHER_TASK_INDEX" = "${pipeline.vars.fail_once_task}" ] && [ ! -e "$LAUNCHER_CHECKPOINT_DIR/failed-once" ]; then
        touch "$LAUNCHER_CHECKPOINT_DIR/failed-once"; echo "work $LAUNCHER_TASK_INDEX failing on purpose" >&2; exit 3
      fi
      echo "work $LAUNCHER_TASK_INDEX" > "$LAUNCHER_OUTPUT_DIR/work.txt"
  alert:
    kind: command
    after: {work: afternotok}
    resources: {time: "00:05:00"}
    command: echo ALERT > "$LAUNCHER_OUTPUT_DIR/alert.txt"
  notify:
    kind: command
    after: {alert: afterok}
    resources: {time: "00:05:00"}
    command: echo NOTIFIED > "$LAUNCHER_OUTPUT_DIR/notify.txt"
  report:
    kind: command
    after: {alert: afterany}
    resources: {time: "00:05:00"}
    command: echo REPORT > "$LAUNCHER_OUTPUT_DIR/report.txt"
"""


def alerting_cli(tmp_path: Path, env: dict | None = None) -> CLI:
    """A CLI whose conf tree (a copy of the project's) also has pipeline=alerting."""
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "pipeline" / "alerting.yaml").write_text(ALERTING)
    root = tmp_path / "runs"
    root.mkdir()
    return CLI(root, env={**(env or {}), "LAUNCHER_CONF_DIR": str(conf)})


def outputs(run_dir: Path, stage: str, name: str) -> list:
    return sorted(run_dir.glob(f"stages/{stage}/out/*/*/{name}"))


def wrap(bin_dir: Path, client: str, before: str = "", after: str = "", body: str = "") -> Path:
    """A site-style wrapper for a Slurm client on PATH: prints `before`, runs the real client (with
    `body` shell lines first, e.g. a failure on the Nth call), prints `after`, keeps its exit status."""
    real = shutil.which(client, path=os.defpath + ":/usr/bin:/usr/local/bin")
    assert real, f"no {client} installed"
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / client
    lines = ["#!/bin/bash", body]
    if before:
        lines.append(f"printf '%s\\n' {_q(before)}")
    if after:
        lines += [f'"{real}" "$@"', "rc=$?", f"printf '%s\\n' {_q(after)}", "exit $rc"]
    else:
        lines.append(f'exec "{real}" "$@"')
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return script


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)


def path_with(bin_dir: Path) -> dict:
    return {"PATH": f"{bin_dir}:{os.environ.get('PATH', os.defpath)}"}
