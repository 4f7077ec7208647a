"""What a stage kind is on the login node: a Kind (one module per kind, launcher/kinds/<kind>.py) whose
attributes say what it can do (capabilities) and whose hooks the generic code calls instead of testing
the kind's name. Every hook has a default that does nothing, so a kind overrides only what it needs.

Where each hook is called:
    launcher/plan/model.py        check_before_expansion, expands_into, expand_pipeline, check_pipeline,
                            check_config, check_in_dag, sweep_keys, payload_keys, multi_process
    launcher/plan/ignored.py     reads, only_for (options the kind would silently ignore)
    launcher/plan/secrets.py     secret_variables
    launcher/plan/tracking.py    tracks
    launcher/plan/model.py        environment_name (the stage's environment)
    launcher/plan/render.py      environment (hub_access), multi_process (srun), spec_extra, client_spec, container_paths,
                            files, runner, reads_stage_outputs, output_layout, provides_endpoint
    launcher/plan/preflight.py   preflight, targets, downloads_hub_refs, fetched_refs
    launcher/cli.py         describe (`launcher plan`)
    launcher/run/ops.py         provides_endpoint (resume brings a client's server back)
    launcher/config/schema.py      section, schema (Stage has one field per kind section)

Kinds import no stage library (the login node runs them) and no other kind module."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from launcher.errors import ConfigError


class Problems:
    """Collects ConfigErrors of one stage in the form "stage 'x': pipeline.stages.x.<key>: message".

    p = Problems("train", errors); p.add("train.tokens", "must be >= 1")."""

    def __init__(self, stage: str, errors: List[ConfigError]):
        self.stage, self.errors = stage, errors

    @property
    def key(self) -> str:
        return f"pipeline.stages.{self.stage}"

    def add(self, key: str, message: str) -> None:
        """`key` relative to the stage (train.tokens); "" for the stage itself."""
        self.errors.append(ConfigError(message, stage=self.stage, key=f"{self.key}.{key}" if key else self.key))

    def add_at(self, key: str, message: str) -> None:
        """A problem of this stage at a key outside it (cluster.hub_cache) or given whole."""
        self.errors.append(ConfigError(message, stage=self.stage, key=key))

    def __bool__(self) -> bool:
        return any(e.stage == self.stage for e in self.errors)


class Kind:
    """A stage kind on the login node. Subclasses set `name` and override what they need.

    Config hooks take the stage's plain config (`st`: a dict, every field of launcher.config.schema.Stage);
    plan hooks take the StagePlan (`stage`, with `payloads`: one dict per sweep point holding the
    generic payload keys and the kind's `payload_keys`) and the Plan."""

    name: str = ""
    # The config section the kind owns (a field of Stage) and its dataclass; None: no section.
    section: Optional[str] = None
    schema: Optional[type] = None
    # Stage keys (besides command, target, params, env) its tasks get in their payload and the stage
    # hash covers.
    payload_keys: Tuple[str, ...] = ()
    # Stage keys its tasks read: a set option of another kind's section is refused (launcher/plan/ignored.py).
    # None: its payload_keys.
    reads: Optional[Tuple[str, ...]] = None
    # Within a section it reads: (the field that chooses, {value: fields only that value reads}).
    only_for: Dict[str, List[Tuple[str, Dict[Any, Tuple[str, ...]]]]] = {}
    # The node module that runs its tasks (jobs/kinds/base.py Runner); None: jobs.kinds.<name>.
    runner_module: Optional[str] = None
    # Hugging Face Hub from its tasks: "none" (HF_HUB_OFFLINE=1), "inherit" (the submitting shell's
    # setting) or "write" (HF_HUB_OFFLINE=0); the last two also get cluster.hub_endpoint as HF_ENDPOINT.
    hub_access: str = "none"
    # It downloads the hf:// references its payload names (they need not be in the cache before).
    downloads_hub_refs: bool = False
    # A server: stages that wait on it with `after` get its endpoint (LAUNCHER_ENDPOINT_<STAGE>), and
    # a resumed client brings it back.
    provides_endpoint: bool = False
    # Its task runs again although it has a completion marker (a server).
    reruns_when_complete: bool = False
    # How its output folder is laid out: "task" (one folder per task) or "datatrove" (one datatrove
    # folder per sweep point, keyed by the stage hash).
    output_layout: str = "task"
    # Its tasks train and write the live progress file (jobs/runtime/progress.py): the stage may set
    # `watchdog.stall_s` (the hang watchdog: stacks, kill, in-job restart, requeue; launcher/plan/watchdog.py).
    hang_watchdog: bool = False
    # It scores its one parent's checkpoints, writing stages/<stage>/evals/<point>/step-<N>.json: a
    # parent's checkpoint retention keeps each checkpoint until it is scored (launcher/plan/retention.py).
    scores_checkpoints: bool = False
    # Modules its interpreter must import on every node before the work (the node health check).
    health_imports: Tuple[str, ...] = ()
    # Its strings may name other stages' outputs ({input:<stage>}): the spec carries their hashes.
    reads_stage_outputs: bool = False
    # Sweep points with equal content keys may share one task (launcher/plan/keys.py). False for work whose
    # effect is not its output folder: a server (clients meet it per point), a publication.
    shares_points: bool = True

    @property
    def runner(self) -> str:
        return self.runner_module or f"jobs.kinds.{self.name}"

    def read_keys(self) -> Tuple[str, ...]:
        return self.payload_keys if self.reads is None else self.reads

    # -- plan: before the stages are expanded ---------------------------------------------------------
    def check_before_expansion(self, p: Problems, st: Dict[str, Any]) -> None:
        """Checks of a stage that expand_pipeline replaces (it is gone afterwards)."""

    def expands_into(self, name: str) -> List[str]:
        """The stage names a stage of this kind becomes (empty: it stays itself)."""
        return []

    def expand_pipeline(self, plain: List[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], Dict[str, str]]:
        """Every kind is asked, in registry order, with the composed configs of all sweep points (any
        kind's stages): new configs (not modified in place) and aliases (a replaced stage -> the stage
        that ends it)."""
        return plain, {}

    def check_pipeline(self, cfg: Dict[str, Any], errors: List[ConfigError]) -> None:
        """Every kind is asked, with one composed config before expansion: pipeline-wide checks."""

    # -- plan: checks ---------------------------------------------------------------------------------
    def check_config(self, p: Problems, st: Dict[str, Any]) -> None:
        """Checks of the stage's own config (called for every stage, whatever the DAG)."""

    def check_in_dag(self, p: Problems, st: Dict[str, Any], stages: Dict[str, Dict[str, Any]],
                     ancestors: set) -> None:
        """Checks that need the other stages (parents, ancestors): once the DAG is sound, in
        topological order. May complete `st` (an inline model gets its defaults)."""

    def sweep_keys(self) -> Tuple[str, ...]:
        """Dotted keys of the stage (besides the structural ones) that must be equal across sweep
        points: one array job is launched one way."""
        return ()

    def multi_process(self, st: Dict[str, Any]) -> bool:
        """Its tasks start torchrun or accelerate on every node (srun --kill-on-bad-exit, a rendezvous
        port). `st`: the stage's config or one payload (the kind's sections)."""
        return False

    def whole_model_checkpoints(self, st: Dict[str, Any]) -> bool:
        """Its checkpoints are whole Hugging Face models (an evaluate stage may follow it)."""
        return False

    def retains_checkpoints(self, st: Dict[str, Any]) -> bool:
        """Its tasks write Trainer `checkpoint-N` folders with markers (jobs/runtime/checkpoints.py) and
        prune them by `retention` (jobs/runtime/retention.py)."""
        return False

    def checkpoint_runs(self, plan, stage) -> Dict[str, List[Any]]:
        """whole_model_checkpoints: {"seeds": [per sweep point], "schedules": [per point: tokens_per_step,
        ...]} that an evaluation of its checkpoints records (jobs/kinds/evaluate.py)."""
        raise NotImplementedError(f"kind {self.name} has no checkpoints to evaluate")

    def tracks(self, st: Dict[str, Any]) -> Tuple[str, ...]:
        """The experiment trackers its tasks log to (launcher/plan/tracking.py: tracking.backend), () for none."""
        return ()

    def secret_variables(self, name: str, st: Dict[str, Any]) -> Dict[str, str]:
        """{variable: config key} of the submitting shell's variables its tasks inherit as secrets."""
        return {}

    def environment_name(self, st: Dict[str, Any]) -> Optional[str]:
        """The environment this stage's config asks for (serve.engine=llama.cpp: llamacpp), used when
        the profile defines it and maps no environment to the stage's name; None: the kind's mapping."""
        return None

    # -- submission -----------------------------------------------------------------------------------
    def environment(self, cluster: Dict[str, Any]) -> Dict[str, str]:
        """Variables its tasks' script exports (before the cluster's and the stage's own env). The
        default: the Hugging Face Hub as `hub_access` says, and the shared hub cache. Offline by
        default; "write" (publish) always needs the hub; "inherit" (fetch) keeps the submitting shell's
        setting (offline, it serves what the cache holds: how the tests run it)."""
        env = {"inherit": {}, "write": {"HF_HUB_OFFLINE": "0"}}.get(self.hub_access, {"HF_HUB_OFFLINE": "1"})
        if cluster.get("hub_cache"):
            env["HF_HUB_CACHE"] = cluster["hub_cache"]
        if self.hub_access != "none" and cluster.get("hub_endpoint"):
            env["HF_ENDPOINT"] = cluster["hub_endpoint"]
        return env

    def spec_extra(self, plan, stage) -> Dict[str, Any]:
        """What the node needs beyond the generic spec (launcher/plan/render.py stage_spec)."""
        return {}

    def client_spec(self, stage) -> Dict[str, Any]:
        """provides_endpoint: what a client's spec says of this server (besides its hash)."""
        return {}

    def container_paths(self, stage) -> List[str]:
        """Host paths its tasks read that a container image must see (mounted at the same path, read-only):
        a model outside the run directory."""
        return []

    def files(self, plan, stage, run_dir: Path, run_id: str) -> Dict[Path, str]:
        """{path: text} written beside the spec at submission (configs the node reads)."""
        return {}

    # -- preflight ------------------------------------------------------------------------------------
    def preflight(self, plan, stage) -> List[ConfigError]:
        """Checks against the login node's filesystem and shell (inputs exist, scripts parse, tokens).
        Reads the plan as build_plan made it, not its content keys or cached points: it runs beside
        them (launcher/plan/preflight.py check_common)."""
        return []

    def targets(self, stage) -> List[Tuple[str, str]]:
        """(config key, target) every task resolves in the stage's environment: checked there first."""
        return []

    def fetched_refs(self, stage) -> Sequence[Any]:
        """downloads_hub_refs: the hub references (jobs.adapters.hub_refs.Ref) it downloads."""
        return []

    # -- content keys (launcher/plan/keys.py) -------------------------------------------------------------
    def reads_from(self, payload: Dict[str, Any], parents: List[str]) -> List[str]:
        """The stages whose outputs a task of this kind can read (their keys go into its key): every
        parent (a task gets LAUNCHER_INPUT_<PARENT> for each) and any stage its strings name
        ({input:<stage>}). A kind whose work sees folders only through placeholders narrows it."""
        return list(dict.fromkeys(parents + placeholder_stages(payload, parents)))

    def code_modules(self, payload: Dict[str, Any]) -> Optional[List[str]]:
        """Top-level import names of `pipeline.code` its work can run; None: every code path (a shell
        command or a library config may import any of them)."""
        return None

    # -- `launcher plan` ------------------------------------------------------------------------------
    def describe(self, plan, stage, plan_dir: Path) -> List[str]:
        """Paragraphs `launcher plan` prints for this stage."""
        return []


def placeholder_stages(payload: Dict[str, Any], parents: List[str]) -> List[str]:
    """The stages a payload's strings name through folder placeholders: {input} is the first parent,
    {input:<stage>} that stage (an expanded stage's name as written: keys.py resolves aliases)."""
    from jobs import layout

    found: List[str] = []

    def note(text: str) -> str:
        for what, ref in layout.PLACEHOLDER.findall(text):
            if what == "input" and (ref or parents):
                found.append(ref or parents[0])
        return text

    layout.map_strings(payload, note)
    return list(dict.fromkeys(found))


# Preflight reads a data file line by line up to this many bytes (~2-5 s of JSON parsing on a login
# node); the lines after that are checked on the compute node only, when the task loads them.
DATA_CHECK_MAX_BYTES = 256 * 1024 * 1024
