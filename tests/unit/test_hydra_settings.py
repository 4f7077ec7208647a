"""Hydra's own settings under `launcher run` (launcher/config/hydra_settings.py): sweepers other than the basic
one and every `hydra.*` setting the launcher would drop are refused by name; hydra.sweeper.params
sweeps as Hydra's basic sweeper does; hydra.job.env_set reaches every stage's tasks through the secret
checks; hydra.searchpath keeps working."""
import json

import pytest
from omegaconf import OmegaConf

from launcher.plan import secrets
from launcher.cli import main
from launcher.config.compose import compose_points
from launcher.errors import ConfigError, ConfigErrors, OverrideError
from launcher.plan.model import build_plan

BASE = ["pipeline=smoke", "cluster=local"]
SCALE = "pipeline.vars.scale"

# A pipeline config that sets Hydra's settings: `# @package _global_`, its pipeline under `pipeline:`.
GLOBAL_PIPELINE = """\
# @package _global_
defaults:
  - smoke@pipeline
  - _self_
pipeline:
  name: {name}
hydra:
{hydra}
"""


def errors_of(*overrides, multirun=False, base=BASE):
    """(key, message) of each error composing and planning the overrides raise."""
    with pytest.raises((ConfigError, ConfigErrors)) as e:
        plan(*overrides, multirun=multirun, base=base)
    return _pairs(e.value)


def _pairs(e):
    return [(x.key, x.message) for x in (e.errors if isinstance(e, ConfigErrors) else [e])]


def plan(*overrides, multirun=False, base=BASE):
    points, configs = compose_points([*base, *overrides], multirun)
    errors = secrets.check(configs)
    if errors:
        raise ConfigErrors(errors)
    return points, configs, build_plan(configs, points)


@pytest.fixture
def conf(tmp_path):
    """A config folder for hydra.searchpath; conf(name, hydra_yaml) writes a global pipeline config."""
    (tmp_path / "pipeline").mkdir()

    def write(name: str, hydra: str) -> str:
        body = GLOBAL_PIPELINE.format(name=name, hydra="\n".join("  " + line for line in hydra.splitlines()))
        (tmp_path / "pipeline" / f"{name}.yaml").write_text(body)
        return f"hydra.searchpath=[file://{tmp_path}]"

    return write


# --- sweepers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("multirun", [False, True])
def test_a_sweeper_other_than_the_basic_one_is_refused_naming_the_override(multirun):
    # hydra-optuna-sweeper is not installed: the refusal does not depend on it
    (key, msg), = errors_of("hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", multirun=multirun)[:1]
    assert key == "hydra/sweeper" and "'optuna' is not Hydra's basic sweeper" in msg and "no results back" in msg


def test_an_optimizing_sweepers_option_is_refused_by_its_key():
    (key, msg), = errors_of("hydra.sweeper.n_trials=2", f"{SCALE}=1,2,3", multirun=True)
    assert key == "hydra.sweeper.n_trials" and "only hydra.sweeper.params" in msg


def test_the_basic_sweepers_batch_size_is_refused_with_what_to_use_instead():
    (key, msg), = errors_of("hydra.sweeper.max_batch_size=2", f"{SCALE}=1,2,3", multirun=True)
    assert key == "hydra.sweeper.max_batch_size" and "throttle" in msg


def test_the_basic_sweeper_named_explicitly_is_accepted():
    points, _, p = plan("hydra/sweeper=basic", f"{SCALE}=1,2", multirun=True)
    assert len(points) == 2 and p.stages["shards"].points == 2


def hydras_own_points(params: dict, task_overrides: list) -> list:
    """The reference: what Hydra's BasicSweeper.sweep makes of its params and the command line's task
    overrides (its own _parse_config and split_arguments)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = BasicSweeper(max_batch_size=None, params=params)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    return BasicSweeper.split_arguments(parser.parse_overrides(sweeper._parse_config() + task_overrides), None)[0]


@pytest.mark.parametrize("command_line", [
    [],                                    # the params alone
    ["seed=3,4"],                          # and a sweep of the command line's
    [f"{SCALE}=7,8"],                      # the command line's wins for the same key, at the params' place
    ["data=glob(*)", "run_name=x"],
])
def test_sweeper_params_in_a_config_sweep_as_hydras_basic_sweeper_does(conf, command_line):
    search = conf("swept", f"sweeper:\n  params:\n    {SCALE}: 1,2,3\n    pipeline.vars.fail_once_task: 0,1")
    task = ["pipeline=swept", "cluster=local", *command_line]
    points, configs, p = plan(*task[:2], search, *command_line, multirun=True, base=[])
    ours = [[t for t in point if not t.startswith("hydra.")] for point in points]
    assert ours == hydras_own_points({SCALE: "1,2,3", "pipeline.vars.fail_once_task": "0,1"}, task)
    assert p.stages["shards"].points == len(points) > 1
    scales = {c["pipeline"]["vars"]["scale"] for c in configs}
    assert scales == ({7, 8} if f"{SCALE}=7,8" in command_line else {1, 2, 3})


def test_sweeper_params_changed_on_the_command_line_where_hydra_allows_it(conf):
    search = conf("swept", f"sweeper:\n  params:\n    {SCALE}: 1,2,3")
    points, _, _ = plan("pipeline=swept", search, "+hydra.sweeper.params.seed='5,6'", multirun=True, base=[])
    assert len(points) == 6 and {t for p in points for t in p if t.startswith("seed=")} == {"seed=5", "seed=6"}


def test_sweeper_params_without_multirun_is_a_usage_error_like_a_sweep(conf):
    search = conf("swept", f"sweeper:\n  params:\n    {SCALE}: 1,2,3")
    with pytest.raises(OverrideError) as e:
        plan("pipeline=swept", search, base=[])
    assert e.value.key == "hydra.sweeper.params" and "-m" in e.value.message
    points, _, _ = plan("pipeline=swept", search, "hydra.sweeper.params=null", base=[])  # as the message says
    assert len(points) == 1


def test_sweeper_params_on_the_command_line_over_a_null_node_is_explained_not_a_nonetype_error():
    (key, msg), = errors_of("+hydra.sweeper.params.seed='1,2'", multirun=True)
    assert key == "hydra.sweeper.params" and "null in the config" in msg and "-m key=a,b" in msg


def test_a_sweep_over_hydras_own_settings_is_refused_as_hydra_refuses_it():
    (key, msg), = errors_of("hydra.sweeper.params.a=1,2", multirun=True)
    assert key == "hydra.sweeper.params.a" and "Sweeping over Hydra's configuration is not supported" in msg


# --- other hydra.* settings ------------------------------------------------------------------------

@pytest.mark.parametrize("override,key,words", [
    ("hydra.run.dir=/tmp/x", "hydra.run.dir", "set run_root="),
    ("hydra.sweep.dir=/tmp/x", "hydra.sweep.dir", "set run_root="),
    ("hydra.sweep.subdir=x", "hydra.sweep.subdir", "set run_root="),
    ("hydra.job.chdir=true", "hydra.job.chdir", "code snapshot"),
    ("hydra.job.name=x", "hydra.job.name", "run_name="),
    ("hydra.job.env_copy=[HOME]", "hydra.job.env_copy", "submitting shell's environment"),
    ("hydra.verbose=true", "hydra.verbose", "Slurm log"),
    ("hydra/job_logging=disabled", "hydra/job_logging", "Slurm log"),
    ("hydra/hydra_logging=disabled", "hydra/hydra_logging", "Slurm log"),
    ("hydra/launcher=basic", "hydra/launcher", "cluster profile"),
    ("hydra.mode=MULTIRUN", "hydra.mode", "-m/--multirun"),
    ("hydra.output_subdir=null", "hydra.output_subdir", "config/points.json"),
    ("hydra.job.id=3", "hydra.job.id", "the hydra settings read are"),
    ("hydra.job={chdir: true}", "hydra.job.chdir", "code snapshot"),
])
def test_a_hydra_setting_with_no_meaning_here_is_refused_by_name(override, key, words):
    (got, msg), = errors_of(override)
    assert got == key and words in msg, msg


@pytest.mark.parametrize("hydra,key", [
    ("job:\n  chdir: true", "hydra.job.chdir"),
    ("run:\n  dir: /tmp/elsewhere", "hydra.run.dir"),
    ("sweeper:\n  n_trials: 3", "hydra.sweeper.n_trials"),
])
def test_a_hydra_setting_in_a_config_file_is_refused_like_the_override(conf, hydra, key):
    (got, _), = errors_of("pipeline=cfg", conf("cfg", hydra), base=[])
    assert got == key


def test_a_hydra_group_chosen_in_a_config_files_defaults_is_refused_by_the_group(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "quiet.yaml").write_text(
        "# @package _global_\ndefaults:\n  - smoke@pipeline\n  - override /hydra/job_logging: disabled\n"
        "  - override /hydra/sweeper: optuna\n  - _self_\npipeline:\n  name: quiet\n")
    (key, msg), = errors_of("pipeline=quiet", f"hydra.searchpath=[file://{tmp_path}]", base=[])
    assert key == "hydra/sweeper" and "optuna" in msg  # not installed: refused all the same, by its group


def test_a_hydra_node_in_a_pipeline_config_is_pointed_to_the_global_package(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "nested.yaml").write_text(
        "defaults:\n  - smoke\n  - _self_\nname: nested\nhydra:\n  sweeper:\n    params:\n      seed: 1,2\n")
    (key, msg), = errors_of("pipeline=nested", f"hydra.searchpath=[file://{tmp_path}]", base=[])
    assert key == "pipeline.hydra" and "# @package _global_" in msg


def test_hydra_searchpath_still_finds_a_pipeline(conf):
    _, configs, _ = plan("pipeline=plain", conf("plain", "job:\n  env_set: {}"), base=[])
    assert configs[0]["pipeline"]["name"] == "plain"


# --- hydra.job.env_set -----------------------------------------------------------------------------

def test_env_set_is_every_stages_task_environment():
    points, configs, p = plan("+hydra.job.env_set.FOO=bar", f"{SCALE}=1,2", multirun=True)
    assert configs[0]["hydra"] == {"job": {"env_set": {"FOO": "bar"}}}
    assert {name: [pl["env"] for pl in s.payloads] for name, s in p.stages.items()} == \
        {name: [{"FOO": "bar"}] * 2 for name in p.stages}


def test_env_set_otherwise_leaves_each_point_as_hydra_composes_it():
    from hydra import compose as hydra_compose

    overrides = [*BASE, "+hydra.job.env_set.FOO=${pipeline.vars.scale}", f"{SCALE}=1,2"]
    points, configs = compose_points(overrides, True)
    for point, cfg in zip(points, configs):
        alone = OmegaConf.to_container(hydra_compose(config_name="config", overrides=point), resolve=True,
                                       enum_to_str=True)
        assert json.dumps({k: v for k, v in cfg.items() if k != "hydra"}) == json.dumps(alone)
    assert [c["hydra"]["job"]["env_set"]["FOO"] for c in configs] == ["1", "2"]  # resolved per point


def test_env_set_in_a_pipeline_config_reaches_the_tasks(conf):
    _, _, p = plan("pipeline=envs", conf("envs", "job:\n  env_set:\n    FROM_CONFIG: 'yes'"), base=[])
    assert all(s.payloads[0]["env"] == {"FROM_CONFIG": "yes"} for s in p.stages.values())


def test_env_set_and_a_stages_own_env_may_not_disagree():
    (key, msg), = errors_of("+hydra.job.env_set.FOO=1", "+pipeline.stages.shards.env.FOO=2")
    assert key == "hydra.job.env_set.FOO" and "pipeline.stages.shards.env.FOO" in msg
    _, _, p = plan("+hydra.job.env_set.FOO=1", "+pipeline.stages.shards.env.FOO=1")  # the same value: fine
    assert p.stages["shards"].payloads[0]["env"] == {"FOO": "1"}


def test_env_set_may_not_set_a_launcher_variable():
    (key, msg), = errors_of("+hydra.job.env_set.LAUNCHER_TASK_OFFSET=3")
    assert key == "hydra.job.env_set.LAUNCHER_TASK_OFFSET" and "launcher's own" in msg


def test_env_set_goes_through_the_secret_checks(monkeypatch):
    (key, msg), = errors_of("cluster.secrets=[HF_TOKEN]", "+hydra.job.env_set.HF_TOKEN=x")
    assert key == "hydra.job.env_set.HF_TOKEN" and "must not have a value in config" in msg
    monkeypatch.setenv("HF_TOKEN", "hf_unitTestToken0123456789")
    (key, msg), = errors_of("cluster.secrets=[HF_TOKEN]", "+hydra.job.env_set.URL=https://u:hf_unitTestToken0123456789@h")
    assert key == "hydra.job.env_set.URL" and "holds the value of secret HF_TOKEN" in msg


def test_env_set_changes_the_stage_hash_so_resume_sees_it():
    _, _, a = plan()
    _, _, b = plan("+hydra.job.env_set.FOO=bar")
    assert all(a.stages[n].hash != b.stages[n].hash for n in a.stages)


# --- exit codes ------------------------------------------------------------------------------------

def test_a_refused_hydra_setting_exits_like_other_bad_config(tmp_path, capsys):
    assert main(["plan", *BASE, "hydra.job.chdir=true", f"run_root={tmp_path}"]) == 1
    assert "hydra.job.chdir: tasks run in the run's code snapshot" in capsys.readouterr().err


def test_sweeper_params_without_multirun_exits_as_a_usage_error(conf, tmp_path, capsys):
    search = conf("swept", f"sweeper:\n  params:\n    {SCALE}: 1,2")
    assert main(["plan", "pipeline=swept", "cluster=local", search, f"run_root={tmp_path / 'runs'}"]) == 64
