"""The user's scrontab (Slurm's cron): read and write it with `scrontab`, serialise edits, and find
or render the launcher's blocks in it (launcher/run/schedule.py is the verb and the firing wrapper). An
entry is one block, tagged so that it is found again; every other line is written back untouched."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import filelock

from launcher.errors import LauncherError

TAG = "# launcher-schedule:"
END_TAG = "# launcher-schedule-end:"
DISABLED_PREFIXES = ("#DISABLED: ", "#BAD: ")  # what `scrontab -l` puts before lines Slurm disabled
ENABLE_HINT = ("an administrator must add `ScronParameters=enable` to slurm.conf and run `scontrol reconfigure` "
               "(on the dev cluster: scripts/dev-slurm up)")


# ----------------------------------------------------------------------------- scrontab I/O

def _scrontab(argv: List[str], env: Dict[str, str]) -> subprocess.CompletedProcess:
    if shutil.which("scrontab", path=env.get("PATH")) is None:
        raise LauncherError("`scrontab` not found: it comes with Slurm's clients (Debian 12's slurm-client "
                            "lacks it; scripts/dev-slurm up builds it for the dev cluster)")
    try:
        p = subprocess.run(["scrontab", *argv], env=env, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise LauncherError("`scrontab` did not answer in 60 s: is slurmctld up?") from e
    if p.returncode != 0 and "scrontab is disabled" in p.stderr:
        raise LauncherError(f"scrontab is not enabled on this cluster: {ENABLE_HINT}")
    if p.returncode != 0 and "configuration source" in p.stderr:
        raise LauncherError("scrontab found no Slurm configuration: set SLURM_CONF or pass --cluster NAME "
                            "(a profile that names slurm_conf)")
    return p


def read_crontab(env: Dict[str, str]) -> str:
    """The user's scrontab as `scrontab -l` prints it ('' when there is none)."""
    p = _scrontab(["-l"], env)
    if p.returncode != 0:
        if p.stdout.startswith("no crontab for"):  # exit 1, on stdout
            return ""
        raise LauncherError(f"`scrontab -l` failed ({p.returncode}): {(p.stderr or p.stdout).strip()}")
    return p.stdout


def write_crontab(text: str, env: Dict[str, str]) -> None:
    """Install `text` as the user's whole scrontab (`scrontab -r` when nothing is left in it)."""
    if not text.strip():
        p = _scrontab(["-r"], env)
        if p.returncode != 0:
            raise LauncherError(f"`scrontab -r` failed ({p.returncode}): {(p.stderr or p.stdout).strip()}")
        return
    with tempfile.NamedTemporaryFile("w", prefix="launcher-scrontab-", suffix=".txt", delete=False) as f:
        f.write(text if text.endswith("\n") else text + "\n")
    try:
        p = _scrontab([f.name], env)
    finally:
        os.unlink(f.name)
    if p.returncode != 0:
        # scrontab explains on stdout: "There are errors in your crontab." / "There was an issue with the
        # job submission on lines 3-9 ... The error message was: ..."
        raise LauncherError(f"scrontab refused the new crontab ({p.returncode}): "
                            f"{' '.join((p.stdout + ' ' + p.stderr).split())}")


@contextlib.contextmanager
def crontab_lock(timeout: float = 60):
    """Serialises read-modify-write of this user's scrontab by launchers on this machine (filelock:
    flock(2) on Unix). Raises LauncherError after `timeout` seconds."""
    path = Path(tempfile.gettempdir()) / f"launcher-scrontab-{os.getuid()}.lock"
    try:
        with filelock.FileLock(path, timeout=timeout, mode=0o600):
            yield
    except filelock.Timeout:
        raise LauncherError(f"another launcher has been editing your scrontab for {timeout:.0f} s ({path})") from None


# ----------------------------------------------------------------------------- blocks

def _undisabled(line: str) -> tuple[str, bool]:
    for prefix in DISABLED_PREFIXES:
        if line.startswith(prefix):
            return line[len(prefix):], True
    return line, False


def _is_entry(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith("#") and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s*=", s)


def parse_blocks(text: str) -> tuple[List[str], Dict[str, dict]]:
    """(lines, {name: block}); a block has its first and last line index, meta, cron, command, disabled.
    A block runs from its tag to its end tag; one whose end tag was edited away ends at its entry."""
    lines = text.splitlines()
    blocks: Dict[str, dict] = {}
    i = 0
    while i < len(lines):
        line, disabled = _undisabled(lines[i])
        if not line.startswith(TAG + " "):
            i += 1
            continue
        name, _, meta_text = line[len(TAG) + 1:].strip().partition(" ")
        try:
            meta = json.loads(meta_text) if meta_text.strip() else {}
        except json.JSONDecodeError:
            meta = {}
        block = {"name": name, "start": i, "end": None, "meta": meta if isinstance(meta, dict) else {},
                 "cron": None, "command": None, "disabled": disabled}
        entry_at = None
        j = i + 1
        while j < len(lines):
            body, dis = _undisabled(lines[j])
            if body.startswith(TAG + " "):
                break
            if body.strip() == f"{END_TAG} {name}":
                block["end"] = j
                break
            if entry_at is None and _is_entry(body):
                entry_at = j
                block["disabled"] = block["disabled"] or dis
                m = re.match(r"^\s*(@\w+|(?:\S+\s+){4}\S+)\s+(.*)$", body)
                block["cron"], block["command"] = (m.group(1), m.group(2)) if m else (None, body)
            j += 1
        if block["end"] is None:
            block["end"] = entry_at if entry_at is not None else i
        blocks[name] = block
        i = block["end"] + 1
    return lines, blocks


def launcher_args_of(command: Optional[str]) -> List[str]:
    """The launcher arguments in a block's command line (after `fire NAME ... --`)."""
    try:
        words = shlex.split(command or "")
    except ValueError:
        return []
    if "fire" in words and "--" in words[words.index("fire"):]:
        return words[words.index("--", words.index("fire")) + 1:]
    return []


def render_block(name: str, cron: str, meta: dict, options: List[str], argv: List[str],
                 slurm_conf: Optional[str] = None) -> List[str]:
    """The scrontab lines of one entry (templates/scrontab_entry.j2): tag, #SCRON options, the cron line
    running `argv` (shell-quoted) with SLURM_CONF set when given, end tag."""
    from jobs.runtime import templating

    return templating.render("scrontab_entry.j2", name=name, cron=cron, meta=meta, options=options, argv=argv,
                             slurm_conf=slurm_conf).splitlines()
