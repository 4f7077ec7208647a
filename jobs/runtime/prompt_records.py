"""The prompt records of kind=generate, for both sides: where they come from (a JSONL file, a datatrove
folder, or the seed lists of a Cosmopedia-style prompt builder), which array task gets which record,
their request ids, and the prompt template rendered per record. Standard library only at import
(jinja2 is imported when a template is rendered): the login node uses it to check a template against
the first record before submission, the task to build its requests.

Sources (generate.input / generate.seeds):
  a .jsonl / .jsonl.gz file   one JSON object per line; the id is record[id_key], else "<file name>:<line>"
                              (0-based physical line: the same file always gives the same ids)
  a folder                    datatrove's JSONL output (*.jsonl, *.jsonl.gz, recursively, sorted by path):
                              {"text", "id", "metadata"} lines flattened to {**metadata, "text", "id"}
  seeds                       topics x styles x audiences (x per_combination), in an order shuffled by
                              seeds.seed, cut to seeds.limit; ids "seed-<topic>-<style>-<audience>-<k>" by index

Sharding: the record at global position i (counting every line or seed record) belongs to array task
i % tasks, so a shard never depends on the file layout and every task reads the same order."""
from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import random
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz")


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")


def input_files(source: str) -> List[Path]:
    """The files of a source: itself (a file) or the JSONL files under a folder, sorted by path.
    FileNotFoundError when it does not exist or a folder holds none."""
    p = Path(source)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"{source} does not exist")
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(JSONL_SUFFIXES)
                   and not any(part.startswith(".") for part in f.relative_to(p).parts))
    if not files:
        raise FileNotFoundError(f"{source} holds no JSONL files ({', '.join('*' + s for s in JSONL_SUFFIXES)})")
    return files


def _flatten(rec: Dict[str, Any]) -> Dict[str, Any]:
    """A datatrove Document line ({"text", "id", "metadata": {...}}) as one flat record."""
    meta = rec.get("metadata")
    if isinstance(meta, dict) and "text" in rec:
        return {**meta, **{k: v for k, v in rec.items() if k != "metadata"}}
    return rec


def raw_records(source: str) -> Iterator[Tuple[Path, int, str, Dict[str, Any]]]:
    """(file, 0-based line number, the line's fallback id '<file>:<line>', record as read) of every
    record of a file or folder, in order; blank lines skipped. ValueError names the file and line of a
    line that is not a JSON object."""
    root = Path(source) if Path(source).is_dir() else None
    for f in input_files(source):
        name = str(f.relative_to(root)) if root else f.name
        with _open(f) as fh:
            for line_no, line in enumerate(fh):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{f} line {line_no + 1} is not JSON: {e}") from None
                if not isinstance(rec, dict):
                    raise ValueError(f"{f} line {line_no + 1} is not a JSON object: {line[:80]!r}")
                yield f, line_no, f"{name}:{line_no}", rec


def file_records(source: str, id_key: str = "id") -> Iterator[Tuple[int, str, Dict[str, Any]]]:
    """(global position, request id, record) of every record of a file or folder, in order, a datatrove
    Document's metadata flattened into it. ValueError names the file and line of a line that is not a
    JSON object."""
    for pos, (_, _, fallback, rec) in enumerate(raw_records(source)):
        rec = _flatten(rec)
        rid = rec.get(id_key)
        yield pos, (str(rid) if rid is not None and rid != "" else fallback), rec


def seed_records(seeds: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    """Cosmopedia's scheme: every (topic, style, audience) combination, per_combination times, shuffled
    by seeds.seed (the same seed, the same list on every machine), the first seeds.limit kept.
    Each record: {"topic", "style", "audience", "sample"} (sample: 0..per_combination-1)."""
    topics, styles, audiences = (list(seeds.get(k) or [""]) for k in ("topics", "styles", "audiences"))
    combos = [(t, s, a, k) for (t, s, a), k in itertools.product(itertools.product(topics, styles, audiences),
                                                                  range(int(seeds.get("per_combination") or 1)))]
    random.Random(int(seeds.get("seed") or 0)).shuffle(combos)
    if seeds.get("limit") is not None:
        combos = combos[:int(seeds["limit"])]
    index = {k: {v: i for i, v in enumerate(vals)} for k, vals in (("t", topics), ("s", styles), ("a", audiences))}
    return [(f"seed-{index['t'][t]}-{index['s'][s]}-{index['a'][a]}-{k}",
             {"topic": t, "style": s, "audience": a, "sample": k}) for t, s, a, k in combos]


def shard(g: Dict[str, Any], index: int, tasks: int) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """(request id, record) of array task `index` of `tasks`: the records at positions i % tasks == index."""
    if g.get("seeds"):
        items = ((i, rid, rec) for i, (rid, rec) in enumerate(seed_records(g["seeds"])))
    else:
        items = file_records(g["input"], g.get("id_key") or "id")
    for pos, rid, rec in items:
        if pos % tasks == index:
            yield rid, rec


def first_record(g: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The first record of the whole input (what the template is checked against), None if it is empty."""
    for _, rec in shard(g, 0, 1):
        return rec
    return None


def request_seed(seed: Optional[int], rid: str) -> Optional[int]:
    """The sampling seed of one request: derived from the stage's seed and the request id, so a request
    samples the same whatever its shard, batch or attempt (None: unseeded)."""
    if seed is None:
        return None
    return int.from_bytes(hashlib.sha256(f"{seed}:{rid}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def template_text(g: Dict[str, Any], templates_dir: Path) -> str:
    """The prompt template: generate.prompt_file (under templates/) when set, else generate.prompt."""
    if g.get("prompt_file"):
        return (templates_dir / g["prompt_file"]).read_text(encoding="utf-8")
    return g["prompt"]


def compile_template(text: str):
    """A Jinja2 template with StrictUndefined: a variable the record lacks is an error, never ''."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
    return env.from_string(text)


def template_problem(text: str, record: Dict[str, Any]) -> str:
    """Why the template does not render for this record ('' if it does): a syntax error or an
    undefined variable, with the record's keys."""
    import jinja2

    try:
        compile_template(text).render(**record)
    except jinja2.TemplateSyntaxError as e:
        return f"the prompt template is not valid Jinja2 (line {e.lineno}): {e.message}"
    except jinja2.UndefinedError as e:
        return f"{e.message} in the prompt template; the first input record has the keys {sorted(record)}"
    return ""


def guided_schema(guided: Dict[str, Any]) -> Any:
    """guided.json as a JSON value (a mapping, or a JSON string parsed). ValueError if the string is not JSON."""
    schema = guided.get("json")
    if isinstance(schema, str):
        try:
            return json.loads(schema)
        except ValueError as e:
            raise ValueError(f"not JSON: {e}") from None
    return schema


def schema_problem(schema: Any) -> str:
    """Why a JSON schema is not valid ('' if it is): jsonschema's check_schema against the schema's own
    metaschema (draft 2020-12 when it names none). Where jsonschema is not installed (the login node's
    launcher install), only the shape is checked: a JSON schema is an object or a boolean."""
    if not isinstance(schema, (dict, bool)):
        return f"a JSON schema is an object or a boolean, got {type(schema).__name__}"
    try:
        import jsonschema
    except ImportError:
        return ""
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.exceptions.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top)"
        return f"not a valid JSON schema at {where}: {e.message}"
    return ""


def main() -> int:
    """`python -m jobs.runtime.prompt_records` with a schema on stdin: the check run in a stage's
    environment (where jsonschema is); prints {"problem": ..., "checked": "jsonschema" | "shape"}."""
    import sys

    try:
        import jsonschema  # noqa: F401
        checked = "jsonschema"
    except ImportError:
        checked = "shape"
    print(json.dumps({"problem": schema_problem(json.load(sys.stdin)), "checked": checked}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
