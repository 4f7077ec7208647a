import pytest

from launcher.sbatch.arrays import array_spec, expand, group_by_chunk, ranges


@pytest.mark.parametrize("indices,spec", [
    ([0, 1, 2, 5, 7, 8], "0-2,5,7-8"), ([3], "3"), ([], ""), ([4, 2, 3, 2], "2-4"),
])
def test_ranges_compact_and_expand_back(indices, spec):
    assert ranges(indices) == spec
    assert expand(spec) == sorted(set(indices))


def test_expand_reads_sacct_pending_bodies():
    assert expand("[4-7%2]") == [4, 5, 6, 7]
    assert expand("0-6:3") == [0, 3, 6]


def test_chunks_stay_under_max_array_size():
    chunks = group_by_chunk(range(2500), 1001)
    assert list(chunks) == [0, 1, 2]
    assert [len(v) for v in chunks.values()] == [1001, 1001, 498]
    # array indices inside a chunk are task - offset, always < MaxArraySize
    assert max(t - 2 * 1001 for t in chunks[2]) < 1001


def test_array_spec_throttle():
    assert array_spec([0, 1, 2, 3], 2) == "0-3%2"
    assert array_spec([1, 3], None) == "1,3"
