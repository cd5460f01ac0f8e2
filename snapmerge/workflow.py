"""The compaction workflow's operations as plain functions (DESIGN §1, steps 2–4, and the
parsing of step 5's event).

Each takes the event dict the Lambda receives and returns the dict it answers with; a failure
raises (never a success-shaped body). Event shapes are documented in ``docs/events.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapmerge import events
from snapmerge.config import Settings
from snapmerge.deltas import fetch_delta, named_after_keys
from snapmerge.domain import Database, FinalMergeRequest, Keys
from snapmerge.errors import InvalidEventError, MergeInputError
from snapmerge.ports import BlobStore, IndexEngine
from snapmerge.transfer import upload_directory

# Step Functions caps a state's data at 256 KiB, and the split answer *is* the execution's state
# (the chunk results are added to it later). Above this the chunk list goes to S3.
INLINE_CHUNKS_LIMIT_BYTES = 64 * 1024
# At most this many chunks: the chunk size rises above the configured one when a batch has more
# deltas than MAX_CHUNKS chunks would hold, so the split answer and the chunk results stay far
# below 256 KiB whatever the batch size (50,000 deltas included). The Map runs at most 10 chunks
# at once anyway, so fewer, larger chunks cost no parallelism.
MAX_CHUNKS = 256
GROUPING_THRESHOLD = 4  # more chunks than this are merged in groups first

ChunkSizer = Callable[[Database | None], int]


@dataclass(frozen=True)
class WorkflowContext:
    blobs: BlobStore
    engine: IndexEngine
    settings: Settings
    workdir: Path


def default_chunk_size(settings: Settings) -> ChunkSizer:
    """CHUNK_SIZE_WORDS / CHUNK_SIZE_LINES by database (either spelling), CHUNK_SIZE otherwise."""

    def size(db: Database | None) -> int:
        if db is Database.WORDS:
            return settings.chunk_size_words
        if db is Database.LINES:
            return settings.chunk_size_lines
        return settings.chunk_size

    return size


def _split_entries(ctx: WorkflowContext, event: Mapping[str, Any]) -> tuple[list[Any], str]:
    """The batch's delta entries (inline, or the poll-result list on S3) and where from."""
    if event.get("delta_results") is not None:
        where = "event.delta_results"
        return events.object_list(event["delta_results"], where, allow_empty=True), where
    key = events.optional_text(event, "poll_results_s3_key")
    if key is None:
        raise InvalidEventError("event needs 'delta_results' (a list) or 'poll_results_s3_key'")
    events.same_bucket(event, "poll_results_s3_bucket", ctx.blobs.bucket)
    where = "event.poll_results_s3_key"
    return events.stored_json_list(ctx.blobs, events.s3_key(key, where), where), where


def _sizing_db(entries: list[Any], fallback: Database) -> Database | None:
    """The database that sets the chunk size: the first delta's collection, in either spelling."""
    first = entries[0] if entries else None
    name = first.get("collection") if isinstance(first, Mapping) else None
    if not name:
        return fallback
    try:
        return Database.from_collection(str(name))
    except InvalidEventError:
        return None


def split_into_chunks(
    ctx: WorkflowContext,
    event: Mapping[str, Any],
    *,
    chunk_size: ChunkSizer | None = None,
    group_size: int | None = None,
    fast_path: bool = False,
) -> dict[str, Any]:
    """Cut the batch's deltas into chunks; with ``fast_path`` a single chunk skips process_chunk.

    The fast path (the proposal's phase 3) hands the deltas themselves to the final merge as its
    intermediates, in order, so one chunk costs no extra intermediate merge.
    """
    batch_id, db = events.text(event, "batch_id"), events.database(event)
    entries, where = _split_entries(ctx, event)
    keys = events.delta_keys(entries, where)
    requested = (chunk_size or default_chunk_size(ctx.settings))(_sizing_db(entries, db))
    groups_of = group_size or ctx.settings.group_size
    if requested < 1 or groups_of < 1:
        raise InvalidEventError(
            f"chunk size {requested} and group size {groups_of} must be positive"
        )
    size = max(requested, math.ceil(len(keys) / MAX_CHUNKS))
    chunks = [
        {"batch_id": batch_id, "database": db.value, "chunk_index": i, "deltas": keys[o : o + size]}
        for i, o in enumerate(range(0, len(keys), size))
    ]
    out: dict[str, Any] = {
        "batch_id": batch_id,
        "database": db.value,
        "total_chunks": len(chunks),
        "chunk_size": size,
        "requested_chunk_size": requested,
        "delta_count": len(keys),
        "poll_results_s3_key": events.optional_text(event, "poll_results_s3_key"),
        "poll_results_s3_bucket": events.optional_text(event, "poll_results_s3_bucket"),
    }
    if len(json.dumps(chunks)) > INLINE_CHUNKS_LIMIT_BYTES:
        key = Keys.chunks_list(batch_id)
        ctx.blobs.put(key, json.dumps(chunks).encode())
        chunks = [
            {
                "batch_id": batch_id,
                "database": db.value,
                "chunk_index": c["chunk_index"],
                "chunks_s3_key": key,
            }
            for c in chunks
        ]
        out["chunks_s3_key"] = key
    out["chunks"] = chunks
    # Only an inline chunk list may travel as the final merge's input (Step Functions' 256 KiB).
    out["fast_path"] = fast_path and len(chunks) == 1 and "chunks_s3_key" not in out
    if out["fast_path"]:
        out["chunk_results"] = [
            {"intermediate_key": k, "chunk_index": i, "delta_count": 1} for i, k in enumerate(keys)
        ]
    out["use_groups"] = len(chunks) > GROUPING_THRESHOLD
    out["group_size"] = groups_of
    out["groups"] = list(range(math.ceil(len(chunks) / groups_of))) if out["use_groups"] else []
    # the intermediates the final merge must receive (its ChunkCount): the deltas themselves on
    # the fast path, else one per group or one per chunk — the judge's ChunkCount invariant
    planned = len(keys) if out["fast_path"] else len(out["groups"]) or len(chunks)
    out["planned_chunk_count"] = planned
    if out["use_groups"]:
        plan = [
            list(range(g * groups_of, min(len(chunks), (g + 1) * groups_of))) for g in out["groups"]
        ]
        ctx.blobs.put(Keys.groups_list(batch_id), json.dumps(plan).encode())
    return out


def _merge_to_prefix(
    ctx: WorkflowContext, sources: Sequence[str], db: Database, prefix: str, work: Path
) -> dict[str, Any]:
    """Fetch ``sources`` in order, fold them (later wins) into a new index, upload to ``prefix``.

    An error of the engine names local scratch directories; it is re-raised naming the S3 keys
    they were fetched from.
    """
    names: dict[Path, str] = {}
    paths = []
    for i, key in enumerate(sources):
        local = work / f"src-{i:04d}"
        names[local] = key
        paths.append(fetch_delta(ctx.blobs, key, local, max_bytes=ctx.settings.max_tarball_bytes))
    target = work / "merged"
    names[target] = f"the merge into {prefix}"
    target.mkdir(parents=True)
    try:
        stats = ctx.engine.merge(target, paths, collection=db.value)
    except MergeInputError as exc:
        raise named_after_keys(exc, names) from exc
    upload_directory(ctx.blobs, target, prefix)
    return {"intermediate_key": prefix, "record_count": stats.final_count}


def _stored_chunk(
    ctx: WorkflowContext, event: Mapping[str, Any], batch_id: str, index: int
) -> tuple[list[Any], str]:
    """Chunk ``index`` of the chunk list ``chunks_s3_key`` names: its delta entries.

    Items carry ``deltas`` (ours) or ``delta_results`` (the original's ``chunks.json``).
    """
    key = events.s3_key(event.get("chunks_s3_key"), "event.chunks_s3_key")
    events.same_bucket(event, "chunks_s3_bucket", ctx.blobs.bucket)
    for i, item in enumerate(events.stored_json_list(ctx.blobs, key, "event.chunks_s3_key")):
        at = f"{key}[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidEventError(f"{at} must be an object, got {type(item).__name__}")
        if events.index(item, "chunk_index", where=at) != index:
            continue
        owner = item.get("batch_id")
        if owner is not None and owner != batch_id:
            raise InvalidEventError(f"{at} belongs to batch {owner!r}, not {batch_id!r}")
        field = "deltas" if item.get("deltas") is not None else "delta_results"
        return events.object_list(item.get(field), f"{at}.{field}"), f"{at}.{field}"
    raise InvalidEventError(f"chunk {index} is not in {key}")


def _chunk_deltas(
    ctx: WorkflowContext, event: Mapping[str, Any], batch_id: str, index: int
) -> list[str]:
    """A chunk's delta keys: inline ``deltas`` (ours) or ``delta_results`` (the original's), or
    chunk ``index`` of the list at ``chunks_s3_key`` (the original sends ``delta_results: null``
    with it; an empty inline list with a chunk list also means the stored one, as it did there).
    """
    for field in ("deltas", "delta_results"):
        value = event.get(field)
        if value is not None and value != []:
            where = f"event.{field}"
            return events.delta_keys(events.object_list(value, where), where)
    if event.get("chunks_s3_key") is not None:
        entries, where = _stored_chunk(ctx, event, batch_id, index)
        return events.delta_keys(entries, where)
    if any(event.get(field) == [] for field in ("deltas", "delta_results")):
        raise InvalidEventError(f"chunk {index} of batch {batch_id} has no deltas")
    raise InvalidEventError("process_chunk needs 'deltas', 'delta_results' or 'chunks_s3_key'")


def process_chunk(ctx: WorkflowContext, event: Mapping[str, Any], work: Path) -> dict[str, Any]:
    batch_id, db = events.text(event, "batch_id"), events.database(event)
    index = events.index(event, "chunk_index")
    deltas = _chunk_deltas(ctx, event, batch_id, index)
    out = _merge_to_prefix(ctx, deltas, db, Keys.intermediate_prefix(batch_id, index), work)
    return {"batch_id": batch_id, "chunk_index": index, "delta_count": len(deltas), **out}


def _strip_group_suffix(batch_id: str, group: int) -> str:
    """The original's group events carry ``{batch_id}-group-{g}`` as their batch id."""
    suffix = f"-group-{group}"
    return batch_id[: -len(suffix)] if batch_id.endswith(suffix) else batch_id


def _group_members(
    ctx: WorkflowContext, event: Mapping[str, Any], group: int
) -> tuple[list[events.Result], bool]:
    """The results group ``group`` merges, and whether the event has the original's shape."""
    if event.get("chunk_group") is not None:
        where = "event.chunk_group"
        members = events.object_list(event["chunk_group"], where)
        return events.ordered_results(list(enumerate(members)), where), True
    if event.get("groups_s3_key") is not None:
        key = events.s3_key(event["groups_s3_key"], "event.groups_s3_key")
        events.same_bucket(event, "groups_s3_bucket", ctx.blobs.bucket)
        groups = events.stored_json_list(ctx.blobs, key, "event.groups_s3_key")
        if group >= len(groups):
            raise InvalidEventError(f"group {group} is not in {key} ({len(groups)} groups)")
        where = f"{key}[{group}]"
        members = events.object_list(groups[group], where)
        return events.ordered_results(list(enumerate(members)), where), True
    if event.get("chunk_results") is None:
        raise InvalidEventError(
            "merge_chunk_group needs 'chunk_results' (with group_index and group_size), "
            "'chunk_group' or 'groups_s3_key'"
        )
    where = "event.chunk_results"
    results = events.ordered_results(
        list(enumerate(events.object_list(event["chunk_results"], where))), where
    )
    size = events.optional_count(event, "group_size", ctx.settings.group_size)
    if size < 1:
        raise InvalidEventError(f"event.group_size must be positive, got {size}")
    members_of_group = results[group * size : (group + 1) * size]
    if not members_of_group:
        raise InvalidEventError(f"group {group} of size {size} selects no chunk")
    return members_of_group, False


def merge_chunk_group(ctx: WorkflowContext, event: Mapping[str, Any], work: Path) -> dict[str, Any]:
    batch_id, db = events.text(event, "batch_id"), events.database(event)
    group = events.index(event, "group_index")
    members, original = _group_members(ctx, event, group)
    if original:
        batch_id = _strip_group_suffix(batch_id, group)
    keys = [m.key for m in members]
    out = _merge_to_prefix(ctx, keys, db, Keys.group_prefix(batch_id, group), work)
    return {
        "batch_id": batch_id,
        "group_index": group,
        "chunk_count": len(members),
        "delta_count": events.delta_count(members),
        **out,
    }


def parse_final_merge(event: Mapping[str, Any]) -> FinalMergeRequest:
    """The final merge's request. The original's empty-chunk and empty-group answers are skipped
    (they hold nothing); any other result without an intermediate is refused."""
    batch_id, db = events.text(event, "batch_id"), events.database(event)
    if event.get("chunk_results") is None:
        raise InvalidEventError("event is missing required field 'chunk_results'")
    where = "event.chunk_results"
    listed = events.object_list(event["chunk_results"], where)
    kept = [(i, r) for i, r in enumerate(listed) if not events.is_empty_marker(r)]
    if not kept:
        raise InvalidEventError(f"{where} holds only empty results: nothing to merge")
    ordered = events.ordered_results(kept, where)
    return FinalMergeRequest(
        batch_id=batch_id,
        database=db,
        intermediate_keys=tuple(r.key for r in ordered),
        poll_results_s3_key=events.optional_text(event, "poll_results_s3_key"),
        poll_results_s3_bucket=events.optional_text(event, "poll_results_s3_bucket"),
        execution_id=events.optional_text(event, "execution_id"),
        delta_count=events.delta_count(ordered),
        planned_chunk_count=_planned(event),
    )


def _planned(event: Mapping[str, Any]) -> int | None:
    """``planned_chunk_count`` from the split (absent in an execution started before it)."""
    if event.get("planned_chunk_count") is None:
        return None
    return events.optional_count(event, "planned_chunk_count", 0)
