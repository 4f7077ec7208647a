"""Code snapshot: tasks import the code as it was at submission, not as it is when they start.

At submission the compute-side package `jobs` and each path of `pipeline.code` are copied to
`<run>/code/<name>`. Tasks start in that folder and have it (and each code folder in it) first on
PYTHONPATH (render.py), so nothing a task imports comes from the submission directory.

What is left out of a code path (`listing`):
- what git ignores, when the path lies in a git work tree and `git` runs (`git ls-files --others
  --ignored --exclude-standard --directory`: .gitignore, .git/info/exclude, core.excludesFile);
- always: version control and cache folders (.git, __pycache__, .pytest_cache, ...), `*.pyc`,
  virtual environments (any folder holding `pyvenv.cfg` or `conda-meta/`, and `.venv`, `.envs`),
  the run root, and folders named `outputs`, `multirun` (Hydra's), `runs` (the launcher's default
  run root) or `wandb` that are not Python packages (no `__init__.py`).
A code path may hold at most `pipeline.code_max_mb` MB and MAX_FILES files after these exclusions
(`check`, at plan time): the snapshot is copied into every run.
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from launcher.config.compose import PROJECT_ROOT
from launcher.errors import ConfigError

MAX_FILES = 20_000
# Folder names never copied, whatever git says.
EXCLUDE_DIRS = (".git", ".hg", ".svn", "__pycache__", ".venv", ".envs", ".tox", ".nox", ".pytest_cache",
                ".mypy_cache", ".ruff_cache", ".ipynb_checkpoints", "*.egg-info")
# Folder names copied only when they are Python packages: Hydra's outputs/ and multirun/, the
# launcher's default run root, wandb's run folders.
EXCLUDE_UNLESS_PACKAGE = ("outputs", "multirun", "runs", "wandb")
EXCLUDE_FILES = ("*.pyc", "*.pyo")
# Top-level names the snapshot root holds itself: a code path imported under one of them would be
# shadowed by (or would shadow) the launcher's own package.
RESERVED = ("jobs",)
# Other folders the snapshot root holds for the launcher: the node-side templates.
OWN_FOLDERS = ("templates",)


class TooBig(Exception):
    def __init__(self, size: int, files: int):
        self.size, self.files = size, files
        super().__init__(f"{size} bytes in {files} files")


def code_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "code"


def pythonpath_of(root: Path, extra: Sequence[str]) -> List[Path]:
    """The tasks' import path for a snapshot at `root`: the root (the jobs package, each code path by
    its name), then each code folder (its modules import as top-level names)."""
    return [Path(root)] + [Path(root) / Path(p).name for p in extra if Path(p).is_dir()]


def pythonpath(run_dir: Path, extra: Sequence[str]) -> List[Path]:
    """Snapshot root (the jobs package, user files) plus each user directory inside it."""
    return pythonpath_of(code_dir(run_dir), extra)


def import_name(path: str) -> str:
    """The top-level name a code path is imported as: a folder's name, a module's name without its
    suffixes (`utils.py`, `fast.cpython-311-x86_64-linux-gnu.so` -> `utils`, `fast`), else the file name."""
    p = Path(path)
    if p.is_dir():
        return p.name
    return p.name.split(".", 1)[0] if p.suffix in (".py", ".so", ".pyd") else p.name


def _git_ignored(src: Path) -> Optional[Set[str]]:
    """Paths under folder `src` (relative, POSIX, folders ending in '/') that git ignores; None when
    `src` is not in a git work tree or git cannot say (not installed, a repository of another user)."""
    try:
        p = subprocess.run(["git", "-C", str(src), "ls-files", "-z", "--others", "--ignored", "--exclude-standard",
                            "--directory"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    # Inside an ignored folder (generated code under build/, named on purpose) git lists nothing:
    # only the fixed exclusions apply there.
    return set(filter(None, p.stdout.split("\0")))


def _is_env(d: Path) -> bool:
    return (d / "pyvenv.cfg").is_file() or (d / "conda-meta").is_dir()


def listing(src: Path, exclude: Iterable[Path] = (), max_bytes: Optional[float] = None,
            max_files: Optional[int] = None) -> List[Tuple[Path, str]]:
    """The files a snapshot of `src` holds: [(source file, path relative to the snapshot of src)],
    sorted. A file gives [(src, src.name)]. Symbolic links are followed (a link to shared code is
    copied as that code); dangling links and loops are skipped. `exclude`: folders never entered
    (the run root). Raises TooBig as soon as the files pass `max_bytes` or `max_files`."""
    src = Path(src)
    if not src.is_dir():
        if max_bytes is not None and src.stat().st_size > max_bytes:
            raise TooBig(src.stat().st_size, 1)
        return [(src, src.name)]
    ignored = _git_ignored(src) or set()
    excluded = {os.path.realpath(e) for e in exclude}
    out: List[Tuple[Path, str]] = []
    size = 0
    # Per folder walked, the real folders on its way down: a link back to one of them is a loop.
    chains: Dict[str, frozenset] = {str(src): frozenset({os.path.realpath(src)})}
    for top, dirs, files in os.walk(src, followlinks=True):
        rel = os.path.relpath(top, src)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        keep = []
        for d in sorted(dirs):
            path = Path(top) / d
            real = os.path.realpath(path)
            if (any(fnmatch.fnmatch(d, pat) for pat in EXCLUDE_DIRS) or {prefix + d + "/", prefix + d} & ignored
                    or real in excluded or real in chains[top] or _is_env(path)
                    or (d in EXCLUDE_UNLESS_PACKAGE and not (path / "__init__.py").is_file())):
                continue
            chains[str(path)] = chains[top] | {real}
            keep.append(d)
        dirs[:] = keep
        for f in sorted(files):
            path = Path(top) / f
            if any(fnmatch.fnmatch(f, pat) for pat in EXCLUDE_FILES) or prefix + f in ignored:
                continue
            try:
                st = path.stat()
            except OSError:  # a dangling link
                continue
            out.append((path, prefix + f))
            size += st.st_size
            if (max_bytes is not None and size > max_bytes) or (max_files is not None and len(out) > max_files):
                raise TooBig(size, len(out))
    return sorted(out, key=lambda x: x[1])


def check(code: Sequence[str], run_root: Optional[str] = None, max_mb: float = 50.0) -> List[ConfigError]:
    """Every problem with the `pipeline.code` paths (absolute), each naming its key `pipeline.code.<i>`:
    missing, unreadable, over the size limit, or colliding with another path or with the launcher's
    own `jobs` package once copied into the one snapshot folder."""
    errors: List[ConfigError] = []
    key = "pipeline.code.{}".format
    names: Dict[str, int] = {}  # name in the snapshot root -> index
    imports: Dict[str, int] = {}  # top-level import name -> index
    for i, path in enumerate(code):
        if not os.path.exists(path):
            errors.append(ConfigError(f"code path {path} does not exist", key=key(i)))
            continue
        name, mod = Path(path).name, import_name(path)
        if name in OWN_FOLDERS:
            errors.append(ConfigError(
                f"code path {path} is named '{name}', like the launcher's own folder in the snapshot "
                f"(<run>/code/{name}): one would replace the other; rename it or list its parent", key=key(i)))
            continue
        if name in names:
            j = names[name]
            what = (f"code path {path} is listed twice ({key(j)} and {key(i)})" if code[j] == path else
                    f"code paths {code[j]} ({key(j)}) and {path} ({key(i)}) are both named '{name}'")
            errors.append(ConfigError(
                f"{what}: the snapshot holds each code path under its name (<run>/code/{name}), so one would replace "
                f"the other; list their common parent, or rename one", key=key(i)))
            continue
        names[name] = i
        if mod in RESERVED:
            errors.append(ConfigError(
                f"code path {path} would be imported as '{mod}', the name of the launcher's own package in the "
                f"snapshot (<run>/code/jobs): tasks would import one in place of the other; rename it", key=key(i)))
        elif mod in imports:
            j = imports[mod]
            errors.append(ConfigError(
                f"code paths {code[j]} ({key(j)}) and {path} ({key(i)}) are both imported as '{mod}': "
                f"tasks could import only one of them; rename one", key=key(i)))
        imports.setdefault(mod, i)
        if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "__init__.py")):
            # A folder of modules: it is on the tasks' path too, after the snapshot root.
            for r in RESERVED:
                if os.path.exists(os.path.join(path, r)) or os.path.exists(os.path.join(path, r + ".py")):
                    errors.append(ConfigError(
                        f"code folder {path} holds '{r}', which tasks would never import: the launcher's own "
                        f"package of that name comes first on their path; rename it", key=key(i)))
        try:
            files = listing(Path(path), [run_root] if run_root else [], max_bytes=max_mb * 1e6, max_files=MAX_FILES)
        except TooBig as e:
            errors.append(ConfigError(
                f"code path {path} holds more than {max_mb:g} MB or {MAX_FILES} files ({e.size / 1e6:.3g} MB in "
                f"{e.files} files so far) once git-ignored files, virtual environments and Hydra outputs are left "
                f"out; every run copies it: list only the code folders, let git ignore data and checkpoints, or raise "
                f"pipeline.code_max_mb", key=key(i)))
            continue
        unreadable = [f for f, _ in files if not os.access(f, os.R_OK)]
        if unreadable:
            errors.append(ConfigError(f"code path {path} has {len(unreadable)} file(s) this user cannot read, e.g. "
                                      f"{unreadable[0]}", key=key(i)))
    return errors


def _sources(extra: Sequence[str], exclude: Iterable[Path]) -> List[Tuple[Path, str]]:
    """(source file, path in the snapshot) of the jobs package and every code path."""
    files = [(f, f"jobs/{rel}") for f, rel in listing(PROJECT_ROOT / "jobs")]
    # node-side templates (model card, chat template): jobs.runtime.templating finds them next to jobs/
    files += [(f, f"templates/{rel}") for f, rel in listing(PROJECT_ROOT / "templates")]
    for p in map(Path, extra):
        files += [(f, f"{p.name}/{rel}" if p.is_dir() else rel) for f, rel in listing(p, exclude)]
    return files


def take(run_dir: Path, extra: Sequence[str], exclude: Iterable[Path] = ()) -> Dict[str, object]:
    """Copy the compute-side package `jobs` and the pipeline's `code` paths into <run_dir>/code,
    atomically (an earlier snapshot, on `resume --force`, is kept as code.<time>). Returns the
    snapshot's id (a digest of every path and content) and its sources."""
    dest = code_dir(run_dir)
    tmp = dest.with_name(".code.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    digest = hashlib.sha256()
    for src, rel in sorted(_sources(extra, exclude), key=lambda x: x[1]):
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
        digest.update(rel.encode() + b"\0" + target.read_bytes())
    if dest.exists():
        os.replace(dest, dest.with_name(f"code.{int(time.time())}"))
    os.replace(tmp, dest)
    return {"id": digest.hexdigest()[:16], "sources": [str(PROJECT_ROOT / "jobs"), str(PROJECT_ROOT / "templates"),
                                                  *map(str, extra)]}


@contextlib.contextmanager
def view(extra: Sequence[str], exclude: Iterable[Path] = ()) -> Iterator[Path]:
    """A temporary folder laid out like the snapshot `take` would make now, of links to the files
    themselves: preflight imports from it exactly what the tasks will be able to import."""
    with tempfile.TemporaryDirectory(prefix="launcher-code-") as tmp:
        for src, rel in _sources(extra, exclude):
            target = Path(tmp) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # colliding paths: check() reports them
                os.symlink(os.path.abspath(src), target)
        yield Path(tmp)
