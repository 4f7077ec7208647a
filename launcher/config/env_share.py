"""Files from a package's source distribution, copied into a built environment after pip has installed
it: what a wheel leaves out and a stage needs (llama.cpp's HF -> GGUF converter: llama-cpp-python
installs the compiled library, not the converter script that sits beside it in its sdist).

conf/envs/<build>.share.txt, one line each (# comments):

    <distribution> <path in its sdist, under the top folder> <destination under the environment>
    llama-cpp-python vendor/llama.cpp/convert_hf_to_gguf.py share/llama.cpp/convert_hf_to_gguf.py

The sdist is the one of the version pip installed in that environment (importlib.metadata there), got
with `pip download --no-binary :all: --no-deps <dist>==<version>` from the index pip installed from
(its cache answers a repeat). Each destination is replaced whole (a folder through a temporary name).
The file is one of the environment's requirement files: editing it makes the environment outdated."""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, List, Tuple

from launcher.errors import LauncherError


def entries(path: Path) -> List[Tuple[str, str, str]]:
    """(distribution, path in the sdist, destination) of each line. LauncherError on a malformed line,
    or a path that leaves its folder (.., absolute)."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 3 or any(w.startswith("/") or ".." in Path(w).parts for w in words[1:]):
            raise LauncherError(f"{path}:{n}: want `<distribution> <path in its sdist> <destination under the "
                                f"environment>` (relative paths), got {line.strip()!r}")
        out.append((words[0], words[1], words[2]))
    return out


def installed_version(python: Path, dist: str) -> str:
    p = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise LauncherError(f"{dist} is not installed in {python.parent.parent} (a .share.txt line names it): "
                            f"{p.stderr.strip()[-300:]}")
    return p.stdout.strip()


def download_sdist(python: Path, requirement: str, into: Path) -> Path:
    p = subprocess.run([str(python), "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
                        "--no-binary", ":all:", "--no-deps", requirement, "-d", str(into)],
                       capture_output=True, text=True, timeout=1800)
    found = sorted(into.glob("*.tar.gz")) + sorted(into.glob("*.zip"))
    if p.returncode != 0 or not found:
        raise LauncherError(f"pip download of the source distribution {requirement} failed: "
                            f"{(p.stderr.strip().splitlines() or ['(no output)'])[-1]}")
    return found[0]


def extract(sdist: Path, members: List[Tuple[str, str]], target: Path) -> None:
    """Copy each (path in the sdist, destination) out of the archive into target, replacing it."""
    with tempfile.TemporaryDirectory(prefix="launcher-share-") as tmp, tarfile.open(sdist) as tar:
        top = tar.getmembers()[0].name.split("/")[0]
        for src, dest in members:
            wanted = [m for m in tar.getmembers() if m.name == f"{top}/{src}" or m.name.startswith(f"{top}/{src}/")]
            if not wanted:
                raise LauncherError(f"{sdist.name} has no {src}")
            tar.extractall(tmp, members=wanted, filter="data")
            final = target / dest
            final.parent.mkdir(parents=True, exist_ok=True)
            staged = final.with_name(f".{final.name}.new")
            shutil.rmtree(staged, ignore_errors=True)
            shutil.move(os.path.join(tmp, top, src), staged)
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(staged, final)


def install(target: Path, share_file: Path, echo: Callable = print) -> None:
    """Every line of share_file into the environment at target (its bin/python must exist)."""
    python = target / "bin" / "python"
    by_dist: dict = {}
    for dist, src, dest in entries(share_file):
        by_dist.setdefault(dist, []).append((src, dest))
    for dist, members in by_dist.items():
        requirement = f"{dist}=={installed_version(python, dist)}"
        with tempfile.TemporaryDirectory(prefix="launcher-sdist-") as tmp:
            sdist = download_sdist(python, requirement, Path(tmp))
            extract(sdist, members, target)
        echo(f"{target.name}: from the source distribution {sdist.name}: " + ", ".join(d for _, d in members))
