"""Hydra's own settings (`hydra.*` keys, `hydra/<group>` choices) under `launcher run`, on the command line
or in a config file: the few that mean something here, and a refusal, by name and with the reason, of
every other (Hydra would take them and the launcher would drop them without a word).

Read here: `hydra.searchpath` (Hydra's composition uses it), `hydra.sweeper.params` (Hydra's basic
sweeper: `-m` sweeps written in a config, see compose.sweep_points) and `hydra.job.env_set` (variables
of every stage's tasks, like a stage's `env`: plan.build_plan). The rest belongs to Hydra's job runtime
(output directories, logging, callbacks, the launcher and sweeper plugins), which does not run: the
launcher composes with Hydra and submits detached Slurm arrays."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from launcher.errors import ConfigError

HONOURED = ("hydra.searchpath", "hydra.sweeper.params", "hydra.job.env_set")
MODES = ("RUN", "MULTIRUN")  # hydra.types.RunMode

_READ = ("the hydra settings read are hydra.searchpath, hydra.sweeper.params (with -m) and "
         "+hydra.job.env_set.NAME=value")
_NO_FEEDBACK = ("`launcher run` submits every point at once as detached Slurm arrays and gets no results back, so "
                "a sweeper that picks the next points from the results of the last ones (optuna, nevergrad, ax, "
                "...) cannot work here; sweep a grid instead: -m key=a,b, range(), choice(), glob(), or "
                "hydra.sweeper.params")
_LAUNCHER = ("`launcher run` submits through its cluster profile (cluster=...), not through a Hydra launcher "
             "plugin; set resources per stage (pipeline.stages.<stage>.resources) or for every stage in the "
             "profile (cluster.resources)")
_RUN_DIR = ("runs go to run_root: <run_root>/<run id>/ holds the whole run, every sweep point in it (default "
            "$LAUNCHER_RUN_ROOT, else ./runs); set run_root=... (and run_name=...)")
_LOGGING = ("Hydra's logging settings configure its job runtime, which does not run here: each task's output "
            "goes to its Slurm log (`launcher logs <run> <stage>`); a stage's verbosity is its own option or "
            "env variable")
_HELP = "Hydra's help templates are an app's --help; see `launcher --help` and `launcher plan`"
_CALLBACKS = ("Hydra's callbacks run in the launching process around each job; the jobs here run detached on "
              "the cluster, so they would never be called")

# (key or group, why), the first that matches a key (itself or a key under it) wins: specific ones first.
_WHY = [
    ("hydra.sweeper.max_batch_size", "the basic sweeper's batches do not apply: every point of a stage goes into "
                                     "one array job (one sbatch call); cap how many of its tasks run at once with "
                                     "the stage's throttle"),
    ("hydra.sweeper", "only hydra.sweeper.params, of Hydra's basic sweeper, is read: " + _NO_FEEDBACK),
    ("hydra/launcher", _LAUNCHER),
    ("hydra.launcher", _LAUNCHER),
    ("hydra.run", _RUN_DIR),
    ("hydra.sweep", _RUN_DIR),
    ("hydra/output", _RUN_DIR),
    ("hydra.output_subdir", "no .hydra/ folder is written: each point's composed config is "
                            "<run>/config/points.json"),
    ("hydra.job.chdir", "tasks run in the run's code snapshot and write into their own output folder "
                        "($LAUNCHER_OUTPUT_DIR); there is no Hydra job directory to change into"),
    ("hydra.job.name", "a run is named by run_name=... (and its pipeline)"),
    ("hydra.job.env_copy", "tasks get the submitting shell's environment already (sbatch passes it on); to give "
                           "every stage's tasks a variable, use +hydra.job.env_set.NAME=value"),
    ("hydra.verbose", _LOGGING),
    ("hydra.job_logging", _LOGGING),
    ("hydra.hydra_logging", _LOGGING),
    ("hydra/job_logging", _LOGGING),
    ("hydra/hydra_logging", _LOGGING),
    ("hydra.mode", "a sweep is asked for with -m/--multirun (or hydra.mode=MULTIRUN on the command line)"),
    ("hydra.help", _HELP),
    ("hydra.hydra_help", _HELP),
    ("hydra/help", _HELP),
    ("hydra/hydra_help", _HELP),
    ("hydra.callbacks", _CALLBACKS),
    ("hydra/callbacks", _CALLBACKS),
]
# Set by Hydra itself while composing: never the user's.
_RUNTIME = ("hydra.runtime", "hydra.overrides", "hydra.job.override_dirname", "hydra.job.config_name")


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def problem(key: str, choice: Any = None) -> Optional[str]:
    """Why a hydra setting cannot be used (`key`: a dotted key, or a `hydra/<group>` whose option is
    `choice`); None for one that is read."""
    if key == "hydra/sweeper":
        return None if choice == "basic" else f"'{choice}' is not Hydra's basic sweeper, the only one usable: " \
                                              + _NO_FEEDBACK
    if any(_under(key, k) for k in HONOURED):
        return None
    for prefix, why in _WHY:
        if _under(key, prefix):
            return why
    return f"has no meaning for `launcher run` (it composes with Hydra and submits detached Slurm arrays, " \
           f"without Hydra's job runtime); {_READ}"


def read_mode(overrides: List[str], multirun: bool) -> tuple[List[str], bool]:
    """`hydra.mode=MULTIRUN` on the command line is `-m`, as in Hydra (`hydra.mode=RUN` is its default,
    and -m wins over it, as Hydra's --multirun does): (the overrides without it, multirun). A value
    that is not a RunMode is a usage error naming the key."""
    from launcher.errors import OverrideError

    rest = []
    for o in overrides:
        key, sep, value = o.partition("=")
        if not sep or key.lstrip("+") != "hydra.mode":
            rest.append(o)
            continue
        value = value.strip().strip("'\"")
        if value not in MODES:
            raise OverrideError(f"{' or '.join(MODES)}, got {value!r} (Hydra's RunMode; -m is MULTIRUN)",
                                key="hydra.mode")
        multirun = multirun or value == "MULTIRUN"
    return rest, multirun


def _leaves(key: str, value: Any) -> List[str]:
    """The keys a mapping override sets (`hydra.job={env_set: {A: b}}` sets hydra.job.env_set.A)."""
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(f"{key}.{k}", v)]
    return [key]


def override_problems(parsed, sweeps_allowed: bool = False) -> List[ConfigError]:
    """Every `hydra.*`/`hydra/…` override (Hydra's parsed Override objects) that cannot be used, by its
    key. A sweep over Hydra's own settings is refused as Hydra refuses it (`sweeps_allowed`: the
    overrides that hydra.sweeper.params makes, which Hydra's sweeper hands to each job one value at a
    time)."""
    errors = []
    for o in parsed:
        key = o.key_or_group
        if not (key == "hydra" or o.is_hydra_override()):
            continue
        if o.is_sweep_override() and not sweeps_allowed:
            errors.append(ConfigError(
                f"{o.input_line}: Hydra does not sweep its own settings (\"Sweeping over Hydra's configuration "
                f"is not supported\"); a value with commas is quoted: \"{o.get_key_element()}='a,b'\"", key=key))
            continue
        if "/" in key:  # a config group of Hydra's (its option: o.value(); None for a deletion)
            why = problem(key, None if o.is_delete() else o.value())
            if why:
                errors.append(ConfigError(why, key=key))
            continue
        value = None if o.is_sweep_override() else o.value()
        for leaf in _leaves(key, value):
            why = problem(leaf)
            if why:
                errors.append(ConfigError(why, key=leaf))
                break
    return errors


def _differences(node: Any, reference: Any, key: str) -> List[str]:
    if isinstance(node, dict) and isinstance(reference, dict):
        out = []
        for k in list(reference) + [k for k in node if k not in reference]:
            out += _differences(node.get(k, _MISSING), reference.get(k, _MISSING), f"{key}.{k}")
        return out
    return [] if node == reference else [key]


_MISSING = object()


def node_problems(node: Dict[str, Any], reference: Dict[str, Any]) -> List[ConfigError]:
    """What a composed `hydra` node (as plain containers, unresolved) sets that cannot be used: its
    config group choices and keys that differ from `reference` (Hydra's own, composed with no config
    and no override), so a setting made in a config file (`# @package _global_` with a `hydra:` node,
    `override /hydra/sweeper: ...` in a defaults list) is refused like the override would be."""
    errors = []
    choices, ref_choices = node["runtime"]["choices"], reference["runtime"]["choices"]
    for group in sorted(g for g in set(choices) | set(ref_choices) if g.startswith("hydra/")):
        if choices.get(group) != ref_choices.get(group) and (why := problem(group, choices.get(group))):
            errors.append(ConfigError(why, key=group))
    if errors:  # the group's own settings differ too: the group is the one to name
        return errors
    for key in _differences(node, reference, "hydra"):
        if not any(_under(key, k) for k in _RUNTIME) and (why := problem(key)):
            errors.append(ConfigError(why, key=key))
    return errors

