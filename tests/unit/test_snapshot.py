"""The code snapshot (launcher/plan/snapshot.py): what it holds and leaves out, its limits, and preflight
importing exactly what it will hold (issue 15, fault 1; issue 16, name collisions)."""
import os
import subprocess
import sys

import pytest

from launcher.plan import snapshot
from launcher.config.compose import compose
from launcher.config.environments import packages
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan
from launcher.plan.preflight import check_environments


def tree(root, files):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


CLUTTER = {
    "outputs/2026-01-01/10-00-00/.hydra/config.yaml": "a: 1\n",  # Hydra's
    "multirun/2026-01-01/10-00-00/0/log.txt": "x\n",
    ".git/HEAD": "ref: refs/heads/main\n",
    "venv/pyvenv.cfg": "home = /usr/bin\n", "venv/lib/site.py": "",  # a virtual environment, whatever its name
    "conda/conda-meta/history": "", "conda/lib/x.py": "",
    ".venv/lib/y.py": "",
    "__pycache__/mod.cpython-311.pyc": "", "sub/__pycache__/a.cpython-311.pyc": "", "stale.pyc": "",
    "runs/20260101-smoke/run.json": "{}\n",  # the launcher's default run root
    ".pytest_cache/v/x": "", "mypkg.egg-info/PKG-INFO": "",
}
CODE = {"mod.py": "", "sub/a.py": "", "wandb/__init__.py": "", "wandb/writer.py": "",  # a package named wandb
        "conf/train.yaml": "lr: 1\n"}


def held(src, **kw):
    return [rel for _, rel in snapshot.listing(src, **kw)]


def test_the_snapshot_leaves_out_clutter_without_git(tmp_path):
    tree(tmp_path / "code", {**CLUTTER, **CODE})
    assert held(tmp_path / "code") == sorted(CODE)


def test_the_snapshot_leaves_out_what_git_ignores(tmp_path):
    repo = tmp_path / "repo"
    tree(repo, {".gitignore": "data/\n*.ckpt\nsecret.env\n", **{f"src/{k}": v for k, v in {**CLUTTER, **CODE}.items()},
                "src/data/shard-0.jsonl": "{}\n", "src/model.ckpt": "w", "src/secret.env": "K=V\n", "other/x.py": ""})
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert held(repo / "src") == sorted(CODE)
    (repo / "src" / "conf").mkdir(exist_ok=True)
    snapshot.take(tmp_path / "run", [str(repo / "src")])
    copied = sorted(str(p.relative_to(tmp_path / "run" / "code" / "src")) for p in
                    (tmp_path / "run" / "code" / "src").rglob("*") if p.is_file())
    assert copied == sorted(CODE)
    assert (tmp_path / "run" / "code" / "jobs" / "task.py").is_file()


def test_the_run_root_inside_a_code_path_is_never_copied(tmp_path):
    tree(tmp_path / "proj", {"mod.py": "", "my-runs/r1/stages/x/out.txt": "o"})
    assert held(tmp_path / "proj", exclude=[tmp_path / "proj" / "my-runs"]) == ["mod.py"]


def test_links_are_followed_once_and_dangling_ones_skipped(tmp_path):
    tree(tmp_path / "shared", {"util.py": ""})
    tree(tmp_path / "code", {"mod.py": ""})
    (tmp_path / "code" / "shared").symlink_to(tmp_path / "shared")
    (tmp_path / "code" / "loop").symlink_to(tmp_path / "code")
    (tmp_path / "shared" / "back").symlink_to(tmp_path / "code")  # a loop through two folders
    (tmp_path / "code" / "gone.py").symlink_to(tmp_path / "nowhere.py")
    assert held(tmp_path / "code") == ["mod.py", "shared/util.py"]


def plan_of(tmp_path, *overrides, cluster="local"):
    return build_plan([compose(["pipeline=smoke", f"cluster={cluster}", f"run_root={tmp_path / 'runs'}",
                                *overrides])], [[]])


def keys_of(excinfo):
    return [(e.key, e.message) for e in excinfo.value.errors]


def test_a_code_path_over_the_limit_is_refused_at_plan_time(tmp_path):
    tree(tmp_path / "big", {"mod.py": "", "weights.bin": "0" * 300_000})
    with pytest.raises(ConfigErrors) as e:
        plan_of(tmp_path, f"pipeline.code=[{tmp_path / 'big'}]", "pipeline.code_max_mb=0.2")
    [(key, msg)] = keys_of(e)
    assert key == "pipeline.code.0" and "more than 0.2 MB" in msg and "pipeline.code_max_mb" in msg
    assert plan_of(tmp_path, f"pipeline.code=[{tmp_path / 'big'}]", "pipeline.code_max_mb=1").code
    with pytest.raises(ConfigErrors) as e:  # a single file too
        plan_of(tmp_path, f"pipeline.code=[{tmp_path / 'big' / 'weights.bin'}]", "pipeline.code_max_mb=0.2")
    assert [k for k, _ in keys_of(e)] == ["pipeline.code.0"]


def test_too_many_files_are_refused_without_walking_them_all(tmp_path, monkeypatch):
    tree(tmp_path / "many", {f"f{i}.txt": "" for i in range(50)})
    monkeypatch.setattr(snapshot, "MAX_FILES", 10)
    [err] = snapshot.check([str(tmp_path / "many")])
    assert err.key == "pipeline.code.0" and "10 files" in err.message and "11 files so far" in err.message


@pytest.mark.parametrize("paths,key,fragment", [
    (["a/utils", "b/utils"], "pipeline.code.1", "utils (pipeline.code.1) are both named 'utils'"),
    (["a/utils", "a/utils"], "pipeline.code.1", "is listed twice (pipeline.code.0 and pipeline.code.1)"),
    (["a/x.py", "b/x.py"], "pipeline.code.1", "both named 'x.py'"),
    (["c/helpers.py", "a/helpers"], "pipeline.code.1", "are both imported as 'helpers'"),
    (["pkgs/jobs"], "pipeline.code.0", "the launcher's own package"),
    (["c/jobs.py"], "pipeline.code.0", "the launcher's own package"),
    (["c"], "pipeline.code.0", "holds 'jobs'"),  # a folder of modules: on the tasks' path, after the snapshot root
])
def test_code_paths_that_collide_in_the_snapshot_are_refused(tmp_path, paths, key, fragment):
    tree(tmp_path, {"a/utils/__init__.py": "", "b/utils/__init__.py": "", "a/x.py": "", "b/x.py": "",
                    "c/helpers.py": "", "a/helpers/__init__.py": "", "pkgs/jobs/__init__.py": "", "c/jobs.py": ""})
    with pytest.raises(ConfigErrors) as e:
        plan_of(tmp_path, f"pipeline.code=[{','.join(str(tmp_path / p) for p in paths)}]")
    assert [k for k, _ in keys_of(e)] == [key], keys_of(e)
    assert fragment in keys_of(e)[0][1]


def test_a_package_holding_a_jobs_module_is_fine(tmp_path):
    tree(tmp_path, {"mypkg/__init__.py": "", "mypkg/jobs.py": ""})  # imported as mypkg.jobs
    assert plan_of(tmp_path, f"pipeline.code=[{tmp_path / 'mypkg'}]").code == [str(tmp_path / "mypkg")]


def test_preflight_finds_only_what_the_snapshot_holds(tmp_path, monkeypatch):
    """Preflight resolves targets as a task will: not from the shell's working directory, not from a
    code path's siblings, not from what git ignores."""
    tree(tmp_path / "proj", {".gitignore": "mypkg/generated.py\n", "mypkg/__init__.py": "",
                             "mypkg/mod.py": "def f(ctx):\n    pass\n", "mypkg/generated.py": "def f(ctx):\n    pass\n",
                             "sibling.py": "def f(ctx):\n    pass\n", "cwdmod.py": "def f(ctx):\n    pass\n"})
    subprocess.run(["git", "init", "-q", str(tmp_path / "proj")], check=True)
    monkeypatch.chdir(tmp_path / "proj")  # the operator's shell
    code = f"pipeline.code=[{tmp_path / 'proj' / 'mypkg'}]"
    for target, found in [("mypkg.mod:f", True), ("cwdmod:f", False), ("sibling:f", False),
                          ("mypkg.generated:f", False)]:
        errors = check_environments(plan_of(tmp_path, code, f"pipeline.stages.reduce.target={target}",
                                            f"cluster.python={sys.executable}"))
        assert [e.key for e in errors] == ([] if found else ["pipeline.stages.reduce.target"]), (target, errors)


def test_the_packages_recorded_are_not_the_working_directory_s(tmp_path, monkeypatch):
    """environments.json lists each interpreter's distributions; an `*.egg-info` or `*.dist-info` in
    the shell's working directory (a checkout) is not installed in it."""
    tree(tmp_path, {"not_installed-9.9.dist-info/METADATA": "Metadata-Version: 2.1\nName: not-installed\n"
                                                           "Version: 9.9\n"})
    monkeypatch.chdir(tmp_path)
    listed = packages(sys.executable)
    assert listed and not any(p.startswith("not-installed") for p in listed), listed
    assert os.getcwd() == str(tmp_path)
