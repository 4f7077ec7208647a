"""The team cache_dir (launcher/plan/team_cache.py): runs link themselves there and a run of another run
root finds their completed keys; preflight refuses a cache_dir it cannot use, naming the key."""
import os
from pathlib import Path

from launcher.run import cache, ops
from launcher.plan import team_cache
from tests.unit.test_cache import keyed, old_run

KEY = "cluster.cache_dir"


def test_a_run_of_another_run_root_linked_in_cache_dir_is_a_source(tmp_path):
    team = tmp_path / "team"
    team.mkdir()
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    run = old_run(theirs, keyed(theirs), done={"shards": range(4)})
    plan = keyed(mine, f"cluster.cache_dir={team}")
    cache.apply(plan, mine)
    assert not plan.stages["shards"].cached  # not linked yet: only the run root is looked at
    team_cache.link(plan.cluster, run)
    assert (team / run.name).resolve() == run.resolve()
    cache.apply(plan, mine)
    assert plan.stages["shards"].cached["0"]["run"] == str(run.resolve()) and not plan.stages["reduce"].cached
    os.rename(run, tmp_path / "gone")  # its run removed (gc, rm): the link dangles and is skipped
    again = keyed(mine, f"cluster.cache_dir={team}")
    cache.apply(again, mine)
    assert not again.stages["shards"].cached


def test_runs_written_in_the_cache_dir_itself_are_not_linked_twice(tmp_path):
    run = old_run(tmp_path, keyed(tmp_path))
    team_cache.link({"cache_dir": str(tmp_path)}, run)
    assert sorted(p.name for p in tmp_path.iterdir()) == [run.name]


def errors(tmp_path, cache_dir):
    prep = ops.prepare(["pipeline=smoke", "cluster=local", f"run_root={tmp_path / 'runs'}",
                        f"cluster.cache_dir={cache_dir}"], False)
    return [e.message for e in prep.errors if e.key == KEY]


def test_preflight_refuses_a_missing_relative_or_unwritable_cache_dir(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    assert "does not exist or is not a folder" in errors(tmp_path, tmp_path / "nope")[0]
    assert "does not exist or is not a folder" in errors(tmp_path, tmp_path / "file")[0]
    assert "not an absolute path" in errors(tmp_path, "relative/cache")[0]
    assert errors(tmp_path, tmp_path) == []
    assert not list(tmp_path.glob(".probe-*"))  # the probe is removed

    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_text", refuse)  # as a read-only folder does (root may write anywhere)
    assert "is not writable by this user (Permission denied)" in team_cache.problems({"cache_dir": str(tmp_path)})[0].message
