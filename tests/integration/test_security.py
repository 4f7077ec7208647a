"""Shell metacharacters in config values are quoted, never executed; secrets stay out of files;
run directories are not world-writable; another user's run is not ours to resume or cancel."""
import os
import stat
import subprocess

import pytest

from conftest import queued

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


SECRET_PLACES = {  # where an operator might paste a token; {v} is the value, {n} the secret's name
    "stage env, under its name": ("+pipeline.stages.shards.env.{n}={v}", "pipeline.stages.shards.env.{n}"),
    "stage env, another name": ("+pipeline.stages.shards.env.TOKEN={v}", "pipeline.stages.shards.env.TOKEN"),
    "cluster env": ("+cluster.env.TOKEN={v}", "cluster.env.TOKEN"),
    "a command": ("pipeline.stages.fanout.command='curl -H \"Authorization: Bearer {v}\" x'",
                  "pipeline.stages.fanout.command"),
    "python params": ("+pipeline.stages.reduce.params.token={v}", "pipeline.stages.reduce.params.token"),
    "an interpolation of the shell's": ("+pipeline.stages.shards.env.TOKEN='${{oc.env:{n}}}'",
                                        "pipeline.stages.shards.env.TOKEN"),
    "pipeline vars": ("+pipeline.vars.token={v}", "pipeline.vars.token"),
}


@pytest.mark.parametrize("cluster,verb", [("dev", "run"), ("dev", "plan"), ("local", "run")])
@pytest.mark.parametrize("place", list(SECRET_PLACES))
def test_a_secret_value_anywhere_in_the_config_is_refused_before_anything_is_written(request, cluster, verb, place):
    """Issue 16 kind 4: a secret's value in any config position (or a value for a secret's name in
    any env map) is refused before anything is written; the run root is grepped for the value."""
    cli = request.getfixturevalue("cli" if cluster == "local" else "dcli")
    name, value = "SECURITY_TEST_TOKEN", f"hf_sec{os.getpid()}x{list(SECRET_PLACES).index(place)}tok"
    cli.env[name] = value
    override, key = (s.format(n=name, v=value) for s in SECRET_PLACES[place])
    p = cli(verb, "pipeline=smoke", f"cluster={cluster}", f"cluster.secrets=[{name}]", override, check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"{key}:" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert value not in p.stdout + p.stderr  # the message names the secret, never its value
    found = subprocess.run(["grep", "-rl", "--", value, str(cli.run_root)], capture_output=True, text=True)
    assert found.stdout == "" and not any(cli.run_root.rglob("*.json")), found.stdout
    if cluster == "dev":
        assert queued(cli.env, root=cli.run_root) == set()
