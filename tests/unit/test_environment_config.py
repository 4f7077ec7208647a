"""Per-stage environments: resolution, rendering, preflight (issue 3)."""
import os
import sys

import pytest

from launcher.config.compose import compose
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan
from launcher.plan.preflight import preflight
from launcher.plan.render import build_requests, render_script

ENVS = ["+cluster.environments={a: {python: /usr/bin/python3}, b: {python: /no/such/python}}"]


def plan_of(*overrides, cluster="local"):
    return build_plan([compose(["pipeline=smoke", f"cluster={cluster}", *overrides])], [[]])


def test_stage_name_wins_over_kind_and_unmapped_stages_use_the_launchers_python():
    plan = plan_of(*ENVS, "+cluster.stage_environments.python=a", "+cluster.stage_environments.reduce=b")
    assert plan.stages["reduce"].environment["python"] == "/no/such/python"
    assert plan.stages["checkpointing"].environment["python"] == "/usr/bin/python3"  # kind=python
    assert plan.stages["shards"].environment["python"] == sys.executable  # kind=command: none mapped


def test_built_environment_python_lives_under_envs_dir():
    plan = plan_of("+cluster.stage_environments.reduce=smoke", "cluster.envs_dir=/opt/envs")
    assert plan.stages["reduce"].environment["python"] == "/opt/envs/smoke/bin/python"


def test_unknown_environment_names_stage_and_key():
    with pytest.raises(ConfigErrors) as e:
        plan_of("+cluster.stage_environments.reduce=nope")
    err = e.value.errors[0]
    assert (err.stage, err.key) == ("reduce", "cluster.stage_environments.reduce") and "not defined" in err.message


def test_container_setup_and_env_are_rendered():
    plan = plan_of("+cluster.environments={img: {container_image: /img/n.sqsh, container_mounts: ['/a:/a'], "
                   "setup: ['module load cuda'], env: {NCCL_DEBUG: WARN}, python: /opt/venv/bin/python}}",
                   "+cluster.stage_environments.reduce=img", cluster="dev")
    req = next(r for r in build_requests(plan, {"reduce": [0]}, 1001) if r.stage == "reduce")
    text = render_script(plan, req, "/runs/R", "R")
    assert "srun --unbuffered" in text and "--container-image=/img/n.sqsh --container-mounts=/a:/a" in text
    assert "export NCCL_DEBUG=WARN" in text and "module load cuda" in text
    assert "trap 'echo \"launcher: setup failed" in text and "/opt/venv/bin/python -u -m jobs.task" in text
    assert "export PYTHONPATH=/runs/R/code${PYTHONPATH" in text


def problems(plan, tmp_path):
    return [(e.stage, e.key, e.message) for e in preflight(plan, tmp_path, None)]


def test_preflight_missing_interpreter_and_unimportable_module(tmp_path):
    plan = plan_of("+cluster.environments={b: {python: /no/such/python}, c: {python: " + sys.executable
                   + ", imports: [no_such_module_xyz]}}", "+cluster.stage_environments.reduce=b",
                   "+cluster.stage_environments.fanout=c")
    found = problems(plan, tmp_path)
    assert ("reduce", "cluster.environments.b.python") in [(s, k) for s, k, _ in found]
    msg = next(m for s, k, m in found if s == "fanout")
    assert "cannot import no_such_module_xyz" in msg and "ModuleNotFoundError" in msg


def test_preflight_container_image(tmp_path):
    env = "+cluster.environments={img: {container_image: /no/such/image.sqsh}}"
    found = problems(plan_of(env, "+cluster.stage_environments.reduce=img", cluster="dev"), tmp_path)
    assert [(s, k) for s, k, _ in found] == [("reduce", "cluster.environments.img.container_image")]
    found = problems(plan_of(env, "+cluster.stage_environments.reduce=img"), tmp_path)  # cluster=local
    assert "need Slurm with pyxis" in found[0][2]


def test_preflight_secrets(tmp_path, monkeypatch):
    monkeypatch.delenv("LAUNCHER_TEST_SECRET", raising=False)
    found = problems(plan_of("cluster.secrets=[LAUNCHER_TEST_SECRET]"), tmp_path)
    assert [k for _, k, _ in found] == ["cluster.secrets.0"]
    monkeypatch.setenv("LAUNCHER_TEST_SECRET", "x")
    assert problems(plan_of("cluster.secrets=[LAUNCHER_TEST_SECRET]"), tmp_path) == []
    from launcher.plan import secrets

    monkeypatch.setenv("TEST_SECRET_XYZ", "x")
    found = secrets.check([compose(["pipeline=smoke", "cluster=local", "cluster.secrets=[TEST_SECRET_XYZ]",
                                    "+cluster.env.TEST_SECRET_XYZ=y"])])
    assert [e.key for e in found] == ["cluster.env.TEST_SECRET_XYZ"]


def test_env_build_is_idempotent(tmp_path):
    from launcher.config import environments

    cluster = compose(["cluster=local", f"cluster.envs_dir={tmp_path}"])["cluster"]
    said = []
    environments.build(cluster, "smoke", echo=said.append)
    assert os.path.exists(tmp_path / "smoke" / "bin" / "python") and environments.build_state(cluster, "smoke") == "built"
    said.clear()
    environments.build(cluster, "smoke", echo=said.append)
    assert said == [said[0]] and "nothing to do" in said[0]


def test_preflight_imports_with_the_path_tasks_inherit(tmp_path, monkeypatch):
    """The batch script appends the submitting shell's PYTHONPATH after the snapshot; preflight's
    import check must see the same modules (sibling: a target in that folder)."""
    import sys

    from launcher.config.environments import interpreter_problems

    (tmp_path / "shellpkg").mkdir()
    (tmp_path / "shellpkg" / "__init__.py").write_text("def f():\n    return 1\n")
    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    monkeypatch.delenv("PYTHONPATH", raising=False)
    missing = interpreter_problems(sys.executable, ["shellpkg"], ["shellpkg:f"], pythonpath=[snapshot])
    assert set(missing) == {"shellpkg", "shellpkg:f"}
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert interpreter_problems(sys.executable, ["shellpkg"], ["shellpkg:f"], pythonpath=[snapshot]) == {}


def test_a_clean_interpreter_answer_is_kept_until_what_it_depends_on_changes(tmp_path, monkeypatch):
    """launcher/config/environments.py _known_good: the second identical check starts no interpreter;
    a changed file on the path, a problem, or LAUNCHER_INTERPRETER_CACHE=0 asks again."""
    from launcher.config import environments

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(environments.INTERPRETER_CACHE, raising=False)
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "__init__.py").write_text("")
    (code / "pkg" / "mod.py").write_text("def f():\n    return 1\n")
    asked = []
    real_ask = environments._ask
    monkeypatch.setattr(environments, "_ask", lambda *a: asked.append(a[2]) or real_ask(*a))

    def check(*targets):
        return environments.interpreter_problems(sys.executable, ["json"], list(targets), [code])

    assert check("pkg.mod:f") == {} and check("pkg.mod:f") == {} and len(asked) == 1
    (code / "pkg" / "mod.py").write_text("def g():\n    return 1\n")  # f is gone: a new size
    assert "pkg.mod:f" in check("pkg.mod:f") and len(asked) == 2
    assert "pkg.mod:f" in check("pkg.mod:f") and len(asked) == 3  # a problem is never kept
    assert check("pkg.mod:g") == {} and check("pkg.mod:g") == {} and len(asked) == 4
    monkeypatch.setenv(environments.INTERPRETER_CACHE, "0")
    assert check("pkg.mod:g") == {} and len(asked) == 5


def test_the_package_list_is_kept_while_the_interpreter_and_its_site_packages_are_unchanged(tmp_path, monkeypatch):
    """environments.packages (what run records per interpreter, environments.json) starts the
    interpreter once; a change of its site-packages folders (pip install/uninstall) or of $PYTHONPATH
    lists again."""
    import subprocess
    import sys

    from launcher.config import environments

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    state = [sys.executable, 1, 2, [("site-packages", 3)]]
    monkeypatch.setattr(environments, "_interpreter_state", lambda python: list(state))
    started = []
    real_run = subprocess.run
    monkeypatch.setattr(environments.subprocess, "run", lambda *a, **k: started.append(a) or real_run(*a, **k))
    first = environments.packages(sys.executable)
    assert environments.packages(sys.executable) == first and len(started) == 1
    assert any(p.startswith("pytest==") for p in first)
    state[3] = [("site-packages", 4)]  # a package installed
    environments.packages(sys.executable)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    environments.packages(sys.executable)
    assert len(started) == 3
