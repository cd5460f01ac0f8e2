"""Where the controller's state lives: conditional writes, so two controllers never both act.

A :class:`StateStore` returns the state with an opaque version and writes only if the stored
version is still the expected one (``None``: only if there is no state yet); otherwise it raises
:class:`StateConflictError`. The controller persists what it is *about* to do (``pending``) with
such a write before it touches the flag document, so exactly one of two racing controllers gets
to act, and a controller that crashes mid-transition is finished by the next one.

* :class:`FileStateStore` — a local JSON file; writes hold an ``fcntl`` lock on ``<file>.lock``,
  compare the sha256 of the current bytes, and rename a temporary file into place.
* :class:`BlobStateStore` — one object in a :class:`~snapmerge.ports.BlobStore` (S3 through
  :class:`~snapmerge.adapters.s3_store.S3BlobStore`), written with ``If-Match`` on its ETag, or
  ``If-None-Match: *`` to create.
* :class:`rollout.dynamo.DynamoStateStore` — one DynamoDB item, written on a condition.

The state itself (:class:`~rollout.state_types.RolloutState`) is in :mod:`rollout.state_types`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Protocol

from rollout.state_types import RolloutState
from snapmerge.errors import PointerConflictError, SnapmergeError, StoreError
from snapmerge.localfiles import atomic_write, locked
from snapmerge.ports import BlobStore

__all__ = [
    "BlobStateStore",
    "FileStateStore",
    "StateConflictError",
    "StateStore",
    "location_of",
]


class StateConflictError(SnapmergeError):
    """The rollout state changed since it was read: another controller acted first."""

    def __init__(self, where: str, expected: str | None, current: str | None) -> None:
        self.where = where
        self.expected = expected
        self.current = current
        super().__init__(
            f"rollout state {where} changed (expected version {expected}, found {current}): "
            "another controller acted first; run `snapmerge rollout status`"
        )


def location_of(store: object) -> str:
    """Where a state store keeps the state (bound into every signature: a record copied to
    another location does not verify); a store without ``location`` is named by its repr."""
    return str(getattr(store, "location", None) or repr(store))


class StateStore(Protocol):
    """Keeps the rollout state with an opaque version; writes are conditional on it."""

    def read(self) -> tuple[RolloutState | None, str | None]:
        """The state and its version, or (None, None) when there is none."""
        ...

    def write(self, state: RolloutState, expected_version: str | None) -> str:
        """Write if the version is still ``expected_version``; return the new version."""
        ...


def _encode(state: RolloutState) -> bytes:
    return (json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n").encode()


def _decode(body: bytes, where: str) -> RolloutState:
    try:
        return RolloutState.from_json(json.loads(body))
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise StoreError(f"rollout state {where} is unreadable: {exc!r}") from None


class FileStateStore:
    """The state in a local JSON file (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.location = f"file://{os.path.abspath(self.path)}"

    def __repr__(self) -> str:
        return f"FileStateStore({str(self.path)!r})"

    def read(self) -> tuple[RolloutState | None, str | None]:
        try:
            body = self.path.read_bytes()
        except FileNotFoundError:
            return None, None
        return _decode(body, str(self.path)), hashlib.sha256(body).hexdigest()

    def write(self, state: RolloutState, expected_version: str | None) -> str:
        body = _encode(state)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.path):
            try:
                current: str | None = hashlib.sha256(self.path.read_bytes()).hexdigest()
            except FileNotFoundError:
                current = None
            if current != expected_version:
                raise StateConflictError(str(self.path), expected_version, current)
            atomic_write(self.path, body)
        return hashlib.sha256(body).hexdigest()


class BlobStateStore:
    """The state in one object of a :class:`~snapmerge.ports.BlobStore` (S3)."""

    def __init__(self, blobs: BlobStore, key: str = "rollout/state.json") -> None:
        self.blobs = blobs
        self.key = key
        self.location = f"s3://{blobs.bucket}/{key}"

    def __repr__(self) -> str:
        return f"BlobStateStore('s3://{self.blobs.bucket}/{self.key}')"

    def read(self) -> tuple[RolloutState | None, str | None]:
        blob = self.blobs.get(self.key)
        if blob is None:
            return None, None
        return _decode(blob.body, self.key), blob.etag

    def write(self, state: RolloutState, expected_version: str | None) -> str:
        try:
            if expected_version is None:
                return self.blobs.put(self.key, _encode(state), if_none_match=True)
            return self.blobs.put(self.key, _encode(state), if_match=expected_version)
        except PointerConflictError:
            _, current = self.read()
            raise StateConflictError(repr(self), expected_version, current) from None
