"""What the original pipeline's state machine and producers send, built independently.

The shapes follow the original's state machine definitions and handlers (the unified embedding
Lambda's ``process_chunk`` / ``merge_chunk_group`` / ``final_merge`` events, its split step's
``chunks.json``, its group step's ``groups.json``, and its CompactionRun producer, which tars a
delta directory with ``arcname='.'`` and reports the *prefix* holding ``delta.tar.gz``). Nothing
here is taken from that code; each builder writes the documented shape from scratch.
"""

from __future__ import annotations

import json
import tarfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from snapmerge import synth
from snapmerge.domain import Database, Record
from snapmerge.ports import BlobStore, IndexEngine
from snapmerge.transfer import upload_directory


def compaction_run_delta(
    blobs: BlobStore, engine: IndexEngine, db: Database, records: Sequence[Record], tmp: Path
) -> str:
    """A CompactionRun delta: ``{db}/delta/{run}/delta.tar.gz`` packed from '.', named by prefix."""
    run = uuid.uuid4().hex
    directory = tmp / f"run-{run}"
    synth.write_index(engine, directory, records, f"receipt_{db.value}")
    tar_path = tmp / f"{run}.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(directory, arcname=".")  # members: '.', './chroma.sqlite3', ...
    prefix = f"{db.value}/delta/{run}/"
    blobs.upload_file(f"{prefix}delta.tar.gz", tar_path)
    return prefix


def directory_delta(
    blobs: BlobStore, engine: IndexEngine, db: Database, records: Sequence[Record], tmp: Path
) -> str:
    """A raw delta directory at ``{db}/delta/{hex}/`` (the polling producer's default)."""
    name = uuid.uuid4().hex
    directory = tmp / f"dir-{name}"
    synth.write_index(engine, directory, records, f"receipt_{db.value}")
    prefix = f"{db.value}/delta/{name}/"
    upload_directory(blobs, directory, prefix)
    return prefix


def delta_result(delta_key: str, count: int, collection: str) -> dict[str, Any]:
    """One ``delta_results`` entry as the polling step reports a saved delta."""
    delta_id = delta_key.rstrip("/").split("/")[-1]
    return {
        "delta_key": delta_key,
        "delta_id": delta_id,
        "embedding_count": count,
        "collection": collection,
    }


def chunks_file(batch_id: str, deltas: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """The split step's chunk list (``chunks/{batch}/chunks.json``): items carry delta_results."""
    return [
        {
            "chunk_index": n,
            "batch_id": batch_id,
            "delta_results": deltas[start : start + size],
            "operation": "process_chunk",
        }
        for n, start in enumerate(range(0, len(deltas), size))
    ]


def store_json(blobs: BlobStore, key: str, value: object) -> str:
    blobs.put(key, json.dumps(value, indent=2).encode())
    return key


def process_chunk_inline(chunk: dict[str, Any], db: Database) -> dict[str, Any]:
    """The Map item when the chunks were inline: delta_results set, the S3 fields null."""
    return {
        "operation": "process_chunk",
        "batch_id": chunk["batch_id"],
        "chunk_index": chunk["chunk_index"],
        "delta_results": chunk["delta_results"],
        "chunks_s3_key": None,
        "chunks_s3_bucket": None,
        "database": db.value,
    }


def process_chunk_from_s3(
    batch_id: str, index: int, key: str, bucket: str, db: Database
) -> dict[str, Any]:
    """The Map item after load_chunks_from_s3: delta_results null, the chunk list's key set."""
    return {
        "operation": "process_chunk",
        "batch_id": batch_id,
        "chunk_index": index,
        "delta_results": None,
        "chunks_s3_key": key,
        "chunks_s3_bucket": bucket,
        "database": db.value,
    }


def as_original_result(answer: dict[str, Any]) -> dict[str, Any]:
    """The original's chunk/group answer held only the intermediate key (no index)."""
    return {"intermediate_key": answer["intermediate_key"]}


def groups_file(results: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """The group step's ``chunk_groups/{batch}/groups.json``: consecutive slices of results."""
    return [results[start : start + size] for start in range(0, len(results), size)]


def merge_group_inline(
    batch_id: str, group: int, members: list[Any], db: Database
) -> dict[str, Any]:
    return {
        "operation": "merge_chunk_group",
        "batch_id": f"{batch_id}-group-{group}",  # States.Format('{}-group-{}', ...)
        "group_index": group,
        "chunk_group": members,
        "groups_s3_key": None,
        "groups_s3_bucket": None,
        "database": db.value,
    }


def merge_group_from_s3(
    batch_id: str, group: int, key: str, bucket: str, db: Database
) -> dict[str, Any]:
    return {
        "operation": "merge_chunk_group",
        "batch_id": f"{batch_id}-group-{group}",
        "group_index": group,
        "chunk_group": None,
        "groups_s3_key": key,
        "groups_s3_bucket": bucket,
        "database": db.value,
    }


def final_merge(
    batch_id: str, results: list[dict[str, Any]], db: Database, poll_key: str, bucket: str
) -> dict[str, Any]:
    return {
        "operation": "final_merge",
        "batch_id": batch_id,
        "chunk_results": results,
        "database": db.value,
        "poll_results_s3_key": poll_key,
        "poll_results_s3_bucket": bucket,
    }


EMPTY_GROUP = {
    "statusCode": 200,
    "batch_id": "b-group-9",
    "group_index": 9,
    "message": "Empty chunk group processed - no intermediate_key",
    "empty": True,
}
EMPTY_CHUNK = {
    "statusCode": 200,
    "batch_id": "b",
    "chunk_index": 7,
    "embeddings_processed": 0,
    "message": "Empty chunk processed",
}
ERROR_BODY = {"statusCode": 500, "error": "boom", "batch_id": "b", "group_index": 3}
