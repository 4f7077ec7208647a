"""Hub references in stage configs, with the standard library only: `hf://org/name[@revision]` (a model)
or `hf://datasets/org/name[@revision]`, and where a fetched one lies in a Hugging Face hub cache
(`<cache>/<type>s--org--name/refs/<revision>` holds the commit; `snapshots/<commit>/` the files)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple, Optional

from jobs import layout

PREFIX = "hf://"
REF = re.compile(r"^hf://(?P<datasets>datasets/)?(?P<repo>[^@]*)(?:@(?P<rev>.*))?$", re.S)
# huggingface_hub's validate_repo_id (with the namespace required here): org/name, each 1-96 of [A-Za-z0-9_.-], starting and ending
# with a letter or digit, no "--" or "..", not ending in ".git".
_REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


class Ref(NamedTuple):
    repo_id: str
    repo_type: str  # model | dataset
    revision: str

    def __str__(self) -> str:
        return f"hf://{'datasets/' if self.repo_type == 'dataset' else ''}{self.repo_id}@{self.revision}"


def repo_id_problem(repo_id: str) -> Optional[str]:
    """Why `repo_id` is not an org/name the hub accepts (None if it is)."""
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(_REPO_PART.match(p) for p in parts):
        return (f"repo id {repo_id!r} must be org/name, each 1-96 letters, digits, '_', '.', '-' that start and end "
                f"with a letter or digit")
    if "--" in repo_id or ".." in repo_id or repo_id.endswith(".git"):
        return f"repo id {repo_id!r} must not hold '--' or '..' nor end in '.git'"
    return None


def revision_problem(rev: str) -> Optional[str]:
    """Why `rev` is not a revision the hub could have (None if it could): a branch (slashes allowed:
    feature/x), a tag, a pull request or conversion ref (refs/pr/1, refs/convert/parquet), or a
    commit hash, full or short. Branch and tag names follow git's rules (git-check-ref-format(1))."""
    if not rev:
        return "the revision after '@' is empty"
    why = None
    if _CONTROL.search(rev):
        why = "spaces, control characters and ~ ^ : ? * [ \\ are not allowed"
    elif rev == "@" or "@{" in rev or ".." in rev:
        why = "'@', '@{' and '..' are not allowed"
    elif rev.startswith("/") or rev.endswith(("/", ".")) or "//" in rev:
        why = "it must not start or end with '/', end with '.', or hold '//'"
    elif any(part.startswith(".") or part.endswith(".lock") for part in rev.split("/")):
        why = "no part between slashes may start with '.' or end with '.lock'"
    return f"revision {rev!r} is not a git ref or commit: {why}" if why else None


def problem(value: str) -> Optional[str]:
    """Why a string that starts with hf:// is not a hub reference (None if it is one, or is no hf://
    string at all)."""
    if not isinstance(value, str) or not value.startswith(PREFIX):
        return None
    m = REF.match(value)
    repo, rev = m.group("repo"), m.group("rev")
    if repo.startswith(("spaces/", "models/")) and not m.group("datasets"):
        return f"{value!r}: only models (hf://org/name) and datasets (hf://datasets/org/name) can be fetched"
    why = repo_id_problem(repo) or (revision_problem(rev) if rev is not None else None)
    return f"{value!r} is not a hub reference (hf://[datasets/]org/name[@revision]): {why}" if why else None


def parse(value: str) -> Optional[Ref]:
    """hf://org/name[@revision] or hf://datasets/org/name[@revision] → Ref (revision default `main`);
    None for any other string, and for an hf:// string that is not valid (`problem` says why)."""
    if not isinstance(value, str) or not value.startswith(PREFIX) or problem(value):
        return None
    m = REF.match(value)
    return Ref(m.group("repo"), "dataset" if m.group("datasets") else "model", m.group("rev") or "main")


def refs_in(node: Any) -> list:
    """Every hub reference among the strings of a config node."""
    out: list = []
    layout.map_strings(node, lambda s: out.append(parse(s)) or s)
    return [r for r in dict.fromkeys(out) if r]


def repo_folder(cache: str | Path, ref: Ref) -> Path:
    return Path(cache) / f"{ref.repo_type}s--{ref.repo_id.replace('/', '--')}"


def snapshot(cache: str | Path, ref: Ref) -> Optional[Path]:
    """The cached snapshot folder of ref (None if it is not in the cache)."""
    folder = repo_folder(cache, ref)
    commit = ref.revision
    refs_file = folder / "refs" / ref.revision
    if refs_file.is_file():
        commit = refs_file.read_text().strip()
    path = folder / "snapshots" / commit
    return path if path.is_dir() else None


def resolve(node: Any, cache: Optional[str]) -> Any:
    """node with every hub reference replaced by its cached snapshot folder; a reference that is not
    cached is an error naming it (the fetch stage should have put it there)."""
    def one(s: str) -> str:
        ref = parse(s)
        if ref is None:
            return s
        if not cache:
            raise FileNotFoundError(f"{s}: the cluster profile sets no hub_cache to find it in")
        path = snapshot(cache, ref)
        if path is None:
            raise FileNotFoundError(f"{s} is not in the hub cache {cache} (was the fetch stage run?)")
        return str(path)

    return layout.map_strings(node, one)
