"""The compaction workflow's operations as plain functions (DESIGN §1, steps 3–4, and the
parsing of step 5's event; the split, step 2, is ``snapmerge/split.py``).

Each takes the event dict the Lambda receives and returns the dict it answers with; a failure
raises (never a success-shaped body). Event shapes are documented in ``docs/events.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


@dataclass(frozen=True)
class WorkflowContext:
    """What every workflow step works with: the bucket, the merge engine, the settings and a
    scratch directory."""

    blobs: BlobStore
    engine: IndexEngine
    settings: Settings
    workdir: Path


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
