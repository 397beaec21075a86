"""Row ids: unique across shards, exact in JavaScript."""

from __future__ import annotations

import pytest

from fastpost.ids import LOCAL_BITS, MAX_ID, MAX_SHARDS, first_id, shard_of


def test_every_id_of_every_shard_is_exact_as_a_javascript_number() -> None:
    assert MAX_ID == 2**53 - 1
    last_of_last_shard = first_id(MAX_SHARDS - 1) + (1 << LOCAL_BITS) - 2
    assert last_of_last_shard <= MAX_ID
    assert float(last_of_last_shard) == last_of_last_shard


def test_shard_ranges_do_not_overlap_and_the_shard_is_read_off_the_id() -> None:
    for shard in range(MAX_SHARDS):
        assert shard_of(first_id(shard)) == shard
        if shard:
            assert first_id(shard) > first_id(shard - 1) + (1 << LOCAL_BITS) - 2


def test_shard_zero_numbers_from_one() -> None:
    assert first_id(0) == 1


@pytest.mark.parametrize("shard", [-1, MAX_SHARDS])
def test_out_of_range_shards_are_refused(shard: int) -> None:
    with pytest.raises(ValueError, match="shard_id"):
        first_id(shard)
