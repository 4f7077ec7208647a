"""The project's templates (top-level templates/: the HTML report, the model card, the scrontab
entry, the built-in chat template, the fixed defaults of the nanotron and accelerate configs), for
both sides. The code snapshot carries templates/ next to jobs/, so a task finds them at the same
relative place (<run>/code/templates).

Rendering uses Jinja2 with StrictUndefined (a missing variable is an error, never an empty string),
HTML autoescaping for *.html(.j2) templates only, a `shquote` filter (shlex.quote) for shell lines and a `json` filter (json.dumps, sorted keys).
jinja2 and pyyaml are imported when used, not at import time.
"""
from __future__ import annotations

import functools
import json
import shlex
from pathlib import Path
from typing import Any, Dict

TEMPLATES_DIR = Path(__file__).resolve().parent.parent.parent / "templates"


@functools.lru_cache(maxsize=None)
def environment():
    """The one Jinja2 environment of templates/ (cached)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
                             undefined=jinja2.StrictUndefined, autoescape=jinja2.select_autoescape(["html", "html.j2"]),
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["shquote"] = lambda v: shlex.quote(str(v))
    env.filters["json"] = lambda v: json.dumps(v, sort_keys=True)  # plain JSON (tojson escapes for HTML)
    return env


def render(template: str, /, **context: Any) -> str:
    """templates/<template> rendered with `context`. Raises jinja2.UndefinedError for a variable the
    template uses but the context lacks, jinja2.TemplateNotFound for an unknown name."""
    return environment().get_template(template).render(**context)


def text(name: str) -> str:
    """templates/<name> as it is (e.g. a chat template, which its own consumer renders)."""
    return (TEMPLATES_DIR / name).read_text(encoding="utf-8")


def yaml_defaults(name: str) -> Dict[str, Any]:
    """templates/<name> (YAML) as a dict, key order kept: fixed defaults a config starts from."""
    import yaml

    return yaml.safe_load(text(name)) or {}
