"""Composed configs kept between commands (launcher/run/compose_cache.py): the same command takes them
from the cache, and any change composition would see (a config file, the environment, the overrides)
composes again."""
from launcher.config import compose, configdirs
from launcher.run import compose_cache

ARGS = (["pipeline=smoke", "cluster=local", "run_root=/tmp/r"], False)


def test_a_hit_equals_a_composition_and_a_change_composes_again(tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCHER_STATE_DIR", str(tmp_path / "state"))
    mine = tmp_path / "confs" / "pipeline"
    mine.mkdir(parents=True)
    configdirs.use([tmp_path / "confs"])
    try:
        calls = []
        real = compose.compose_points
        monkeypatch.setattr(compose, "compose_points", lambda *a: calls.append(a) or real(*a))
        first = compose_cache.compose_points(*ARGS)
        assert compose_cache.compose_points(*ARGS) == first == real(*ARGS) and len(calls) == 1
        (mine / "extra.yaml").write_text("name: extra\n")  # a config file: composed again
        compose_cache.compose_points(*ARGS)
        monkeypatch.setenv("SOMETHING_ELSE", "1")  # the environment (${oc.env:...})
        compose_cache.compose_points(*ARGS)
        compose_cache.compose_points(["pipeline=smoke", "cluster=local", "run_root=/tmp/s"], False)
        assert len(calls) == 4
        (mine / "extra.yaml").write_text("name: ${now:%H}\n")  # changes by itself: never cached
        compose_cache.compose_points(*ARGS)
        compose_cache.compose_points(*ARGS)
        assert len(calls) == 6 and compose_cache.key(*ARGS) is None
        monkeypatch.setenv(compose_cache.ENV, "0")
        assert compose_cache.key(*ARGS) is None
    finally:
        configdirs.use(None)


def test_the_key_covers_the_whole_launcher_package_the_schema_included(tmp_path, monkeypatch):
    """Touching the schema (launcher/config/schema.py, outside the cache's own folder) changes the key."""
    import os
    from pathlib import Path

    import launcher

    assert compose_cache.LAUNCHER_DIR == Path(launcher.__file__).resolve().parent
    schema = Path(launcher.__file__).resolve().parent / "config" / "schema.py"
    before = compose_cache.key(*ARGS)
    st = schema.stat()
    try:
        os.utime(schema, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert compose_cache.key(*ARGS) != before
    finally:
        os.utime(schema, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_hit_shares_what_the_points_agree_on_as_a_composition_does(tmp_path, monkeypatch):
    """The planner checks and keys a stage once per distinct object: configs from the cache share the
    subtrees their points agree on (a copy per point made a 10,000-point plan 5x slower on a hit)."""
    monkeypatch.setenv("LAUNCHER_STATE_DIR", str(tmp_path / "state"))
    args = (["pipeline=smoke", "cluster=local", "run_root=/tmp/r", "pipeline.vars.scale=1,2,3"], True)
    points, composed = compose_cache.compose_points(*args)
    again_points, again = compose_cache.compose_points(*args)
    assert (again_points, again) == (points, composed)
    assert again[1]["cluster"] is again[0]["cluster"] and again[2]["pipeline"]["stages"]["reduce"]["resources"] \
        is again[0]["pipeline"]["stages"]["reduce"]["resources"]
    from jobs import point_configs

    assert point_configs.encode(again)["diffs"] == point_configs.encode(composed)["diffs"]
