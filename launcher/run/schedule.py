"""`launcher schedule`: recurring campaigns with Slurm's own cron, scrontab.

Login-node side (standard library only; the cluster profile is composed only when installing):

    launcher schedule NAME --cron '0 2 * * *' [--cluster dev] -- run pipeline=ablation cluster=dev
    launcher schedule --list
    launcher schedule --remove NAME

An entry is one block of the user's scrontab, tagged so that it is found again; every other line of
the scrontab (other tools', the user's own) is written back untouched:

    # launcher-schedule: NAME {"dir": "<run_root>/schedules/NAME", "cwd": ..., "cluster": ...}
    #SCRON --job-name=launcher-schedule.NAME
    #SCRON --partition=debug
    #SCRON --time=00:30:00
    #SCRON --chdir=<cwd at install>
    #SCRON --output=<run_root>/schedules/NAME/scron.log
    #SCRON --open-mode=append
    0 2 * * * SLURM_CONF=<profile's> exec <launcher's python> -m launcher.run.schedule fire NAME --dir ... -- <args>
    # launcher-schedule-end: NAME

Slurm runs a scrontab entry as ONE batch job that it requeues (begin time = next match) when the
previous firing ends, so an entry does not overlap itself as long as the scrontab is not rewritten.
But every scrontab write (any entry added, replaced or removed, by any tool) turns the user's running
cron jobs into ordinary jobs that finish, and queues a new job per entry: a firing still running then
can meet the next one. So `fire` (the wrapper the entry runs) holds <dir>/lock (flock) while the
launcher runs; a firing that finds it held records "skipped" and exits 0.

`fire` appends one line per firing to <dir>/history.jsonl (start, end, exit code, run id, Slurm
job id, ...), and when the launcher exits non-zero it POSTs {schedule, exit_code, log, ...} to the
notification URL if one is configured (--notify-url, or `notify_url` in the cluster profile): 10 s
timeout, and a webhook failure never fails the firing.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import filelock

from jobs.layout import atomic_write_json

from launcher.argparsing import Parser
from launcher.completion import complete_profile
from launcher.errors import NotFound
from launcher.run.runroot import default_root
from launcher.errors import LauncherError

JOB_PREFIX = "launcher-schedule."
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_TIME = "00:30:00"
DEFAULT_MEM = "2G"
NOTIFY_TIMEOUT_S = 10

EPILOG = """\
examples:
  launcher schedule nightly --cron '0 2 * * *' --cluster dev -- run -m pipeline=ablation cluster=dev seed=1,2
  launcher schedule smoke5 --cron '*/5 * * * *' --notify-url http://hooks.example/x -- run pipeline=smoke cluster=dev
  launcher schedule --list
  launcher schedule --remove nightly

Everything after `--` is a launcher command line, run with this interpreter from the current
directory each time the entry fires (Slurm's scrontab; times are the controller's). Output goes to
<run_root>/schedules/NAME/scron.log, one line per firing to history.jsonl there. Firings never overlap.
cron: 5 fields (minute hour day-of-month month day-of-week; numbers, ranges, lists, */step) or
@hourly @daily @weekly @monthly @yearly. Slurm 22.05 takes a single month or weekday name only,
no step of 1, and counts a step from the field's first value (10-50/20 is 20,40, not 10,30,50).
"""


# ----------------------------------------------------------------------------- command line

class _ScheduleParser(Parser):
    """Everything after the first `--` is the launcher command line, verbatim (its options too);
    before it, options and NAME may come in any order."""

    _inner = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inner:
            return super().parse_known_args(args, namespace)
        args = list(sys.argv[1:] if args is None else args)
        tail = None
        if "--" in args:
            i = args.index("--")
            args, tail = args[:i], args[i + 1:]
        self._inner = True
        try:
            ns, extra = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False
        if tail is not None:
            ns.launcher_args = list(ns.launcher_args or []) + tail
        return ns, extra


def _add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("name", nargs="?", help="schedule name (letters, digits, . _ -); also the Slurm job name's suffix")
    sp.add_argument("launcher_args", nargs="*", metavar="-- ARGS",
                    help="the launcher command line to run, after `--` (e.g. -- run pipeline=smoke cluster=dev)")
    sp.add_argument("--cron", help="when: 5 cron fields, e.g. '*/5 * * * *', or @hourly/@daily/@weekly/...")
    sp.add_argument("--cluster", help="cluster profile (SLURM_CONF, partition, account, qos, notify_url); "
                    "default: cluster=... from ARGS, else the default profile").completer = complete_profile
    sp.add_argument("--root", type=Path, help="run root holding schedules/NAME/ (default: run_root=... from "
                    "ARGS, else $LAUNCHER_RUN_ROOT or ./runs)")
    sp.add_argument("--notify-url", help="POST {schedule, exit_code, log} here when a firing exits non-zero")
    sp.add_argument("--partition", help="partition of the scron job (default: the profile's)")
    sp.add_argument("--time", default=DEFAULT_TIME, help=f"time limit of one firing (default {DEFAULT_TIME})")
    sp.add_argument("--mem", default=DEFAULT_MEM, help=f"memory of the scron job (default {DEFAULT_MEM})")
    what = sp.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="table of the installed schedules and their last firing")
    what.add_argument("--remove", metavar="NAME", help="remove that schedule's entry (its history is kept)")
    sp.add_argument("--json", action="store_true", help="with --list: machine-readable output")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `schedule` verb to the launcher's subparsers."""
    help = "install, list or remove a recurring launcher command (Slurm scrontab)"
    saved = subparsers._parser_class  # the verb needs its own parser class for `--` (see _ScheduleParser)
    subparsers._parser_class = _ScheduleParser
    try:
        sp = subparsers.add_parser("schedule", help=help, description=help + ". Firings never overlap; each "
                                   "one is recorded in <run_root>/schedules/NAME/history.jsonl.", epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    finally:
        subparsers._parser_class = saved
    _add_arguments(sp)
    return sp


def cmd_schedule(args) -> int:
    if args.list:
        return list_schedules(args)
    if args.remove:
        if args.name or args.launcher_args or args.cron:
            raise LauncherError("--remove NAME takes no other NAME, --cron or launcher arguments")
        return remove(args.remove, args)
    if not args.name:
        raise LauncherError("schedule: give NAME --cron SPEC -- <launcher arguments>, or --list, or --remove NAME")
    return install(args)


# ----------------------------------------------------------------------------- cron specs

_FIELDS = (("minute", 0, 59, 61), ("hour", 0, 23, 25), ("day of month", 1, 31, 32), ("month", 1, 12, 13),
           ("day of week", 0, 7, 8))
_NAMES = {3: ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
          4: ("sun", "mon", "tue", "wed", "thu", "fri", "sat")}
_SHORTCUTS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def validate_cron(spec: str) -> str:
    """The spec normalised to single spaces, or LauncherError saying what is wrong, checked the way
    Slurm 22.05's scrontab parses it (src/scrontab/parse.c), so it never rejects what we accepted."""
    spec = " ".join((spec or "").split())
    if spec.lower() in _SHORTCUTS:
        return spec.lower()
    fields = spec.split(" ")
    if len(fields) != 5:
        raise LauncherError(f"invalid --cron '{spec}': {len(fields)} field(s), expected 5 "
                            "(minute hour day-of-month month day-of-week, e.g. '*/5 * * * *') or one of "
                            + ", ".join(_SHORTCUTS))
    for i, (field, (what, lo, hi, size)) in enumerate(zip(fields, _FIELDS)):
        def bad(why: str) -> LauncherError:
            return LauncherError(f"invalid --cron '{spec}': {what} field '{field}': {why}")

        body, _, step = field.partition("/")
        if step:
            if not step.isdigit():
                raise bad(f"step '{step}' is not a number")
            if not 2 <= int(step) < size:  # scrontab: "bad step value"
                raise bad(f"step must be 2..{size - 1} (Slurm rejects a step of 1: use '*')")
        if body == "*":
            continue
        if i in _NAMES and body.isalpha():
            if body.lower() not in _NAMES[i]:
                raise bad(f"unknown name (use one of {', '.join(_NAMES[i])} or numbers)")
            continue
        if not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", body):
            raise bad(f"expected *, a number {lo}-{hi}, a range a-b or a list a,b,c"
                      + (" (Slurm 22.05: names only alone, not in lists or ranges)" if re.search("[A-Za-z]", body)
                         else ""))
        for part in body.split(","):
            a, _, b = part.partition("-")
            a, b = int(a), int(b or a)
            if not (lo <= a <= hi and lo <= b <= hi):
                raise bad(f"{part} is outside {lo}-{hi}")
            if a > b:
                raise bad(f"range {part} goes backwards")
    return spec


# ----------------------------------------------------------------------------- install / remove / list

def _arg_value(args: List[str], key: str) -> Optional[str]:
    """Value of the last `key=value` override in launcher arguments (Hydra's `+key=`/`++key=` too)."""
    value = None
    for a in args:
        k, sep, v = a.lstrip("+").partition("=")
        if sep and k == key:
            value = v
    return value


def _profile(name: Optional[str]) -> dict:
    from launcher.config.compose import compose  # Hydra: only when installing

    return compose([f"cluster={name}"] if name else [])["cluster"]


def with_site_settings(launcher_args: List[str]) -> List[str]:
    """A firing runs in Slurm's environment, not this shell's: a `run`/`plan` command line gets the site
    default cluster (launcher/config/sitedefault.py) as `cluster=` and the config directories of
    $LAUNCHER_CONFIG_DIRS as `--config-dir`, as they are now."""
    from launcher.config import configdirs, sitedefault

    verb, rest = launcher_args[0], launcher_args[1:]
    if verb not in ("run", "plan"):
        return launcher_args
    if not sitedefault.names_cluster(rest):
        name, _ = sitedefault.default_cluster()
        rest = [f"cluster={name}", *rest] if name else rest
    return [verb, *[a for d in configdirs.from_env() for a in ("--config-dir", str(d))], *rest]


def install(args) -> int:
    from launcher.slurm import client, scrontab  # here: not at every launcher start (completion)
    name = args.name
    if not NAME_RE.match(name):
        raise LauncherError(f"invalid schedule name '{name}': letters, digits, '.', '_', '-' (at most 64), "
                            "starting with a letter or digit")
    if not args.cron:
        raise LauncherError("schedule: --cron SPEC is required (e.g. --cron '0 2 * * *')")
    cron = validate_cron(args.cron)
    launcher_args = list(args.launcher_args or [])
    if not launcher_args:
        raise LauncherError("schedule: give the launcher command line after `--` (e.g. -- run pipeline=smoke "
                            "cluster=dev)")
    if launcher_args[0] == "schedule":
        raise LauncherError("schedule: a schedule cannot run `launcher schedule`")
    launcher_args = with_site_settings(launcher_args)
    cluster_name = args.cluster or _arg_value(launcher_args, "cluster")
    profile = _profile(cluster_name)
    root = Path(args.root).resolve() if args.root else (
        Path(_arg_value(launcher_args, "run_root")).resolve() if _arg_value(launcher_args, "run_root")
        else default_root())
    sdir = root / "schedules" / name
    log_path = sdir / "scron.log"
    cwd = os.getcwd()
    notify_url = args.notify_url or profile.get("notify_url")

    options = [f"--job-name={JOB_PREFIX}{name}"]
    partition = args.partition or profile.get("partition")
    if partition:
        options.append(f"--partition={partition}")
    for key in ("account", "qos"):
        if profile.get(key):
            options.append(f"--{key}={profile[key]}")
    if "\\" in str(log_path):
        raise LauncherError(f"schedule: the log path {log_path} contains a backslash: Slurm would not read it as a "
                            f"filename pattern (choose a run_root without one)")
    # --output is a Slurm filename pattern: a % of the run root is doubled, or Slurm expands it (%x, %j...).
    # --chdir is not a pattern (Slurm 22.05 takes it as it is).
    options += [f"--time={args.time}", f"--mem={args.mem}", f"--chdir={cwd}",
                f"--output={str(log_path).replace('%', '%%')}", "--open-mode=append"]
    for o in options:
        if any(c.isspace() for c in o):
            raise LauncherError(f"schedule: scrontab cannot take whitespace in an option: {o!r}")
    argv = [sys.executable, "-m", "launcher.run.schedule", "fire", name, "--dir", str(sdir), "--", *launcher_args]
    meta = {"dir": str(sdir), "cwd": cwd, "cluster": profile.get("name"), "installed": _now()}
    block = scrontab.render_block(name, cron, meta, options, argv, profile.get("slurm_conf"))
    env = client.client_env(profile.get("slurm_conf"))
    with scrontab.crontab_lock():
        lines, blocks = scrontab.parse_blocks(scrontab.read_crontab(env))
        # scrontab substitutes $NAME in commands with the crontab's own variable lines (NAME=value).
        defined = {m.group(1) for line in lines
                   for m in [re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", line)] if m}
        clash = sorted(v for v in defined if any(f"${v}" in a for a in launcher_args))
        if clash:
            raise LauncherError(f"schedule: scrontab would replace ${clash[0]} in the launcher arguments with "
                                f"the value of its variable line {clash[0]}=...; rename one of them")
        sdir.mkdir(parents=True, exist_ok=True)  # Slurm creates the --output file, not its folder
        # The notification URL may carry a token: kept in a 0600 file, not on the scrontab line (squeue shows it).
        settings = sdir / "schedule.json"
        fd = os.open(settings, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"name": name, "cron": cron, "args": launcher_args, "cwd": cwd, "cluster": profile.get("name"),
                       "notify_url": notify_url, "installed": _now()}, f, indent=1)
        os.chmod(settings, 0o600)
        if name in blocks:
            b = blocks[name]
            new = lines[:b["start"]] + block + lines[b["end"] + 1:]
            verb = "replaced"
        else:
            new = lines + ([""] if lines and lines[-1].strip() else []) + block
            verb = "installed"
        scrontab.write_crontab("\n".join(new) + "\n", env)
    pending = [j for j in _queue(env).get(JOB_PREFIX + name, []) if j["state"] == "PENDING"]
    print(f"schedule {name} {verb}: '{cron}' -> launcher {shlex.join(launcher_args)}")
    if pending:
        print(f"  Slurm job {pending[-1]['job_id']}, next firing {pending[-1]['start']}")
    print(f"  log: {log_path}\n  history: {sdir / 'history.jsonl'}")
    if notify_url:
        print(f"  failures are POSTed to {notify_url}")
    return 0


def remove(name: str, args) -> int:
    from launcher.slurm import client, scrontab  # here: not at every launcher start (completion)

    env = client.client_env(_cluster_conf(args))
    with scrontab.crontab_lock():
        lines, blocks = scrontab.parse_blocks(scrontab.read_crontab(env))
        if name not in blocks:
            known = ", ".join(sorted(blocks)) or "none"
            raise NotFound(f"no schedule '{name}' in your scrontab (schedules: {known})")
        b = blocks[name]
        new = lines[:b["start"]] + lines[b["end"] + 1:]
        if b["start"] > 0 and b["start"] < len(lines) and not lines[b["start"] - 1].strip() and (
                b["end"] + 1 >= len(lines) or not lines[b["end"] + 1].strip()):
            new = lines[:b["start"] - 1] + lines[b["end"] + 1:]  # and the blank line install added
        scrontab.write_crontab("\n".join(new) + "\n" if any(x.strip() for x in new) else "", env)
    print(f"schedule {name} removed (a firing still running finishes; history kept in {b['meta'].get('dir', '?')})")
    return 0


def _cluster_conf(args) -> Optional[str]:
    """SLURM_CONF for --list/--remove: only when --cluster names a profile (else the shell's)."""
    return _profile(args.cluster).get("slurm_conf") if getattr(args, "cluster", None) else None


def _queue(env: Dict[str, str]) -> Dict[str, List[dict]]:
    """This user's launcher-schedule jobs in the queue, by job name (one squeue call; {} if it fails).
    After a scrontab rewrite, a firing still running and its entry's new job share the name."""
    try:
        p = subprocess.run(["squeue", "-h", "-u", str(os.getuid()), "-o", "%j|%i|%T|%S"], env=env,
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out: Dict[str, List[dict]] = {}
    for line in p.stdout.splitlines() if p.returncode == 0 else []:
        parts = line.split("|")
        if len(parts) == 4 and parts[0].startswith(JOB_PREFIX):
            out.setdefault(parts[0], []).append({"job_id": parts[1], "state": parts[2], "start": parts[3]})
    return out


def read_history(sdir: Path) -> List[dict]:
    try:
        text = (Path(sdir) / "history.jsonl").read_text()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def schedules(env: Dict[str, str]) -> List[dict]:
    from launcher.slurm import scrontab  # here: not at every launcher start (completion)

    _, blocks = scrontab.parse_blocks(scrontab.read_crontab(env))
    queue = _queue(env)
    rows = []
    for name, b in blocks.items():
        sdir = Path(b["meta"].get("dir", ""))
        history = read_history(sdir) if b["meta"].get("dir") else []
        fired = [h for h in history if h.get("status") != "skipped"]
        last = fired[-1] if fired else None
        running = _read_json(sdir / "running.json") if b["meta"].get("dir") else None
        jobs = queue.get(JOB_PREFIX + name, [])
        pending = [j for j in jobs if j["state"] == "PENDING"]
        if b["disabled"]:
            state = "disabled"  # Slurm commented it out (its job was scancel'ed): reinstall to re-enable
        elif any(j["state"] == "RUNNING" for j in jobs) or (running and not queue):  # queue: {} if squeue failed
            state = "running"  # (a running.json whose job is gone was left by a firing killed with SIGKILL)
        elif pending:
            state = "scheduled"
        else:
            state = "not queued"
        rows.append({"name": name, "cron": b["cron"], "args": scrontab.launcher_args_of(b["command"]),
                     "command": "launcher " + shlex.join(scrontab.launcher_args_of(b["command"])),
                     "dir": b["meta"].get("dir"), "state": state, "jobs": jobs,
                     "next": pending[-1]["start"] if pending else None,
                     "last_start": last.get("start") if last else None,
                     "last_exit": last.get("exit_code") if last else None,
                     "last_status": last.get("status") if last else None,
                     "last_run_id": last.get("run_id") if last else None,
                     "firings": len(fired), "skipped": len(history) - len(fired)})
    return rows


def list_schedules(args) -> int:
    from launcher.slurm import client  # here: not at every launcher start (completion)

    rows = schedules(client.client_env(_cluster_conf(args)))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no launcher schedules in your scrontab")
        return 0
    from rich.table import Table

    from launcher.reports.display import show

    table = Table(box=None, header_style="bold")
    for col in ("name", "cron", "command", "last fire", "last exit", "state", "next"):
        table.add_column(col, overflow="ellipsis" if col == "command" else "fold")
    for r in rows:
        table.add_row(r["name"], r["cron"] or "?", r["command"], (r["last_start"] or "-").replace("T", " ")[:19],
                      "-" if r["last_status"] is None else f"{r['last_exit']} ({r['last_status']})",
                      r["state"], (r["next"] or "-").replace("T", " "))
    show(table)
    return 0


# ----------------------------------------------------------------------------- fire (on the compute node)

def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _append(path: Path, record: dict) -> None:
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)  # one write per line: concurrent appenders do not interleave
        os.fsync(fd)
    finally:
        os.close(fd)


def notify(url: str, payload: dict, timeout: float = NOTIFY_TIMEOUT_S) -> Optional[str]:
    """POST payload as JSON; None on success, else why it failed (never raises)."""
    import urllib.request

    try:
        req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "launcher-schedule"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read(65536)
            return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except Exception as e:  # noqa: BLE001 - a webhook must never fail the firing
        return f"{type(e).__name__}: {e}"


_RUN_LINE = re.compile(r"^run (\S+): \d+ job\(s\) submitted")
_RUN_DIR = re.compile(r"^run dir: (\S+)")


def fire(name: str, sdir: Path, launcher_args: List[str], notify_url: Optional[str] = None) -> int:
    """One firing: take the lock (or record a skip), run `python -m launcher ARGS` here, record it."""
    sdir = Path(sdir)
    sdir.mkdir(parents=True, exist_ok=True)
    history = sdir / "history.jsonl"
    log_path = sdir / "scron.log"
    job_id = os.environ.get("SLURM_JOB_ID")
    host = socket.gethostname()
    start, t0 = _now(), time.time()
    print(f"==== launcher-schedule {name}: firing at {start} (Slurm job {job_id or '-'} on {host}) ====", flush=True)
    lock = filelock.FileLock(sdir / "lock", timeout=0, mode=0o644)  # one firing at a time (flock(2))
    try:
        lock.acquire()
    except filelock.Timeout:
        holder = _read_json(sdir / "running.json") or {}
        why = (f"previous firing still running (Slurm job {holder.get('job_id') or '?'} on "
               f"{holder.get('host') or '?'}, since {holder.get('start') or '?'})")
        print(f"launcher-schedule {name}: {why}: skipping this tick", flush=True)
        _append(history, {"schedule": name, "status": "skipped", "reason": why, "start": start, "end": _now(),
                          "start_ts": t0, "end_ts": time.time(), "exit_code": None, "job_id": job_id, "host": host})
        return 0
    try:
        running = {"schedule": name, "start": start, "start_ts": t0, "job_id": job_id, "host": host,
                   "pid": os.getpid(), "args": launcher_args}
        atomic_write_json(sdir / "running.json", running)
        settings = _read_json(sdir / "schedule.json") or {}
        notify_url = notify_url or settings.get("notify_url")
        env = {**os.environ, "COLUMNS": os.environ.get("COLUMNS", "200")}  # no wrapped "run ..." lines
        argv = [sys.executable, "-m", "launcher", *launcher_args]
        print(f"$ cd {shlex.quote(os.getcwd())} && {shlex.join(argv)}", flush=True)
        run_id = run_dir = None
        try:
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, text=True, errors="replace", bufsize=1)
        except OSError as e:
            print(f"launcher-schedule {name}: cannot start {argv[0]}: {e}", flush=True)
            child, rc = None, 127
        if child is not None:
            # Slurm's time limit / scancel: SIGTERM to the job; pass it on so the launcher stops cleanly.
            def forward(sig, _frame):
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(sig)

            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
                signal.signal(sig, forward)
            for line in child.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                m = _RUN_LINE.match(line.strip())
                if m:
                    run_id = m.group(1)
                m = _RUN_DIR.match(line.strip())
                if m:
                    run_dir = m.group(1)
            rc = child.wait()
            if rc < 0:
                rc = 128 - rc  # killed by a signal: the shell's convention
        end, t1 = _now(), time.time()
        record = {"schedule": name, "status": "ok" if rc == 0 else "failed", "start": start, "end": end,
                  "start_ts": t0, "end_ts": t1, "duration_s": round(t1 - t0, 3), "exit_code": rc, "run_id": run_id,
                  "run_dir": run_dir, "job_id": job_id, "host": host, "log": str(log_path), "args": launcher_args}
        if rc != 0 and notify_url:
            err = notify(notify_url, {"schedule": name, "exit_code": rc, "log": str(log_path), "run_id": run_id,
                                      "start": start, "end": end, "job_id": job_id, "host": host})
            record["notified"] = err is None
            print(f"launcher-schedule {name}: " + (f"notified {notify_url}" if err is None
                                                   else f"could not notify {notify_url}: {err}"), flush=True)
        _append(history, record)
        print(f"==== launcher-schedule {name}: exit {rc} after {t1 - t0:.1f} s"
              + (f", run {run_id}" if run_id else "") + " ====", flush=True)
        return rc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sdir / "running.json")
        lock.release()


def main(argv: Optional[List[str]] = None) -> int:
    """`python -m launcher.run.schedule fire NAME --dir DIR [--notify-url URL] -- ARGS` (what an entry runs),
    or any `launcher schedule` command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fire"]:
        p = _ScheduleParser(prog="python -m launcher.run.schedule fire",
                            description="one firing of a schedule (run by its scrontab entry)")
        p.add_argument("name")
        p.add_argument("launcher_args", nargs="*")
        p.add_argument("--dir", required=True, type=Path, help="the schedule's directory")
        p.add_argument("--notify-url")
        a = p.parse_args(argv[1:])
        return fire(a.name, a.dir, a.launcher_args, a.notify_url)
    p = _ScheduleParser(prog="launcher schedule", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    args = p.parse_args(argv)
    try:
        return cmd_schedule(args)
    except LauncherError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
