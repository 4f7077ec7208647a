"""Hydra's answers kept between commands (launcher/config/hydra_facts.py): a command whose config files did
not change composes without starting Hydra, and its configs equal a composition by Hydra; a changed
config file, or a kept file that does not load, makes Hydra answer again."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = """
import json, sys
from pathlib import Path
from hydra.core.global_hydra import GlobalHydra
from launcher.config import compose
path = None if sys.argv[1] == "-" else Path(sys.argv[1])
with compose.kept_facts(path):
    points, configs = compose.compose_points(json.loads(sys.argv[2]), True)
print(json.dumps({"points": points, "configs": configs, "hydra": GlobalHydra.instance().is_initialized()}))
"""
SWEEP = ["pipeline=ablation", "data=fineweb_like,raw", "seed=1,2", "cluster=local", "run_root=runs/x",
         "pipeline.vars.seq_len=64"]


def compose_in_a_process(facts, overrides, cwd, env=None) -> dict:
    p = subprocess.run([sys.executable, "-c", PROGRAM, str(facts) if facts else "-", json.dumps(overrides)],
                       capture_output=True, text=True, cwd=cwd, env=env, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


@pytest.fixture
def env(monkeypatch, tmp_path):
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_a_second_command_composes_without_hydra_and_equals_hydras_composition(tmp_path, env):
    """From another working directory too: the relative run_root resolves against the second one
    (${abspath:}, registered by the launcher, works without Hydra's initialization)."""
    facts = tmp_path / "facts.pkl"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = compose_in_a_process(facts, SWEEP, tmp_path, env)
    by_hydra = compose_in_a_process(None, SWEEP, elsewhere, env)
    second = compose_in_a_process(facts, SWEEP, elsewhere, env)
    assert by_hydra["hydra"] and first["hydra"] and facts.is_file()
    assert not second["hydra"], "every answer was kept: Hydra should not have started"
    assert second["configs"] == by_hydra["configs"] and len(second["configs"]) == 4
    assert second["points"] == by_hydra["points"]
    assert second["configs"][0]["data"]["source"] == str(elsewhere / "data" / "demo-corpus") != first["configs"][0]["data"]["source"]


def test_a_question_not_kept_yet_is_asked_of_hydra_and_added(tmp_path, env):
    """Another set of config-group choices (model=tiny) than the kept one: Hydra composes that base, and
    the next command with it needs Hydra no more; a glob() sweep lists the group's options through Hydra."""
    facts = tmp_path / "facts.pkl"
    compose_in_a_process(facts, SWEEP, tmp_path, env)
    other = [*SWEEP, "model=tiny"]
    assert compose_in_a_process(facts, other, tmp_path, env)["hydra"]
    again = compose_in_a_process(facts, other, tmp_path, env)
    assert not again["hydra"] and again["configs"] == compose_in_a_process(None, other, tmp_path, env)["configs"]
    globbed = compose_in_a_process(facts, ["pipeline=smoke", "cluster=local", "data=glob(*)"], tmp_path, env)
    assert globbed["hydra"] and [p[-1] for p in globbed["points"]] == ["data=fineweb_like", "data=quality", "data=raw"]


def test_a_changed_config_file_or_a_broken_kept_file_is_composed_by_hydra_again(tmp_path, env, monkeypatch):
    from launcher.config import configdirs
    from launcher.run import compose_cache

    confs = tmp_path / "confs"
    (confs / "data").mkdir(parents=True)
    mine = confs / "data" / "mine.yaml"
    mine.write_text("defaults:\n  - fineweb_like\n  - _self_\nrecipe: first\n")
    env = {**env, "LAUNCHER_CONFIG_DIRS": str(confs), "LAUNCHER_STATE_DIR": str(tmp_path / "state")}
    monkeypatch.setenv("LAUNCHER_CONFIG_DIRS", str(confs))
    monkeypatch.setenv("LAUNCHER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    configdirs.use(None)
    overrides = ["pipeline=smoke", "cluster=local", "data=mine"]
    facts = compose_cache.facts_path()
    compose_in_a_process(facts, overrides, tmp_path, env)
    assert not compose_in_a_process(facts, overrides, tmp_path, env)["hydra"]
    mine.write_text(mine.read_text().replace("first", "second"))
    changed = compose_cache.facts_path()
    assert changed != facts
    out = compose_in_a_process(changed, overrides, tmp_path, env)
    assert out["hydra"] and out["configs"][0]["data"]["recipe"] == "second"
    changed.write_bytes(b"not a pickle")
    out = compose_in_a_process(changed, overrides, tmp_path, env)
    assert out["hydra"] and out["configs"][0]["data"]["recipe"] == "second"


def test_the_fingerprints_cover_the_stage_kinds_installed_packages_add(monkeypatch, tmp_path):
    """A plugin kind's section is part of the schema: adding one (or changing its module) is a new key."""
    from launcher import kinds
    from launcher.run import compose_cache

    monkeypatch.setenv("LAUNCHER_STATE_DIR", str(tmp_path))
    before = compose_cache.facts_path(), compose_cache.key(["pipeline=smoke"], False)
    monkeypatch.setattr(kinds, "plugins", lambda: {"toy": "json.decoder:JSONDecoder"})
    after = compose_cache.facts_path(), compose_cache.key(["pipeline=smoke"], False)
    assert None not in before and after[0] != before[0] and after[1] != before[1]


def test_a_composition_that_copies_environment_variables_is_not_kept(tmp_path):
    """hydra.job.env_copy copies variables of the composing process into hydra.job.env_set: such a base
    holds values of this environment, which the fingerprint does not cover."""
    from omegaconf import OmegaConf

    from launcher.config import hydra_facts

    def composed(copy):
        return lambda: OmegaConf.create({"hydra": {"job": {"env_copy": copy, "env_set": {}}, "runtime": {"cwd": "/x"}}})

    facts = hydra_facts.Facts(tmp_path / "f.pkl")
    facts.base(("a=1",), composed(["HOME"]))
    facts.base(("a=2",), composed([]))
    assert ("a=1",) not in facts.bases and ("a=2",) in facts.bases
    facts.save()
    again = hydra_facts.Facts(tmp_path / "f.pkl")
    assert again.base(("a=2",), composed(["never called"])).hydra.runtime.cwd != "/x"  # this process's


CACHED = """
import json, sys
from launcher.run import compose_cache
print(json.dumps(compose_cache.compose_points(json.loads(sys.argv[1]), True)[1]))
"""


def test_a_composition_with_a_searchpath_is_kept_by_neither_cache(tmp_path, env):
    """hydra.searchpath (here from the command line; a config file may set it too) adds a folder that no
    fingerprint covers: a change to a config file there must show in the next command's configs."""
    searched = tmp_path / "searched" / "model"
    searched.mkdir(parents=True)
    extra = searched / "extra.yaml"
    extra.write_text((ROOT / "conf" / "model" / "tiny.yaml").read_text())
    overrides = ["pipeline=smoke", "cluster=local", f"hydra.searchpath=[file://{searched.parent}]", "model=extra"]
    env = {**env, "LAUNCHER_STATE_DIR": str(tmp_path / "state")}
    facts = tmp_path / "facts.pkl"

    def cached() -> dict:
        p = subprocess.run([sys.executable, "-c", CACHED, json.dumps(overrides)], capture_output=True, text=True,
                           cwd=tmp_path, env=env, check=False)
        assert p.returncode == 0, p.stderr[-3000:]
        return json.loads(p.stdout)[0]

    assert compose_in_a_process(facts, overrides, tmp_path, env)["configs"][0]["model"]["hidden_size"] == 64
    assert cached()["model"]["hidden_size"] == 64
    extra.write_text(extra.read_text().replace("hidden_size: 64", "hidden_size: 96"))
    assert compose_in_a_process(facts, overrides, tmp_path, env)["configs"][0]["model"]["hidden_size"] == 96
    assert cached()["model"]["hidden_size"] == 96


SEARCH_PATH_PLUGIN = '''
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class SiteConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="site-configs", path="file://{folder}")
'''


def test_a_search_path_plugins_folder_is_kept_by_neither_cache(tmp_path, env):
    """An installed SearchPathPlugin (a site's package of configs) adds a folder to Hydra's config search
    path that no fingerprint covers, without any hydra.searchpath: a change to a config file there must
    show in the next command's configs, through both caches."""
    site = tmp_path / "site"
    (site / "model").mkdir(parents=True)
    extra = site / "model" / "extra.yaml"
    extra.write_text((ROOT / "conf" / "model" / "tiny.yaml").read_text())
    plugin = tmp_path / "installed" / "hydra_plugins" / "site_configs"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text(SEARCH_PATH_PLUGIN.format(folder=site))
    env = {**env, "PYTHONPATH": f"{ROOT}:{tmp_path / 'installed'}", "LAUNCHER_STATE_DIR": str(tmp_path / "state")}
    overrides = ["pipeline=smoke", "cluster=local", "model=extra"]

    def cached() -> dict:
        p = subprocess.run([sys.executable, "-c", CACHED, json.dumps(overrides)], capture_output=True, text=True,
                           cwd=tmp_path, env=env, check=False)
        assert p.returncode == 0, p.stderr[-3000:]
        return json.loads(p.stdout)[0]

    facts = tmp_path / "facts.pkl"
    assert compose_in_a_process(facts, overrides, tmp_path, env)["configs"][0]["model"]["hidden_size"] == 64
    assert not facts.exists(), "a composition through a plugin's folder was kept"
    assert cached()["model"]["hidden_size"] == 64
    extra.write_text(extra.read_text().replace("hidden_size: 64", "hidden_size: 96"))
    assert compose_in_a_process(facts, overrides, tmp_path, env)["configs"][0]["model"]["hidden_size"] == 96
    assert cached()["model"]["hidden_size"] == 96


def test_the_fingerprints_cover_hydras_plugins(monkeypatch, tmp_path):
    """A Hydra plugin adds config groups (its ConfigStore entries) or search path folders: installing one,
    or changing its module, is a new key for both caches."""
    from launcher.run import compose_cache

    monkeypatch.setenv("LAUNCHER_STATE_DIR", str(tmp_path / "state"))
    before = compose_cache.facts_path(), compose_cache.key(["pipeline=smoke"], False)
    plugin = tmp_path / "installed" / "hydra_plugins" / "site_launcher"
    plugin.mkdir(parents=True)
    module = plugin / "__init__.py"
    module.write_text("# a plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path / "installed"))
    installed = compose_cache.facts_path(), compose_cache.key(["pipeline=smoke"], False)
    module.write_text("# a plugin, upgraded\n")
    upgraded = compose_cache.facts_path(), compose_cache.key(["pipeline=smoke"], False)
    assert None not in before + installed + upgraded
    assert len({before[0], installed[0], upgraded[0]}) == 3 and len({before[1], installed[1], upgraded[1]}) == 3
