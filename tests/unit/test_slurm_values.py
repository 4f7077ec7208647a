"""What Slurm makes of a value (launcher/sbatch/values.py): time limits in whole minutes, --mem after
submitit's rounding, the stop signals sbatch takes, and constraint expressions against node features;
plus the cluster facts they are checked against (features, typed GRES, reservations)."""
import pytest

from launcher.slurm.facts import expand_hostlist, parse_cluster_info, parse_gres, parse_reservations
from launcher.sbatch.values import (constraint_problem, mem_flag, mem_mb, mem_problem, parse_constraint, parse_time_min, signal_problem, time_limit_min,
                                   time_problem)


@pytest.mark.parametrize("text,problem", [
    ("10", None), ("00:10:00", None), ("1-00:00:00", None), ("2-12", None), ("5:00", None),
    ("00:00:30", "whole number of minutes"), ("1:30", "whole number of minutes"), ("0", "no time limit"),
    ("00:00:00", "no time limit"), ("UNLIMITED", None), ("infinite", None), ("1h", "not a Slurm time"),
])
def test_time_limits_are_whole_minutes(text, problem):
    found = time_problem(text)
    assert (found is None) if problem is None else (problem in found)


def test_time_rounds_up_like_slurm():
    assert parse_time_min("00:00:30") == 1 and parse_time_min("00:01:01") == 2 and parse_time_min("1-00") == 1440


def test_unlimited_is_no_time_limit_and_zero_memory_is_all_of_it():
    """sbatch(1): --time=UNLIMITED (or infinite) is no limit; --mem=0 is all of the node's memory."""
    assert time_limit_min("UNLIMITED") is None and time_limit_min("Infinite") is None
    assert time_limit_min("01:00:00") == 60
    assert mem_problem(0, all_memory=True) is None
    assert "or 0: all of the node's memory" in mem_problem(-1, all_memory=True)
    assert "must be > 0" in mem_problem(0)  # --mem-per-cpu/--mem-per-gpu have no such meaning


@pytest.mark.parametrize("gb,flag,mb", [(4, "4GB", 4096), (1.5, "1536MB", 1536), (0.0001, "0MB", 0),
                                         (0.001, "1MB", 1), (0.0009, "0MB", 0)])
def test_memory_as_the_script_renders_it(gb, flag, mb):
    assert mem_flag(gb) == flag and mem_mb(gb) == mb
    assert (mem_problem(gb) is None) == (mb >= 1)


@pytest.mark.parametrize("gb", [float("inf"), float("nan"), -1.0, 0.0])
def test_memory_that_is_no_amount(gb):
    assert mem_problem(gb)


@pytest.mark.parametrize("name,ok", [("USR2", True), ("USR1", True), ("XCPU", True), ("KILL", False), ("STOP", False),
                                     ("TERM", False), ("PWR", False), ("RTMIN", False), ("_DFL", False), ("usr2", False)])
def test_stop_signals(name, ok):
    assert (signal_problem(name) is None) == ok


NODES = [("n1", {"a100", "ib"}), ("n2", {"a100"}), ("n3", {"h100", "ib"}), ("n4", set())]


@pytest.mark.parametrize("expr,nodes,problem,fit", [
    ("a100", 1, None, ["n1", "n2"]),
    ("a100&ib", 1, None, ["n1"]),
    ("a100&ib", 2, "1 node(s)", ["n1"]),
    ("a100|h100", 3, None, ["n1", "n2", "n3"]),
    ("(a100|h100)&ib", 2, None, ["n1", "n3"]),
    ("[a100|h100]", 1, None, None),
    ("[a100*2&h100*1]", 3, None, None),
    ("a100*3", 3, "needs 3 node(s) with a100", None),
    ("v100", 1, "has feature v100", None),
    ("a100&v100|x", 1, "features v100, x", None),
    ("a100&&ib", 1, "not a Slurm constraint expression", None),
    ("[a100|h100", 1, "expected ']'", None),
    ("a100 & ib", 1, "not a Slurm constraint expression", None),
    ("a100*0", 1, "positive whole number", None),
    ("", 1, "empty", None),
])
def test_constraint_against_node_features(expr, nodes, problem, fit):
    found, names = constraint_problem(expr, NODES, nodes, "gpu")
    assert (found is None) if problem is None else (problem in found), found
    assert names == fit or problem


def test_constraint_tree():
    c = parse_constraint("[(knl&snc4)*4&haswell*1]")
    assert c.names == ["knl", "snc4", "haswell"] and not c.per_node
    assert [n for _, n in c.counts()] == [4, 1]


def test_node_features_and_typed_gres_are_cluster_facts():
    nodes = ("NodeName=g1 CPUTot=64 RealMemory=512000 Gres=gpu:a100:4(S:0-1),gpu:h100:4,shard:8 "
             "AvailableFeatures=a100,ib ActiveFeatures=a100,ib Partitions=gpu State=IDLE\n"
             "NodeName=c1 CPUTot=16 RealMemory=64000 Gres=(null) AvailableFeatures=(null) Partitions=gpu State=IDLE\n")
    info = parse_cluster_info("MaxArraySize = 1001\n", "PartitionName=gpu Default=YES MaxTime=UNLIMITED State=UP\n",
                              nodes)
    g1, c1 = info.partitions["gpu"].nodes
    assert g1.features == ["a100", "ib"] and c1.features == []
    assert g1.gres == {"gpu": {"a100": 4, "h100": 4}, "shard": {"": 8}} and g1.gpus == 8 and c1.gres == {}


@pytest.mark.parametrize("gres,parsed", [("gpu:4", {"gpu": {"": 4}}), ("gpu", {"gpu": {"": 1}}),
                                         ("gpu:a100:2(S:0,2-3),mps:200", {"gpu": {"a100": 2}, "mps": {"": 200}}),
                                         ("gpu:tesla:1K", {"gpu": {"tesla": 1024}})])
def test_gres(gres, parsed):
    assert parse_gres(gres) == parsed


def test_reservations_parse():
    text = ("ReservationName=maint StartTime=2026-12-01T08:00:00 EndTime=2026-12-01T12:00:00 Duration=04:00:00 "
            "Nodes=node[01-03],gpu7 NodeCnt=4 CoreCnt=64 Features=(null) PartitionName=gpu Flags=MAINT,SPEC_NODES "
            "TRES=cpu=64 Users=root,alice Groups=(null) Accounts=(null) Licenses=(null) State=INACTIVE "
            "BurstBuffer=(null) Watts=n/a MaxStartDelay=(null)\n")
    r = parse_reservations(text)["maint"]
    assert r.nodes == ["node01", "node02", "node03", "gpu7"] and r.partition == "gpu"
    assert r.users == ["root", "alice"] and r.accounts == [] and r.flags == ["MAINT", "SPEC_NODES"]
    assert r.state == "INACTIVE" and r.start == "2026-12-01T08:00:00"
    assert parse_reservations("No reservations in the system\n") == {}
    assert expand_hostlist("a[08-10]") == ["a08", "a09", "a10"]
