"""Hub references in stage configs, with the standard library only: `hf://org/name[@revision]` (a model)
or `hf://datasets/org/name[@revision]`, and where a fetched one lies in a Hugging Face hub cache
(`<cache>/<type>s--org--name/refs/<revision>` holds the commit; `snapshots/<commit>/` the files)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple, Optional

from jobs import layout

REF = re.compile(r"^hf://(?P<datasets>datasets/)?(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w.-]+))?$")


class Ref(NamedTuple):
    repo_id: str
    repo_type: str  # model | dataset
    revision: str

    def __str__(self) -> str:
        return f"hf://{'datasets/' if self.repo_type == 'dataset' else ''}{self.repo_id}@{self.revision}"


def parse(value: str) -> Optional[Ref]:
    m = REF.match(value) if isinstance(value, str) else None
    if not m:
        return None
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
