"""Where flag documents live: one Protocol, interchangeable stores, chosen by the environment.

=============================  ==========================================  =====================
env var                        store                                       version
=============================  ==========================================  =====================
``SNAPMERGE_FLAGS_FILE``       :class:`FileStore` (the embedded default)   sha256 of the bytes
``SNAPMERGE_FLAGS_S3``         :class:`~flags.store_aws.S3Store`           the object's ETag
``SNAPMERGE_FLAGS_SSM``        :class:`~flags.store_aws.SSMStore`          parameter Version
``SNAPMERGE_FLAGS_APPCONFIG``  :class:`~flags.store_aws.AppConfigFlagStore`  sha256 of the JSON
=============================  ==========================================  =====================

With none set, the packaged ``flags/default_flags.json`` (legacy everywhere) is served; with more
than one set the configuration is ambiguous and :func:`store_from_env` refuses it (the client then
fails closed to legacy). ``SNAPMERGE_FLAGS_TTL_SECONDS`` and ``SNAPMERGE_KILL_SWITCH_TTL_SECONDS``
override each store's cache defaults (:class:`CacheSettings`).

Stores raise :class:`~snapmerge.errors.StoreError` when they cannot read,
:class:`~flags.document.FlagDocumentError` when what they read is not a JSON object, and
:class:`~snapmerge.errors.FlagDocumentConflictError` when a conditional save loses.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from flags.document import (
    FlagDocumentError,
    decode_document,
    encode_document,
    validate_document,
)
from flags.store_aws import AppConfigFlagStore, S3Store, SSMStore
from snapmerge.errors import FlagDocumentConflictError, InvalidEventError, StoreError
from snapmerge.localfiles import atomic_write, locked

DEFAULT_DOCUMENT: Final = Path(__file__).with_name("default_flags.json")
ENV_FILE: Final = "SNAPMERGE_FLAGS_FILE"
ENV_S3: Final = "SNAPMERGE_FLAGS_S3"
ENV_SSM: Final = "SNAPMERGE_FLAGS_SSM"
ENV_APPCONFIG: Final = "SNAPMERGE_FLAGS_APPCONFIG"
ENV_TTL: Final = "SNAPMERGE_FLAGS_TTL_SECONDS"
ENV_KILL_TTL: Final = "SNAPMERGE_KILL_SWITCH_TTL_SECONDS"

__all__ = [
    "AppConfigFlagStore",
    "CacheSettings",
    "FileStore",
    "FlagDocumentStore",
    "MemoryStore",
    "S3Store",
    "SSMStore",
    "UnavailableStore",
    "store_from_env",
]


@runtime_checkable
class FlagDocumentStore(Protocol):
    """A flag document and its version; ``save`` is a conditional write.

    ``save(doc, expected_version)`` writes only if the stored version is still
    ``expected_version`` (``None``: only if there is no document yet) and returns the new version;
    otherwise it raises :class:`~snapmerge.errors.FlagDocumentConflictError`. The dict ``load``
    returns is the caller's own copy.
    """

    def load(self) -> tuple[dict[str, Any], str]: ...

    def save(self, doc: dict[str, Any], expected_version: str | None) -> str: ...


@dataclass(frozen=True)
class CacheSettings:
    """How long a provider serves a loaded document before asking the store again.

    The kill switch is read with the shorter ``kill_switch_ttl_seconds`` (never longer than
    ``ttl_seconds``); 0 means "ask the store on every evaluation".
    """

    ttl_seconds: float = 1.0
    kill_switch_ttl_seconds: float = 0.25

    @classmethod
    def for_store(cls, store: object, env: Mapping[str, str] | None = None) -> CacheSettings:
        env = os.environ if env is None else env
        ttl, kill = getattr(store, "default_ttls", (cls.ttl_seconds, cls.kill_switch_ttl_seconds))
        ttl = _seconds(env, ENV_TTL, ttl)
        kill = _seconds(env, ENV_KILL_TTL, kill)
        return cls(ttl, min(kill, ttl))


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise InvalidEventError(f"{name}={raw!r} is not a number of seconds") from None
    if not value >= 0:
        raise InvalidEventError(f"{name}={raw!r} must be >= 0")
    return value


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class FileStore:
    """A local JSON file: the embedded default.

    ``load`` stats the file and re-reads it only when (mtime, size, inode) changed — or when the
    mtime is within ``racy_seconds`` of now, because a same-size rewrite inside one mtime tick is
    invisible to stat (git's "racy clean" problem); re-reading then costs one small read and a
    hash, and an unchanged hash keeps the parsed document. ``save`` takes an ``fcntl`` lock on
    ``<file>.lock``, checks the content hash, writes a temporary file and renames it into place,
    so readers see the old or the new document, never half of one. Editors that bypass ``save``
    are picked up by ``load`` all the same; only the conditional check needs the lock.
    """

    default_ttls: Final = (1.0, 0.25)

    def __init__(self, path: str | Path, *, racy_seconds: float = 2.0) -> None:
        self.path = Path(path)
        self._racy = racy_seconds
        self._signature: tuple[int, int, int, int] | None = None
        self._cached: tuple[dict[str, Any], str] | None = None

    def __repr__(self) -> str:
        return f"FileStore({str(self.path)!r})"

    def load(self) -> tuple[dict[str, Any], str]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise StoreError(f"flag file {self.path} cannot be read: {exc.strerror}") from None
        signature = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)
        settled = time.time() - st.st_mtime > self._racy
        if self._cached and signature == self._signature and settled:
            return copy.deepcopy(self._cached[0]), self._cached[1]
        try:
            body = self.path.read_bytes()
        except OSError as exc:
            raise StoreError(f"flag file {self.path} cannot be read: {exc.strerror}") from None
        version = _sha256(body)
        if not self._cached or self._cached[1] != version:
            self._cached = (decode_document(body, version), version)
        self._signature = signature
        return copy.deepcopy(self._cached[0]), version

    def current_version(self) -> str | None:
        try:
            return _sha256(self.path.read_bytes())
        except FileNotFoundError:
            return None

    def save(self, doc: dict[str, Any], expected_version: str | None) -> str:
        validate_document(doc)
        body = encode_document(doc)
        try:
            with locked(self.path):
                current = self.current_version()
                if current != expected_version:
                    raise FlagDocumentConflictError(str(self.path), expected_version, current)
                atomic_write(self.path, body)
        except OSError as exc:  # no space, no permission: a store failure like any other
            raise StoreError(f"flag file {self.path} cannot be written: {exc.strerror}") from exc
        return _sha256(body)


class MemoryStore:
    """An in-process store for tests and benchmarks; ``raw`` may be set to any (even bad) value."""

    default_ttls: Final = (0.0, 0.0)

    def __init__(self, doc: object | None = None) -> None:
        self.raw: object | None = doc
        self.failure: Exception | None = None
        self.loads = 0

    def load(self) -> tuple[dict[str, Any], str]:
        self.loads += 1
        if self.failure is not None:
            raise self.failure
        if self.raw is None:
            raise StoreError("memory store holds no document")
        version = _sha256(json.dumps(self.raw, separators=(",", ":")).encode())
        if not isinstance(self.raw, dict):
            kind = type(self.raw).__name__
            raise FlagDocumentError(f"flag document is a {kind}, not an object", version)
        return copy.deepcopy(self.raw), version

    def save(self, doc: dict[str, Any], expected_version: str | None) -> str:
        validate_document(doc)
        current = None if self.raw is None else self.load()[1]
        if current != expected_version:
            raise FlagDocumentConflictError("memory", expected_version, current)
        self.raw = copy.deepcopy(doc)
        return self.load()[1]


class UnavailableStore:
    """What a broken configuration yields: every load fails, so the provider serves defaults."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def load(self) -> tuple[dict[str, Any], str]:
        raise StoreError(self.reason)

    def save(self, doc: dict[str, Any], expected_version: str | None) -> str:
        raise StoreError(self.reason)


def _parse_s3_url(url: str) -> tuple[str, str]:
    if not url.startswith("s3://") or "/" not in url[5:]:
        raise InvalidEventError(f"{ENV_S3}={url!r}: expected s3://bucket/key")
    bucket, key = url[5:].split("/", 1)
    if not bucket or not key:
        raise InvalidEventError(f"{ENV_S3}={url!r}: expected s3://bucket/key")
    return bucket, key


def store_from_env(env: Mapping[str, str] | None = None) -> FlagDocumentStore:
    """The store the environment names (see the module docstring); raises InvalidEventError."""
    env = os.environ if env is None else env
    chosen = {k: env[k].strip() for k in (ENV_FILE, ENV_S3, ENV_SSM, ENV_APPCONFIG) if env.get(k)}
    if len(chosen) > 1:
        raise InvalidEventError(f"more than one flag store configured: {sorted(chosen)}")
    if not chosen:
        return FileStore(DEFAULT_DOCUMENT)
    ((name, value),) = chosen.items()
    if name == ENV_FILE:
        return FileStore(value)
    if name == ENV_S3:
        return S3Store(*_parse_s3_url(value))
    if name == ENV_SSM:
        return SSMStore(value)
    parts = value.split("/")
    if len(parts) != 3 or not all(parts):
        raise InvalidEventError(
            f"{ENV_APPCONFIG}={value!r}: expected application/environment/profile"
        )
    return AppConfigFlagStore(*parts)
