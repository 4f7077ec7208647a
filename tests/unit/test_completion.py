"""Shell completion (launcher/completion.py through argcomplete): driven as the shell drives it (COMP_LINE,
COMP_POINT, _ARGCOMPLETE), in process for the candidates, in a real bash for the script that
`launcher completion bash` prints, and in a fresh interpreter for what one TAB imports (no Hydra, no
OmegaConf, no Slurm client)."""
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from argcomplete import finders

from launcher import cli, completion

ROOT = Path(__file__).resolve().parents[2]


class Done(Exception):
    pass


def candidates(line: str, monkeypatch, point: int | None = None) -> list:
    """What TAB offers at the end of `line` (or at `point`), as argcomplete hands it to the shell."""
    monkeypatch.setenv("_ARGCOMPLETE", "1")
    monkeypatch.setenv("COMP_LINE", line)
    monkeypatch.setenv("COMP_POINT", str(len(line) if point is None else point))
    monkeypatch.delenv("_ARGCOMPLETE_COMP_WORDBREAKS", raising=False)
    # argcomplete's debug stream is fd 9, which is pytest's own here (its faulthandler): it says to
    # override this in such a case
    monkeypatch.setattr(finders.CompletionFinder, "_init_debug_stream",
                        lambda self: setattr(finders, "debug_stream", io.StringIO()))
    out = io.StringIO()

    def stop(code=0):
        raise Done(code)

    with pytest.raises(Done):
        completion.autocomplete(cli._parser(), exit_method=stop, output_stream=out)
    return [c.rstrip() for c in out.getvalue().split("\013") if c]


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """A run root with two runs (run.json, plan.json as `run` writes them) and a run index with a third
    run kept elsewhere."""
    monkeypatch.setenv("LAUNCHER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("LAUNCHER_CONFIG_DIRS", raising=False)
    root = tmp_path / "runs"
    for i, (name, stages) in enumerate((("20261201-0100-smoke-aaaa", ["shards", "reduce"]),
                                        ("20261201-0200-demo-bbbb", ["clean", "tokenize"]))):
        d = root / name
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps({"id": name, "created": i}))
        (d / "plan.json").write_text(json.dumps({"stages": [{"name": s} for s in stages]}))
        os.utime(d / "run.json", (1000 + i, 1000 + i))
    elsewhere = tmp_path / "other" / "20261130-2300-train-cccc"
    elsewhere.mkdir(parents=True)
    (elsewhere / "run.json").write_text("{}")
    from launcher.run import runindex

    runindex.record(elsewhere)
    return root


def test_verbs_and_options(monkeypatch):
    assert candidates("launcher st", monkeypatch) == ["status"]
    assert "completion" in candidates("launcher ", monkeypatch)
    assert candidates("launcher status latest --w", monkeypatch) == ["--watch"]
    assert candidates("launcher completion ", monkeypatch) == ["bash", "zsh"]
    assert candidates("launcher run --m", monkeypatch) == ["--multirun"]


def test_overrides_complete_groups_their_options_and_root_keys(monkeypatch, tmp_path):
    monkeypatch.delenv("LAUNCHER_CONFIG_DIRS", raising=False)
    words = candidates("launcher run ", monkeypatch)
    assert {"pipeline=", "cluster=", "data=", "model=", "wait=", "run_root=", "sweep.independent="} <= set(words)
    assert "envs=" not in words and "hydra=" not in words
    pipelines = candidates("launcher run pipeline=", monkeypatch)
    assert pipelines == sorted(f"pipeline={p.stem}" for p in (ROOT / "conf" / "pipeline").glob("*.yaml"))
    assert candidates("launcher plan -m model=7", monkeypatch) == ["model=7b"]
    assert "model=schema" not in candidates("launcher plan model=", monkeypatch)  # the typed schema is no option
    assert candidates("launcher run +run_n", monkeypatch) == ["+run_name="]
    assert candidates("launcher run pipeline=smoke wa", monkeypatch) == ["wait="]


def test_cluster_profiles_and_groups_of_config_dirs(monkeypatch, tmp_path):
    mine, env_dir = tmp_path / "mine", tmp_path / "env"
    (mine / "cluster_profiles").mkdir(parents=True)
    (mine / "cluster_profiles" / "hpc.yaml").write_text("backend: slurm\n")
    (mine / "pipeline").mkdir()
    (mine / "pipeline" / "nightly.yaml").write_text("stages: {}\n")
    (env_dir / "prompts").mkdir(parents=True)
    (env_dir / "prompts" / "short.yaml").write_text("x: 1\n")
    monkeypatch.setenv("LAUNCHER_CONFIG_DIRS", f"{env_dir}{os.pathsep}{tmp_path / 'gone'}")  # a stale one: skipped
    clusters = candidates(f"launcher run --config-dir {mine} cluster=", monkeypatch)
    assert {"cluster=local", "cluster=dev", "cluster=hpc"} <= set(clusters), clusters
    assert "cluster=hpc" not in candidates("launcher run cluster=", monkeypatch)  # not without --config-dir
    assert "pipeline=nightly" in candidates(f"launcher plan --config-dir {mine} pipeline=n", monkeypatch)
    assert candidates("launcher run prompts=", monkeypatch) == ["prompts=short"]
    assert "hpc" in candidates(f"launcher env list --config-dir {mine} --cluster ", monkeypatch)
    assert "prompts" in candidates("launcher configs ", monkeypatch)


def test_run_ids_and_stage_names(runs, monkeypatch):
    assert candidates(f"launcher status --root {runs} ", monkeypatch) == [
        "20261130-2300-train-cccc", "20261201-0100-smoke-aaaa", "20261201-0200-demo-bbbb", "latest"]
    assert candidates(f"launcher resume --root {runs} 20261201-01", monkeypatch) == ["20261201-0100-smoke-aaaa"]
    monkeypatch.setenv("LAUNCHER_RUN_ROOT", str(runs))
    assert candidates("launcher cancel 2026113", monkeypatch) == ["20261130-2300-train-cccc"]  # from the index
    assert candidates("launcher logs 20261201-0100-smoke-aaaa ", monkeypatch) == ["shards", "reduce"]
    assert candidates("launcher logs latest ", monkeypatch) == ["clean", "tokenize"]  # the newest
    assert candidates(f"launcher inspect {runs / '20261201-0200-demo-bbbb'} t", monkeypatch) == ["tokenize"]
    assert candidates("launcher logs no-such-run ", monkeypatch) == []


def test_one_tab_imports_no_hydra_and_asks_no_slurm(tmp_path):
    """What makes it fast: one completion in a fresh interpreter imports nothing heavy (timed in the
    report: about 0.1 s of CPU beyond the interpreter's start)."""
    code = textwrap.dedent("""
        import io, os, sys, time
        t0 = time.perf_counter()
        from launcher import cli, completion
        out = io.StringIO()
        completion.autocomplete(cli._parser(), exit_method=lambda code=0: None, output_stream=out)
        took = time.perf_counter() - t0
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("hydra", "omegaconf", "submitit", "rich", "yaml")
                       or m in ("launcher.slurm", "launcher.config.compose", "launcher.plan", "launcher.run.rundir"))
        print(repr((out.getvalue(), heavy, took)))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_ARGCOMPLETE": "1", "COMP_LINE": "launcher run cluster=",
           "COMP_POINT": "21", "LAUNCHER_STATE_DIR": str(tmp_path)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    words, heavy, took = eval(p.stdout.strip().splitlines()[-1])
    assert "cluster=local" in words.split("\013") and heavy == [], (heavy, p.stderr)


def test_the_bash_script_registers_and_completes(tmp_path):
    """The script `launcher completion bash` prints, sourced in a non-interactive bash: `complete -p`
    shows it registered, and its function, called as bash calls it on TAB, fills COMPREPLY."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "launcher").write_text(f"#!/bin/sh\nexec {sys.executable} -m launcher \"$@\"\n")
    (bin_dir / "launcher").chmod(0o755)
    script = textwrap.dedent("""
        source <(launcher completion bash)
        complete -p launcher
        COMP_LINE="launcher run pipeline=sm"; COMP_POINT=${#COMP_LINE}
        COMP_WORDS=(launcher run pipeline = sm); COMP_CWORD=4
        _python_argcomplete launcher sm =
        echo "reply: ${COMPREPLY[*]}"
        COMP_LINE="launcher sta"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=(launcher sta); COMP_CWORD=1
        _python_argcomplete launcher sta launcher
        echo "reply: ${COMPREPLY[*]}"
    """)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "LAUNCHER_STATE_DIR": str(tmp_path)}
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and lines[0].endswith("-F _python_argcomplete launcher"), (p.stdout, p.stderr)
    assert [x.rstrip() for x in lines[1:]] == ["reply: smoke", "reply: status"], (p.stdout, p.stderr)


def test_the_zsh_script_is_a_compdef_for_launcher(capsys):
    assert cli.main(["completion", "zsh"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("#compdef launcher") and "_python_argcomplete" in text
