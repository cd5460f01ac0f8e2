"""The split's pure plan (``snapmerge.split.plan_split``): decided from values, no store."""

from __future__ import annotations

import json

import pytest

from snapmerge.domain import Database, Keys
from snapmerge.errors import InvalidEventError
from snapmerge.split import GROUPING_THRESHOLD, MAX_CHUNKS, plan_split

KEYS = [f"words/delta/{i:032x}/" for i in range(10)]


def test_a_small_batch_travels_inline_and_stores_nothing() -> None:
    plan = plan_split("b", Database.WORDS, KEYS, requested=4, group_size=20, fast_path=False)
    assert plan.writes == ()
    assert [c["deltas"] for c in plan.answer["chunks"]] == [KEYS[0:4], KEYS[4:8], KEYS[8:10]]
    assert plan.answer["planned_chunk_count"] == 3 and not plan.answer["use_groups"]


def test_one_chunk_on_the_fast_path_hands_the_deltas_to_the_final_merge() -> None:
    plan = plan_split("b", Database.WORDS, KEYS, requested=25, group_size=20, fast_path=True)
    assert plan.answer["fast_path"]
    assert [r["intermediate_key"] for r in plan.answer["chunk_results"]] == KEYS
    assert plan.answer["planned_chunk_count"] == len(KEYS)


def test_many_chunks_are_grouped_and_the_group_list_is_stored() -> None:
    plan = plan_split("b", Database.WORDS, KEYS, requested=1, group_size=4, fast_path=True)
    assert len(plan.answer["chunks"]) == len(KEYS) > GROUPING_THRESHOLD
    assert not plan.answer["fast_path"]  # more than one chunk
    ((key, body),) = plan.writes
    assert key == Keys.groups_list("b")
    assert json.loads(body) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert plan.answer["planned_chunk_count"] == 3


def test_a_large_chunk_list_goes_to_s3_first_and_the_size_rises_to_cap_the_chunks() -> None:
    keys = [f"words/delta/{i:032x}/" for i in range(5_000)]
    plan = plan_split("b", Database.WORDS, keys, requested=1, group_size=20, fast_path=False)
    assert plan.answer["chunk_size"] == 5_000 // MAX_CHUNKS + 1
    assert plan.writes[0][0] == Keys.chunks_list("b") == plan.answer["chunks_s3_key"]
    stored = json.loads(plan.writes[0][1])
    assert [k for c in stored for k in c["deltas"]] == keys
    assert all("deltas" not in c for c in plan.answer["chunks"])


def test_sizes_below_one_are_refused() -> None:
    with pytest.raises(InvalidEventError, match="must be positive"):
        plan_split("b", Database.WORDS, KEYS, requested=0, group_size=20, fast_path=False)
