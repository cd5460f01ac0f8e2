"""Wrong-typed event fields are InvalidEventErrors naming the field; nothing else escapes.

Before this change each case in WRONG_TYPES ended in a bare TypeError (``int([])``,
``dict(5)``, ``'x' in 5`` ...), which misses the state machine's InputRejected catch.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers import bootstrap
from handlers.compaction import lambda_handler
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.config import Settings
from snapmerge.errors import (
    InvalidEventError,
    LeaseLostError,
    LockBusyError,
    LockError,
    MergeInputError,
    PointerConflictError,
    SnapshotError,
    StoreError,
)

# docs/events.md: the error types a step may raise.
DOCUMENTED = (
    InvalidEventError,
    MergeInputError,
    SnapshotError,
    LockBusyError,
    LeaseLostError,
    LockError,
    PointerConflictError,
    StoreError,
)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[bootstrap.App]:
    instance = _build(tmp_path)
    bootstrap.install(instance)
    yield instance
    bootstrap.install(None)


def _build(root: Path) -> bootstrap.App:
    settings = Settings(bucket="mem", table="mem", chroma_root=root / "chroma")
    return bootstrap.build(
        settings, blobs=MemoryBlobStore("mem"), engine=MemoryIndex(), leases=MemoryLeaseTable()
    )


BASE = {"batch_id": "b", "database": "words"}
WRONG_TYPES: list[tuple[dict[str, Any], str]] = [
    ({"operation": "process_chunk", **BASE, "chunk_index": [], "deltas": ["k/"]}, "chunk_index"),
    ({"operation": "process_chunk", **BASE, "chunk_index": 0, "deltas": [5]}, r"deltas\[0\]"),
    (
        {"operation": "split_into_chunks", **BASE, "delta_results": [5]},
        r"delta_results\[0\]",
    ),
    (
        {"operation": "final_merge", **BASE, "chunk_results": [5]},
        r"chunk_results\[0\]",
    ),
    (
        {
            "operation": "final_merge",
            **BASE,
            "chunk_results": [{"intermediate_key": "k/"}] * 2,
            "delta_count": 1,
        }
        | {"chunk_results": [{"intermediate_key": "k/", "delta_count": []}]},
        r"chunk_results\[0\]\.delta_count",
    ),
    (
        {
            "operation": "merge_chunk_group",
            **BASE,
            "group_index": 0,
            "group_size": {},
            "chunk_results": [{"intermediate_key": "k/"}],
        },
        "group_size",
    ),
    (
        {
            "operation": "merge_chunk_group",
            **BASE,
            "group_index": "0",
            "chunk_results": [{"intermediate_key": "k/"}],
        },
        "group_index",
    ),
    (
        {
            "operation": "final_merge",
            **BASE,
            "chunk_results": [
                {"intermediate_key": "k/", "chunk_index": None},
                {"intermediate_key": "j/", "chunk_index": "x"},
            ],
        },
        r"chunk_results\[1\]\.chunk_index",
    ),
    (
        {
            "operation": "final_merge",
            "batch_id": {},
            "database": "words",
            "chunk_results": [{"intermediate_key": "k/"}],
        },
        "batch_id",
    ),
    (
        {"operation": "final_merge", **BASE, "chunk_results": {"intermediate_key": "k/"}},
        "chunk_results must be a list",
    ),
    (
        {"operation": "final_merge", **BASE, "chunk_results": [{"intermediate_key": 7}]},
        r"chunk_results\[0\]\.intermediate_key",
    ),
    ({"operation": "process_chunk", **BASE, "chunk_index": True, "deltas": ["k/"]}, "chunk_index"),
]


@pytest.mark.parametrize(("event", "field"), WRONG_TYPES)
def test_a_wrong_typed_field_is_named(app: bootstrap.App, event: dict, field: str) -> None:
    with pytest.raises(InvalidEventError, match=field):
        lambda_handler(event)


def test_a_stored_chunk_list_that_is_not_json_is_an_invalid_event(app: bootstrap.App) -> None:
    app.blobs.put("chunks/b/chunks.json", b"\xff\xfe not json")
    event = {
        "operation": "process_chunk",
        **BASE,
        "chunk_index": 0,
        "chunks_s3_key": "chunks/b/chunks.json",
    }
    with pytest.raises(InvalidEventError, match="not JSON"):
        lambda_handler(event)


def test_a_chunk_list_item_without_an_index_is_an_invalid_event(app: bootstrap.App) -> None:
    app.blobs.put("chunks/b/chunks.json", json.dumps([{"deltas": ["k/"]}]).encode())
    event = {
        "operation": "process_chunk",
        **BASE,
        "chunk_index": 0,
        "chunks_s3_key": "chunks/b/chunks.json",
    }
    with pytest.raises(InvalidEventError, match=r"chunks\.json\[0\].*chunk_index"):
        lambda_handler(event)


# -- fuzzing: any event, only documented errors ---------------------------------------------------

FIELDS = [
    "batch_id",
    "database",
    "chunk_index",
    "group_index",
    "group_size",
    "deltas",
    "delta_results",
    "chunks_s3_key",
    "chunks_s3_bucket",
    "chunk_group",
    "groups_s3_key",
    "groups_s3_bucket",
    "chunk_results",
    "poll_results_s3_key",
    "poll_results_s3_bucket",
    "execution_id",
    "delta_count",
    "routing",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 10**12)
    | st.floats(allow_nan=True)
    | st.sampled_from(["", "words", "lines", "b", "k/", "words/delta/x/", "\x00", "é"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "intermediate_key",
                    "delta_key",
                    "chunk_index",
                    "group_index",
                    "delta_count",
                    "collection",
                    "statusCode",
                    "empty",
                    "message",
                    "deltas",
                    "delta_results",
                    "path",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)
ITEM = {"intermediate_key": "k/", "chunk_index": 0, "delta_count": 1}
TEMPLATES: list[dict[str, Any]] = [
    {"operation": "process_chunk", **BASE, "chunk_index": 0, "deltas": ["words/delta/x/"]},
    {
        "operation": "process_chunk",
        **BASE,
        "chunk_index": 0,
        "delta_results": [{"delta_key": "words/delta/x/", "collection": "receipt_words"}],
    },
    {
        "operation": "process_chunk",
        **BASE,
        "chunk_index": 0,
        "delta_results": None,
        "chunks_s3_key": "chunks/b/chunks.json",
        "chunks_s3_bucket": "mem",
    },
    {
        "operation": "merge_chunk_group",
        **BASE,
        "group_index": 0,
        "group_size": 2,
        "chunk_results": [ITEM],
    },
    {
        "operation": "merge_chunk_group",
        **BASE,
        "batch_id": "b-group-0",
        "group_index": 0,
        "chunk_group": [ITEM],
    },
    {
        "operation": "merge_chunk_group",
        **BASE,
        "group_index": 0,
        "chunk_group": None,
        "groups_s3_key": "chunk_groups/b/groups.json",
        "groups_s3_bucket": "mem",
    },
    {"operation": "final_merge", **BASE, "chunk_results": [ITEM]},
    {
        "operation": "split_into_chunks",
        **BASE,
        "delta_results": [{"delta_key": "words/delta/x/", "collection": "receipt_words"}],
    },
    {"operation": "split_into_chunks", **BASE, "poll_results_s3_key": "poll/b.json"},
]
DROP = object()
events = st.builds(
    lambda template, changes: {k: v for k, v in {**template, **changes}.items() if v is not DROP},
    st.sampled_from(TEMPLATES),
    st.dictionaries(st.sampled_from(FIELDS), json_values | st.just(DROP), max_size=3),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events, stored=json_values)
def test_malformed_events_raise_only_documented_errors(event: dict, stored: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        instance = _build(Path(tmp))
        for key in ("chunks/b/chunks.json", "chunk_groups/b/groups.json", "poll/b.json"):
            instance.blobs.put(key, json.dumps(stored).encode())
        bootstrap.install(instance)
        try:
            answer = lambda_handler(event)
        except DOCUMENTED:
            return
        finally:
            bootstrap.install(None)
        assert isinstance(answer, dict)


@settings(max_examples=150, deadline=None)
@given(event=events, not_a_mapping=st.sampled_from([None, [], "x", 3]))
def test_an_event_that_is_not_an_object_is_refused(event: dict, not_a_mapping: object) -> None:
    with pytest.raises(InvalidEventError):
        lambda_handler(not_a_mapping)  # type: ignore[arg-type]
