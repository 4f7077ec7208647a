"""Every point's config in one file: the first whole, the others as differences (jobs/point_configs.py)."""
import json

import pytest

from jobs import point_configs

pytestmark = pytest.mark.unit

BASE = {"cluster": {"name": "local", "gpus": 0}, "seed": 1, "lst": [1, 2], "gone": {"x": 1}}


def test_a_round_trip_gives_every_config_back_and_changes_nothing():
    other = {"cluster": {"name": "local", "gpus": 0}, "seed": 2, "lst": [1, 2, 3], "new": {"k": "v"}}
    data = point_configs.encode([BASE, other, BASE])
    assert data["diffs"][0] == [] and data["diffs"][2] == []
    assert sorted(map(json.dumps, data["diffs"][1])) == sorted(map(json.dumps, [
        [["seed"], 2], [["lst"], [1, 2, 3]], [["new"], {"k": "v"}], [["gone"]]]))
    assert point_configs.decode(json.loads(json.dumps(data))) == [BASE, other, BASE]
    assert BASE == {"cluster": {"name": "local", "gpus": 0}, "seed": 1, "lst": [1, 2], "gone": {"x": 1}}


@pytest.mark.parametrize("value", [True, 1.0, [True, 2]])
def test_values_json_tells_apart_are_kept_apart(value):
    """1 == True == 1.0 in Python; the file keeps each as it was."""
    other = {**BASE, "seed": value} if not isinstance(value, list) else {**BASE, "lst": [True, 2]}
    back = point_configs.decode(json.loads(json.dumps(point_configs.encode([BASE, other]))))[1]
    assert json.dumps(back, sort_keys=True) == json.dumps(other, sort_keys=True)


def test_decoded_configs_are_independent_copies():
    a, b = point_configs.decode(point_configs.encode([BASE, {**BASE, "seed": 3}]))
    a["cluster"]["gpus"] = 8
    assert b["cluster"]["gpus"] == 0


def test_one_file_for_a_run_and_the_old_one_file_per_point_layout_still_read(tmp_path):
    new, old = tmp_path / "new", tmp_path / "old"
    point_configs.write(new, [BASE, {**BASE, "seed": 5}])
    assert [p.name for p in (new / "config").iterdir()] == ["points.json"]
    assert point_configs.read(new, 1)["seed"] == 5 and point_configs.read(new, 7) == {}
    (old / "config").mkdir(parents=True)
    for i in range(11):  # point-10 sorts after point-9
        (old / "config" / f"point-{i}.json").write_text(json.dumps({**BASE, "seed": i}))
    assert [c["seed"] for c in point_configs.read_all(old)] == list(range(11))
    assert point_configs.read(old, 3)["seed"] == 3 and point_configs.read(old, 11) == {}


def test_a_file_of_another_format_is_refused(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "points.json").write_text(json.dumps({"format": 99, "base": {}, "diffs": [[]]}))
    with pytest.raises(ValueError, match="format 99"):
        point_configs.read_all(tmp_path)
