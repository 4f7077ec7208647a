"""Shell metacharacters in config values are quoted, never executed; secrets stay out of files;
run directories are not world-writable; another user's run is not ours to resume or cancel."""
import os
import stat

import pytest

from jobs import layout

PLANTS = {  # variable -> value that would create a file if a script ever evaluated it
    "EVIL_SUBST": "$(touch {d}/subst)",
    "EVIL_TICKS": "`touch {d}/ticks`",
    "EVIL_SEMI": "x; touch {d}/semi",
    "EVIL_QUOTES": "a'b\"c; touch {d}/quotes",
    "EVIL_NEWLINE": "line\ntouch {d}/newline",
}


@pytest.mark.parametrize("cluster", ["local", "dev"])
def test_metacharacters_in_config_are_quoted_not_run(request, tmp_path, cluster):
    cli = request.getfixturevalue("cli" if cluster == "local" else "dcli")
    trap = tmp_path / "trap"
    trap.mkdir()
    values = {k: v.format(d=trap) for k, v in PLANTS.items()}
    stage_env = ", ".join(f"{k}: {_hydra_quote(v)}" for k, v in list(values.items())[:3])
    cluster_env = ", ".join(f"{k}: {_hydra_quote(v)}" for k, v in list(values.items())[3:])
    cli("run", "pipeline=smoke", f"cluster={cluster}", f"+pipeline.stages.fanout.env={{{stage_env}}}",
        f"+cluster.env={{{cluster_env}}}",
        "pipeline.stages.fanout.command='env | grep ^EVIL_ | sort > $LAUNCHER_OUTPUT_DIR/env.txt; "
        "printf %s \"$EVIL_NEWLINE\" > $LAUNCHER_OUTPUT_DIR/newline.txt'")
    assert cli.wait(timeout=240)["state"] == "COMPLETED"
    assert list(trap.iterdir()) == []  # nothing planted ever ran
    out = layout.output_dir(cli.run_dir(), "fanout", 0, 0)
    seen = out.joinpath("env.txt").read_text()
    for k in list(values)[:4]:
        assert f"{k}={values[k]}\n" in seen  # the task got the literal value
    assert out.joinpath("newline.txt").read_text() == values["EVIL_NEWLINE"]
    scripts = list(cli.run_dir().glob("stages/*/scripts/*.sbatch"))
    assert scripts and all("export EVIL_QUOTES=" in s.read_text() for s in scripts)


def _hydra_quote(value: str) -> str:
    """A Hydra override string literal (its grammar, not the shell's)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def test_run_directory_is_not_world_writable(cli):
    cli("run", "pipeline=smoke", "cluster=local", "wait=true", "poll_s=0.3")
    writable = [p for p in cli.run_dir().rglob("*") if p.stat().st_mode & stat.S_IWOTH and not p.is_symlink()]
    assert writable == []


def test_another_users_run_cannot_be_resumed_or_cancelled(cli):
    if os.geteuid() != 0:
        pytest.skip("needs root to hand a run directory to another user")
    cli("run", "pipeline=smoke", "cluster=local", "pipeline.vars.fail_once_task=1", "wait=true", "poll_s=0.3",
        check=False)
    run_dir = cli.run_dir()
    os.chown(run_dir, 65534, 65534)  # nobody
    try:
        for verb in ("resume", "cancel"):
            p = cli(verb, "latest", check=False)
            assert p.returncode == 1 and "only its owner" in p.stderr
        assert cli("status", "latest", check=False).returncode == 1  # reading is fine
    finally:
        os.chown(run_dir, 0, 0)
