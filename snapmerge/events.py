"""Reading event fields with their types checked: every wrong field is an ``InvalidEventError``
that names it (docs/events.md).

Step Functions catches ``InvalidEventError`` as ``InputRejected``; a bare ``TypeError`` or
``KeyError`` from deep inside a step is an unexpected fault instead (retried, then reported as a
crash). So nothing here lets a JSON value of the wrong type reach ``int()``, ``str()`` or a
subscript: each reader checks the type first and says which field, at which path, was wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from snapmerge.domain import Database
from snapmerge.errors import InvalidEventError
from snapmerge.ports import BlobStore

MAX_KEY_BYTES = 1024  # S3's limit on a key


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def text(event: Mapping[str, Any], field: str, *, where: str = "event") -> str:
    """A required, non-empty string field."""
    value = event.get(field)
    if value is None or value == "":
        raise InvalidEventError(f"{where} is missing required field {field!r}")
    if not isinstance(value, str):
        raise InvalidEventError(f"{where}.{field} must be a string, got {_kind(value)}")
    if "\x00" in value:
        raise InvalidEventError(f"{where}.{field} holds a NUL character")
    return value


def optional_text(event: Mapping[str, Any], field: str, *, where: str = "event") -> str | None:
    """A string field that may be absent or null (passed through, e.g. the poll-result keys)."""
    if event.get(field) is None:
        return None
    return text(event, field, where=where)


def index(event: Mapping[str, Any], field: str, *, where: str = "event") -> int:
    """A required non-negative integer (JSON number without a fraction; booleans refused)."""
    value = event.get(field)
    if value is None:
        raise InvalidEventError(f"{where} is missing required field {field!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEventError(f"{where}.{field} must be an integer, got {_kind(value)}")
    if value < 0:
        raise InvalidEventError(f"{where}.{field} must not be negative, got {value}")
    return value


def optional_count(
    event: Mapping[str, Any], field: str, default: int, *, where: str = "event"
) -> int:
    return default if event.get(field) is None else index(event, field, where=where)


def database(event: Mapping[str, Any]) -> Database:
    return Database.parse(text(event, "database"))


def s3_key(value: object, where: str) -> str:
    """An object key or prefix: a non-empty string S3 could hold, with no control characters."""
    if not isinstance(value, str) or not value:
        raise InvalidEventError(
            f"{where} must be a non-empty string (an S3 key), got {value!r:.80}"
        )
    if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidEventError(f"{where} is longer than S3's {MAX_KEY_BYTES}-byte key limit")
    if any(ord(c) < 32 for c in value):
        raise InvalidEventError(f"{where} holds a control character: {value!r:.80}")
    return value


def same_bucket(event: Mapping[str, Any], field: str, bucket: str) -> None:
    """A ``*_bucket`` field may name only the bucket this function reads (CHROMADB_BUCKET)."""
    named = optional_text(event, field)
    if named is not None and named != bucket:
        raise InvalidEventError(
            f"event.{field} is {named!r}, but this function reads {bucket!r} (CHROMADB_BUCKET)"
        )


def object_list(value: object, where: str, *, allow_empty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidEventError(f"{where} must be a list, got {_kind(value)}")
    if not value and not allow_empty:
        raise InvalidEventError(f"{where} is empty")
    return value


def stored_json_list(blobs: BlobStore, key: str, where: str) -> list[Any]:
    """The JSON list stored at ``key`` (a chunk, group or poll-result list the event names)."""
    blob = blobs.get(key)
    if blob is None:
        raise InvalidEventError(f"{where} names {key}, which does not exist")
    try:
        data = json.loads(blob.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidEventError(f"{key} (named by {where}) is not JSON: {exc}") from None
    return object_list(data, f"{key} (named by {where})", allow_empty=True)


def delta_keys(items: list[Any], where: str) -> list[str]:
    """The delta keys of ``delta_results`` entries: a key, or ``{delta_key, collection?, ...}``.

    Which collection a delta really holds is checked when it is opened, not here: the event's
    ``collection`` only chooses the chunk size.
    """
    keys = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if isinstance(item, Mapping):
            keys.append(s3_key(item.get("delta_key"), f"{at}.delta_key"))
            collection = item.get("collection")
            if collection is not None and not isinstance(collection, str):
                raise InvalidEventError(
                    f"{at}.collection must be a string, got {_kind(collection)}"
                )
        else:
            keys.append(s3_key(item, at))
    return keys


def intermediate_key(item: object, where: str) -> str:
    """A chunk or group result: ``{"intermediate_key": ...}`` (or, in a chunk group, a bare key)."""
    if isinstance(item, str):
        return s3_key(item, where)
    if not isinstance(item, Mapping):
        raise InvalidEventError(
            f"{where} must be an object with intermediate_key, got {_kind(item)}"
        )
    if item.get("intermediate_key") is None:
        raise InvalidEventError(f"{where} has no intermediate_key")
    return s3_key(item["intermediate_key"], f"{where}.intermediate_key")


def is_empty_marker(item: object) -> bool:
    """The original's answer for an empty chunk or group: a success body with nothing merged.

    ``merge_chunk_group`` answered ``{"statusCode": 200, "empty": true, ...}`` and
    ``process_chunk`` ``{"statusCode": 200, "message": "Empty chunk processed", ...}``; an
    execution started before the cut-over may carry them into our final merge. Any other body
    without an intermediate (an error body above all) is refused, never skipped.
    """
    if not isinstance(item, Mapping) or "intermediate_key" in item:
        return False
    if item.get("statusCode") != 200:
        return False
    message = item.get("message")
    return item.get("empty") is True or (isinstance(message, str) and message.startswith("Empty"))


@dataclass(frozen=True)
class Result:
    """One chunk or group result of an event: where it was, its intermediate, its item."""

    where: str
    key: str
    item: Mapping[str, Any]


def ordered_results(pairs: Sequence[tuple[int, object]], where: str) -> list[Result]:
    """Chunk or group results in merge order: by ``group_index`` when every result has one,
    else by ``chunk_index`` when every one has that, else as listed (the original's results
    carry neither: a Map answers in item order)."""
    out = []
    for i, item in pairs:
        at = f"{where}[{i}]"
        key = intermediate_key(item, at)
        out.append(Result(at, key, item if isinstance(item, Mapping) else {}))
    for field in ("group_index", "chunk_index"):
        present = [r for r in out if r.item.get(field) is not None]
        order = {id(r): index(r.item, field, where=r.where) for r in present}
        if out and len(present) == len(out):
            return sorted(out, key=lambda r: order[id(r)])
    return out


def delta_count(results: Sequence[Result]) -> int:
    return sum(optional_count(r.item, "delta_count", 0, where=r.where) for r in results)
