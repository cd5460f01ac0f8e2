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

from snapmerge.config import Settings
from snapmerge.deltas import fetch_delta
from snapmerge.domain import Database, FinalMergeRequest, Keys
from snapmerge.errors import InvalidEventError, MergeInputError
from snapmerge.ports import BlobStore, IndexEngine
from snapmerge.transfer import upload_directory

# Step Functions payloads are capped at 256 KiB; above this the chunk list goes to S3.
INLINE_CHUNKS_LIMIT_BYTES = 128 * 1024
GROUPING_THRESHOLD = 4  # more chunks than this are merged in groups first

ChunkSizer = Callable[[Database | None], int]


@dataclass(frozen=True)
class WorkflowContext:
    blobs: BlobStore
    engine: IndexEngine
    settings: Settings
    workdir: Path


def require(event: Mapping[str, Any], *fields: str) -> None:
    missing = [f for f in fields if event.get(f) in (None, "")]
    if missing:
        raise InvalidEventError(f"event is missing required field(s): {', '.join(missing)}")


def default_chunk_size(settings: Settings) -> ChunkSizer:
    """CHUNK_SIZE_WORDS / CHUNK_SIZE_LINES by database (either spelling), CHUNK_SIZE otherwise."""

    def size(db: Database | None) -> int:
        if db is Database.WORDS:
            return settings.chunk_size_words
        if db is Database.LINES:
            return settings.chunk_size_lines
        return settings.chunk_size

    return size


def _delta_keys(ctx: WorkflowContext, event: Mapping[str, Any]) -> list[dict[str, Any]]:
    deltas = event.get("delta_results")
    if deltas is None and event.get("poll_results_s3_key"):
        bucket = event.get("poll_results_s3_bucket")
        if bucket and bucket != ctx.blobs.bucket:
            raise InvalidEventError(
                f"poll results are in bucket {bucket!r}, but this function reads "
                f"{ctx.blobs.bucket!r} (CHROMADB_BUCKET); pass delta_results inline instead"
            )
        blob = ctx.blobs.get(str(event["poll_results_s3_key"]))
        if blob is None:
            raise InvalidEventError(f"poll results {event['poll_results_s3_key']} do not exist")
        deltas = json.loads(blob.body)
    if not isinstance(deltas, list):
        raise InvalidEventError("event needs 'delta_results' (a list) or 'poll_results_s3_key'")
    out = []
    for i, item in enumerate(deltas):
        entry = {"delta_key": item} if isinstance(item, str) else dict(item)
        if not entry.get("delta_key"):
            raise InvalidEventError(f"delta_results[{i}] has no delta_key")
        out.append(entry)
    return out


def _collection_db(entry: Mapping[str, Any], fallback: Database) -> Database | None:
    """The database a delta belongs to: its first collection counts, in either spelling."""
    name = entry.get("collection")
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
    require(event, "batch_id", "database")
    batch_id, db = str(event["batch_id"]), Database.parse(event["database"])
    deltas = _delta_keys(ctx, event)
    sizer = chunk_size or default_chunk_size(ctx.settings)
    size = sizer(_collection_db(deltas[0], db) if deltas else db)
    groups_of = group_size or ctx.settings.group_size
    if size < 1 or groups_of < 1:
        raise InvalidEventError(f"chunk size {size} and group size {groups_of} must be positive")
    keys = [d["delta_key"] for d in deltas]
    chunks = [
        {"batch_id": batch_id, "database": db.value, "chunk_index": i, "deltas": keys[o : o + size]}
        for i, o in enumerate(range(0, len(keys), size))
    ]
    out: dict[str, Any] = {
        "batch_id": batch_id,
        "database": db.value,
        "total_chunks": len(chunks),
        "chunk_size": size,
        "delta_count": len(keys),
        "poll_results_s3_key": event.get("poll_results_s3_key"),
        "poll_results_s3_bucket": event.get("poll_results_s3_bucket"),
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
    if out["use_groups"]:
        plan = [
            list(range(g * groups_of, min(len(chunks), (g + 1) * groups_of))) for g in out["groups"]
        ]
        ctx.blobs.put(Keys.groups_list(batch_id), json.dumps(plan).encode())
    return out


def _merge_to_prefix(
    ctx: WorkflowContext, sources: Sequence[str], db: Database, prefix: str, work: Path
) -> dict[str, Any]:
    """Fetch ``sources`` in order, fold them (later wins) into a new index, upload to ``prefix``."""
    paths = [
        fetch_delta(ctx.blobs, key, work / f"src-{i:04d}", max_bytes=ctx.settings.max_tarball_bytes)
        for i, key in enumerate(sources)
    ]
    target = work / "merged"
    target.mkdir(parents=True)
    stats = ctx.engine.merge(target, paths, collection=db.value)
    upload_directory(ctx.blobs, target, prefix)
    return {"intermediate_key": prefix, "record_count": stats.final_count}


def _chunk_deltas(ctx: WorkflowContext, event: Mapping[str, Any]) -> list[str]:
    if event.get("deltas") is not None:
        deltas = event["deltas"]
    elif event.get("chunks_s3_key"):
        blob = ctx.blobs.get(str(event["chunks_s3_key"]))
        if blob is None:
            raise InvalidEventError(f"chunk list {event['chunks_s3_key']} does not exist")
        index = int(event["chunk_index"])
        deltas = next(
            (c["deltas"] for c in json.loads(blob.body) if c["chunk_index"] == index), None
        )
        if deltas is None:
            raise InvalidEventError(f"chunk {index} is not in {event['chunks_s3_key']}")
    else:
        raise InvalidEventError("process_chunk needs 'deltas' or 'chunks_s3_key'")
    if not isinstance(deltas, list) or not deltas:
        raise MergeInputError(f"chunk {event.get('chunk_index')} has no deltas")
    return [str(d) for d in deltas]


def process_chunk(ctx: WorkflowContext, event: Mapping[str, Any], work: Path) -> dict[str, Any]:
    require(event, "batch_id", "database", "chunk_index")
    batch_id, db, index = (
        str(event["batch_id"]),
        Database.parse(event["database"]),
        int(event["chunk_index"]),
    )
    deltas = _chunk_deltas(ctx, event)
    out = _merge_to_prefix(ctx, deltas, db, Keys.intermediate_prefix(batch_id, index), work)
    return {"batch_id": batch_id, "chunk_index": index, "delta_count": len(deltas), **out}


def _ordered(results: Sequence[Mapping[str, Any]], field: str) -> list[Mapping[str, Any]]:
    for i, r in enumerate(results):
        if not isinstance(r, Mapping) or not r.get("intermediate_key"):
            raise InvalidEventError(f"chunk_results[{i}] has no intermediate_key")
    return sorted(results, key=lambda r: int(r.get(field, 0)))


def merge_chunk_group(ctx: WorkflowContext, event: Mapping[str, Any], work: Path) -> dict[str, Any]:
    require(event, "batch_id", "database", "group_index", "chunk_results")
    batch_id, db = str(event["batch_id"]), Database.parse(event["database"])
    group, size = int(event["group_index"]), int(event.get("group_size") or ctx.settings.group_size)
    ordered = _ordered(event["chunk_results"], "chunk_index")
    members = ordered[group * size : (group + 1) * size]
    if not members:
        raise InvalidEventError(f"group {group} of size {size} selects no chunk")
    keys = [str(m["intermediate_key"]) for m in members]
    out = _merge_to_prefix(ctx, keys, db, Keys.group_prefix(batch_id, group), work)
    return {
        "batch_id": batch_id,
        "group_index": group,
        "chunk_count": len(members),
        "delta_count": sum(int(m.get("delta_count", 0)) for m in members),
        **out,
    }


def parse_final_merge(event: Mapping[str, Any]) -> FinalMergeRequest:
    require(event, "batch_id", "database", "chunk_results")
    results = event["chunk_results"]
    if not isinstance(results, list) or not results:
        raise InvalidEventError("chunk_results must be a non-empty list")
    field = "group_index" if all("group_index" in r for r in results) else "chunk_index"
    ordered = _ordered(results, field)
    return FinalMergeRequest(
        batch_id=str(event["batch_id"]),
        database=Database.parse(event["database"]),
        intermediate_keys=tuple(str(r["intermediate_key"]) for r in ordered),
        poll_results_s3_key=event.get("poll_results_s3_key"),
        poll_results_s3_bucket=event.get("poll_results_s3_bucket"),
        execution_id=event.get("execution_id"),
        delta_count=sum(int(r.get("delta_count", 0)) for r in ordered),
    )
