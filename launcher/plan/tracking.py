"""Experiment tracking settings (`cluster.tracking`, a stage's `tracking`; launcher/config/schema.py Tracking):
merged (the stage's keys over the profile's), checked at plan time, handed to the tasks in their spec.
The writers run on the node, through the libraries' own integrations (jobs/adapters/tracking.py).

Not in the payload: tracking changes what is logged, not what is computed, so the stage hash and the
content keys stay those of an untracked run (a cached output is reused whether or not it was tracked).
Pure: plain config dicts in, errors or a spec part out. docs/tracking.md says what is written where."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from launcher import kinds
from launcher.errors import ConfigError

BACKENDS = ("tensorboard", "wandb", "mlflow", "none")
MODES = ("offline", "online")
# What a stage's interpreter must resolve for each backend (preflight, launcher/plan/preflight.py): the writer
# transformers' callback (and the evaluation's scalars) use.
TARGETS = {"tensorboard": "torch.utils.tensorboard:SummaryWriter", "wandb": "wandb:init", "mlflow": "mlflow:start_run"}
# online: the variable the library reads its key from, unless tracking.api_key names another
API_KEY_DEFAULT = {"wandb": "WANDB_API_KEY", "mlflow": "MLFLOW_TRACKING_TOKEN"}
FIELDS = ("backend", "project", "mode", "dir", "api_key", "uri")


def merged(cluster: Dict[str, Any], st: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """(the stage's tracking: its own keys over the profile's, defaults filled in; {field: the config key it
    came from}) for messages that name the key the operator wrote."""
    own, profile = st.get("tracking") or {}, cluster.get("tracking") or {}
    out: Dict[str, Any] = {}
    where: Dict[str, str] = {}
    for f in FIELDS:
        if own.get(f) is not None:
            out[f], where[f] = own[f], "stage"
        elif profile.get(f) is not None:
            out[f], where[f] = profile[f], "cluster"
        else:
            out[f] = None
    for f in FIELDS:  # a key left unset is named where the backend was chosen (the operator's choice)
        where.setdefault(f, where.get("backend", "stage"))
    out["backend"] = out["backend"] or "none"
    out["mode"] = out["mode"] or "offline"
    if out["backend"] in API_KEY_DEFAULT and not out["api_key"]:
        out["api_key"] = API_KEY_DEFAULT[out["backend"]]
    return out, where


def supported(st: Dict[str, Any]) -> Tuple[str, ...]:
    """The backends the stage's kind logs to (Kind.tracks); () for a kind that logs to none."""
    kind = st.get("kind")
    return kinds.get(kind).tracks(st) if kind in kinds.names() else ()


def resolve(cfg: Dict[str, Any], st: Dict[str, Any]) -> Dict[str, Any]:
    """The stage's settings as its tasks get them; {} when it tracks nothing (a kind without a tracker
    under a profile default counts as none: the profile's default is for the stages that can)."""
    t, _ = merged(cfg["cluster"], st)
    if t["backend"] == "none" or t["backend"] not in supported(st):
        return {}
    project = t["project"] or cfg.get("campaign")
    return {k: v for k, v in {**t, "project": project}.items() if v is not None}


def check(cfg: Dict[str, Any], errors: List[ConfigError]) -> None:
    """Append a ConfigError per bad tracking setting of the profile and of each stage of one composed
    config: an unknown backend or mode, a backend the stage's kind cannot log to (set on the stage),
    `online` where the profile says compute nodes are offline (cluster.compute_offline), online without
    an API key NAME among the secrets (cluster.secrets / secrets_file), mlflow online without a server."""
    from launcher.plan.secrets import secret_names

    cl = cfg["cluster"]
    prof = cl.get("tracking") or {}
    for f, choices in (("backend", BACKENDS), ("mode", MODES)):
        if prof.get(f) is not None and prof[f] not in choices:
            errors.append(ConfigError(f"unknown tracking {f} {prof[f]!r}; choose {' | '.join(choices)}",
                                      key=f"cluster.tracking.{f}"))
    secrets = None
    for name, st in (cfg["pipeline"].get("stages") or {}).items():
        t, where = merged(cl, st)

        def key(f: str) -> str:
            return f"pipeline.stages.{name}.tracking.{f}" if where[f] == "stage" else f"cluster.tracking.{f}"

        def bad(f: str, msg: str, k: Optional[str] = None) -> None:
            errors.append(ConfigError(msg, stage=name, key=k or key(f)))

        if t["backend"] not in BACKENDS:
            if where["backend"] == "stage":
                bad("backend", f"unknown tracking backend {t['backend']!r}; choose {' | '.join(BACKENDS)}")
            continue
        if t["mode"] not in MODES:
            if where["mode"] == "stage":
                bad("mode", f"unknown tracking mode {t['mode']!r}; choose {' | '.join(MODES)}")
            continue
        able = supported(st)
        if t["backend"] == "none" or t["backend"] not in able:
            if t["backend"] != "none" and where["backend"] == "stage":
                bad("backend", f"kind={st.get('kind')} " + (f"logs to {' | '.join(able)} only" if able else
                               "logs to no experiment tracker (the nanotron backend neither)") +
                    "; set tracking.backend to none on this stage")
            continue
        if t["mode"] == "online":
            if cl.get("compute_offline", True):
                bad("mode", f"tracking.mode=online, but cluster '{cl.get('name')}' says its compute nodes are "
                            f"offline (cluster.compute_offline: true): the {t['backend']} writer could not reach its "
                            f"server. Use mode=offline and upload the offline runs from the login node (launcher sync; "
                            f"docs/tracking.md), or set compute_offline: false in a profile whose nodes reach it")
                continue
            if t["backend"] == "tensorboard":
                bad("mode", "tensorboard writes event files only: mode=online means nothing to it (use offline)")
                continue
            if secrets is None:
                secrets = secret_names(cfg)
            if t["api_key"] not in secrets:
                bad("api_key", f"{t['backend']} online needs its API key: name the variable that holds it in "
                               f"cluster.secrets (or the secrets file), e.g. secrets: [{t['api_key']}]; tasks get it "
                               f"from the submitting shell by name (tracking.api_key names another variable)")
            if t["backend"] == "mlflow" and not t["uri"]:
                bad("uri", "mlflow online needs the tracking server: set tracking.uri (https://...)")
        elif t["uri"] and where["uri"] == "stage":
            bad("uri", "a tracking server is read online only; offline, mlflow writes a file store under the run "
                       "(tracking.dir)")


def spec_part(tracking: Dict[str, Any], run_id: str, points: List[List[str]]) -> Optional[Dict[str, Any]]:
    """What jobs/adapters/tracking.py reads from the stage spec: the settings, the run id (a tag) and
    every sweep point's overrides (parameters); None when the stage tracks nothing."""
    if not tracking:
        return None
    return {**tracking, "run_id": run_id, "points": [list(p) for p in points]}


def target(stage_name: str, tracking: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(config key, target) the stage's interpreter must resolve for its backend (preflight)."""
    b = (tracking or {}).get("backend")
    return [(f"pipeline.stages.{stage_name}.tracking.backend", TARGETS[b])] if b in TARGETS else []


def describe(stage_name: str, tracking: Dict[str, Any]) -> List[str]:
    """`launcher plan`'s line for a tracked stage: backend, mode, project and where the runs go."""
    if not tracking:
        return []
    where = (f"{tracking['dir']}/<run id>/{stage_name}" if tracking.get("dir")
             else f"<run>/stages/{stage_name}/tracking")
    where += "/mlruns (file store)" if tracking["backend"] == "mlflow" and tracking["mode"] == "offline" else "/<point>/"
    if tracking["backend"] == "mlflow" and tracking["mode"] == "online":
        where = tracking.get("uri", "")
    project = f", project {tracking['project']}" if tracking.get("project") else ""
    return [f"{stage_name}: tracking {tracking['backend']} ({tracking['mode']}{project}), one run per sweep point: "
            f"{where}"]
