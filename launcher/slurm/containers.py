"""Stages in a container image through pyxis (`srun --container-image`), on the srun line only.

Where the flags go: `sbatch --container-image` would run the batch script itself in the image, which
has no Slurm (pyxis' `sbatch_support`), so the image is named on the step's srun line and the batch
script stays on the host. What the task needs inside the container is mounted at the same path
(pyxis `--container-mounts=SRC:DST[:FLAGS]`, comma-separated): the run root (markers, logs, outputs,
the code snapshot `<run>/code`), the hub cache and the secrets file (read-only) when the profile has
them, and the interpreter when it lives on the host (an environment built by `launcher env build`, or one without its own `python`).
`--container-workdir` is the run directory (pyxis would start in the image's $HOME otherwise).

The image need not have Slurm's clients: a task in a container asks the batch script (on the host) to
requeue or cancel it by its exit status (jobs.task REQUEUE_EXIT / CANCEL_EXIT, with
LAUNCHER_IN_CONTAINER=1), and the batch script calls `scontrol requeue` / `scancel`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

# jobs.task's exit statuses for "requeue me" and "count me as cancelled" (jobs/task.py)
REQUEUE_EXIT, CANCEL_EXIT = 75, 76


def _dst(mount: str) -> Tuple[str, str]:
    """(host path, container path) of one pyxis mount `SRC[:DST[:FLAGS]]` (DST defaults to SRC)."""
    parts = mount.split(":")
    src = parts[0]
    dst = parts[1] if len(parts) > 1 and parts[1] else src
    return src, dst


def _norm(path: str) -> str:
    return os.path.normpath(path) if path else path


def host_interpreter_paths(cluster: dict, env: Dict) -> List[str]:
    """Folders to mount so that a host interpreter runs inside the image: its prefix (the venv) and,
    for a venv, the base installation its `pyvenv.cfg` names (`home = <base>/bin`). Empty when the
    environment names its own `python` without `build`: that interpreter is inside the image."""
    spec = (cluster.get("environments") or {}).get(env.get("name") or "", {})
    if spec.get("python") and not spec.get("build"):
        return []
    prefix = os.path.dirname(os.path.dirname(env["python"]))
    out = [prefix]
    cfg = Path(prefix) / "pyvenv.cfg"
    if cfg.is_file():
        for line in cfg.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "home" and value.strip():
                out.append(os.path.dirname(value.strip().rstrip("/")))
    return out


def mounts(cluster: dict, env: Dict, run_dir: Path, read: Sequence[str] = ()) -> List[str]:
    """The `--container-mounts` list: the user's mounts first, then each path the task needs at the
    same path (run root, hub cache, secrets file, a host interpreter, the paths `read` read-only: a
    served model outside the run), unless a user mount or the run root already has that container path."""
    user = list(env.get("container_mounts") or [])
    taken = {_norm(_dst(m)[1]) for m in user}
    needed = [(str(Path(run_dir).parent), "")]
    if cluster.get("hub_cache"):
        needed.append((str(cluster["hub_cache"]), ""))
    if cluster.get("secrets_file"):  # jobs.task reads it at start; read-only
        needed.append((str(cluster["secrets_file"]), ":ro"))
    needed += [(p, "") for p in host_interpreter_paths(cluster, env)]
    root = _norm(str(Path(run_dir).parent))
    needed += [(p, ":ro") for p in read if not _norm(p).startswith(root.rstrip("/") + "/")]
    added = []
    for path, flags in dict.fromkeys((_norm(p), f) for p, f in needed):
        if path not in taken:
            added.append(f"{path}:{path}{flags}")
    return user + added


def srun_args(cluster: dict, env: Dict, run_dir: Path, workdir: Path, read: Sequence[str] = ()) -> List[str]:
    """pyxis flags for the step's srun line (never for sbatch). `workdir`: where the task starts inside
    the image (pyxis otherwise starts in the image's WORKDIR or /root): the run's code snapshot. `read`:
    host paths the task reads (Kind.container_paths), mounted read-only."""
    return [f"--container-image={env['container_image']}",
            f"--container-mounts={','.join(mounts(cluster, env, run_dir, read))}",
            f"--container-workdir={workdir}"]


def batch_lines() -> Tuple[List[str], List[str]]:
    """(setup, teardown) lines of the batch script of a container stage: the task learns it runs in a
    container; after the step, the batch script does on the host what the task asked for."""
    job = '"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"'
    setup = ["export LAUNCHER_IN_CONTAINER=1  # Slurm's clients are on the host: see the teardown",
             # jobs.adapters.torchrun (torchrun per node) needs the allocation's hosts; scontrol is not in the image
             'export LAUNCHER_NODE_HOSTS="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | paste -sd, -)"']
    teardown = [
        "launcher_rc=$?",
        f'if [ "$launcher_rc" -eq {REQUEUE_EXIT} ]; then scontrol requeue {job} '
        '|| echo "launcher: scontrol requeue failed" >&2; fi',
        f'if [ "$launcher_rc" -eq {CANCEL_EXIT} ]; then scancel {job}; fi',
        'exit "$launcher_rc"',
    ]
    return setup, teardown


def mount_problems(env: Dict, run_root: Path) -> List[Tuple[int, str]]:
    """User mounts that would hide the run directory in the container: a container path that is the
    run root or one of its parents, from another host path (the task would write its markers and
    outputs into that other folder, not the run's). [(index in container_mounts, message)]."""
    root = os.path.realpath(run_root)
    out = []
    for i, m in enumerate(env.get("container_mounts") or []):
        if not isinstance(m, str) or not m or m.startswith(":"):
            out.append((i, f"container mount {m!r} is not SRC[:DST[:FLAGS]]"))
            continue
        src, dst = _dst(m)
        if not os.path.isabs(dst):
            out.append((i, f"container mount {m!r}: the container path {dst!r} must be absolute"))
            continue
        d = _norm(dst)
        if (root == d or root.startswith(d.rstrip("/") + "/")) and os.path.realpath(src) != os.path.realpath(d):
            out.append((i, f"container mount {m!r} hides the run directory: its container path {d} is the run "
                           f"root {root} or a parent of it, but comes from another host path ({src}); mount it "
                           f"at the same path ({d}:{d}) or elsewhere"))
    return out


def pyxis_problem(srun_help: str) -> Optional[str]:
    """None when `srun --help` lists pyxis' --container-image, else why not."""
    if "--container-image" in srun_help:
        return None
    return ("the cluster has no container support: `srun --help` lists no --container-image (pyxis, the "
            "SPANK plugin, is not in the cluster's plugstack.conf)")
