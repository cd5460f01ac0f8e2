"""Settings read from the original pipeline's environment variables (DESIGN §1)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from snapmerge.domain import LockScope
from snapmerge.errors import InvalidEventError


class StorageMode(StrEnum):
    AUTO = "auto"
    S3 = "s3"
    EFS = "efs"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidEventError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise InvalidEventError(f"{name}={value} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidEventError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise InvalidEventError(f"{name}={value} must be positive")
    return value


@dataclass(frozen=True)
class Settings:
    bucket: str
    table: str
    lock_duration: timedelta = timedelta(minutes=16)
    heartbeat_interval: timedelta = timedelta(seconds=60)
    max_heartbeat_failures: int = 3
    chunk_size: int = 25
    chunk_size_words: int = 15
    chunk_size_lines: int = 25
    group_size: int = 20
    chroma_root: Path = field(default_factory=lambda: Path("/tmp/chroma"))
    storage_mode: StorageMode = StorageMode.AUTO
    lock_scope: LockScope = LockScope.COLLECTION
    keep_versions: int = 4
    max_tarball_bytes: int = 2 * 1024**3
    lock_wait_timeout: timedelta = timedelta(minutes=5)
    rebuild_from_newest: bool = False  # a missing pointer: build on the newest complete version
    # Group commit on the two-phase path (issue 12, docs/adr/0008-group-commit.md)
    group_commit: bool = True
    group_wait: timedelta = timedelta(minutes=2)  # longest wait for another builder, in all
    group_beat: timedelta = timedelta(seconds=1)  # how often a builder refreshes its marker
    group_stale: timedelta = timedelta(seconds=8)  # a marker unchanged this long is dead
    change_sets: bool = True  # record what each publish wrote; rebase a lost CAS with them

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        bucket = env.get("CHROMADB_BUCKET") or env.get("S3_BUCKET") or ""
        table = env.get("DYNAMODB_TABLE_NAME", "")
        if not bucket:
            raise InvalidEventError("CHROMADB_BUCKET (or S3_BUCKET) is not set")
        if not table:
            raise InvalidEventError("DYNAMODB_TABLE_NAME is not set")
        try:
            mode = StorageMode(env.get("CHROMADB_STORAGE_MODE", "auto").lower())
            scope = LockScope(env.get("SNAPMERGE_LOCK_SCOPE", "collection").lower())
        except ValueError as exc:
            raise InvalidEventError(str(exc)) from None
        return cls(
            bucket=bucket,
            table=table,
            lock_duration=timedelta(minutes=_float(env, "LOCK_DURATION_MINUTES", 16)),
            heartbeat_interval=timedelta(seconds=_float(env, "HEARTBEAT_INTERVAL_SECONDS", 60)),
            max_heartbeat_failures=_int(env, "MAX_HEARTBEAT_FAILURES", 3),
            chunk_size=_int(env, "CHUNK_SIZE", 25),
            chunk_size_words=_int(env, "CHUNK_SIZE_WORDS", 15),
            chunk_size_lines=_int(env, "CHUNK_SIZE_LINES", 25),
            group_size=_int(env, "GROUP_SIZE", 20),
            chroma_root=Path(env.get("CHROMA_ROOT", "/tmp/chroma")),
            storage_mode=mode,
            lock_scope=scope,
            keep_versions=_int(env, "SNAPMERGE_KEEP_VERSIONS", 4),
            max_tarball_bytes=_int(env, "SNAPMERGE_MAX_TARBALL_BYTES", 2 * 1024**3),
            lock_wait_timeout=timedelta(seconds=_float(env, "SNAPMERGE_LOCK_WAIT_SECONDS", 300)),
            rebuild_from_newest=env.get("SNAPMERGE_REBUILD_FROM_NEWEST", "").lower()
            in ("1", "true", "yes"),
            group_commit=env.get("SNAPMERGE_GROUP_COMMIT", "1").lower() in ("1", "true", "yes"),
            group_wait=timedelta(seconds=_float(env, "SNAPMERGE_GROUP_WAIT_SECONDS", 120)),
            group_beat=timedelta(seconds=_float(env, "SNAPMERGE_GROUP_BEAT_SECONDS", 1)),
            group_stale=timedelta(seconds=_float(env, "SNAPMERGE_GROUP_STALE_SECONDS", 8)),
            change_sets=env.get("SNAPMERGE_CHANGE_SETS", "1").lower() in ("1", "true", "yes"),
        )
