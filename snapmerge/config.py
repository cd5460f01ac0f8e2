"""Settings read from the original pipeline's environment variables (DESIGN §1).

:meth:`Settings.from_env` is the start-up check: lease settings that cannot work are refused
there with a message that names the variables (:meth:`Settings.check_leases`), and the
``per_batch`` lock scope needs an explicit acknowledgement (docs/compatibility.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from snapmerge.domain import LockScope
from snapmerge.errors import InvalidEventError

log = logging.getLogger(__name__)

LEASE_SLACK = timedelta(seconds=5)
"""How much longer than the verify margin a lease must be: the renew inside ``verify`` and the
phase's own reads happen out of that difference."""

DEFAULT_PHASE_LEASE = timedelta(seconds=45)
DEFAULT_VERIFY_MARGIN = timedelta(seconds=30)  # merging.DEFAULT_VERIFY_MARGIN's value
ALLOW_PER_BATCH_ENV = "SNAPMERGE_ALLOW_UNSAFE_PER_BATCH"
_TRUE = {"1", "true", "yes"}


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
    lock_scope: LockScope = LockScope.COLLECTION
    keep_versions: int = 4
    max_tarball_bytes: int = 2 * 1024**3
    lock_wait_timeout: timedelta = timedelta(minutes=5)
    phase_lease: timedelta = DEFAULT_PHASE_LEASE
    """Lease of the two-phase path's short locks (phase 1, phase 3): a holder killed inside one
    blocks its collection for this long, not for ``lock_duration``."""
    verify_margin: timedelta = DEFAULT_VERIFY_MARGIN
    """Lease time ``verify`` demands right before a pointer write."""
    rebuild_from_newest: bool = False  # a missing pointer: build on the published chain's top
    lineage_check: bool = True  # the cheap lineage check after each publish (off the lock)
    lineage_confirm_after: timedelta = timedelta(0)  # beside the original compactor: 15 minutes
    # Group commit on the two-phase path (issue 12, docs/adr/0008-group-commit.md)
    group_commit: bool = True
    group_wait: timedelta = timedelta(minutes=2)  # longest wait for another builder, in all
    group_beat: timedelta = timedelta(seconds=1)  # how often a builder refreshes its marker
    group_stale: timedelta = timedelta(seconds=8)  # a marker unchanged this long is dead
    change_sets: bool = True  # record what each publish wrote; rebase a lost CAS with them
    enqueue_by_listing: bool = False  # group commit: enqueue before fetching (docs/adr/0013)

    def check_leases(self) -> None:
        """Refuse lease settings under which no merge can publish, naming the variables.

        ``Lease.verify`` requires ``verify_margin`` of lease left right after renewing, so a lease
        not longer than the margin (plus :data:`LEASE_SLACK` for the renew itself) fails every
        publish; a heartbeat not shorter than the lease lets every long merge's lease lapse (the
        original stream compactor's 1-minute lease with a 2-minute heartbeat).
        """
        margin = self.verify_margin
        floor = margin + LEASE_SLACK
        problems = []
        if self.lock_duration < floor:
            problems.append(
                f"LOCK_DURATION_MINUTES={_minutes(self.lock_duration)} "
                f"({self.lock_duration.total_seconds():g} s) is shorter than the verify margin "
                f"SNAPMERGE_VERIFY_MARGIN_SECONDS={margin.total_seconds():g} plus "
                f"{LEASE_SLACK.total_seconds():g} s: every publish would fail its lease check"
            )
        if self.phase_lease < floor:
            problems.append(
                f"SNAPMERGE_PHASE_LEASE_SECONDS={self.phase_lease.total_seconds():g} is shorter "
                f"than the verify margin SNAPMERGE_VERIFY_MARGIN_SECONDS="
                f"{margin.total_seconds():g} plus {LEASE_SLACK.total_seconds():g} s: every "
                "two-phase publish would fail its lease check"
            )
        if self.heartbeat_interval >= self.lock_duration:
            problems.append(
                f"HEARTBEAT_INTERVAL_SECONDS={self.heartbeat_interval.total_seconds():g} is not "
                f"shorter than LOCK_DURATION_MINUTES={_minutes(self.lock_duration)}: the lease "
                "would lapse between two heartbeats"
            )
        if problems:
            raise InvalidEventError("lease settings that cannot work: " + "; ".join(problems))

    def check_lock_scope(self, env: Mapping[str, str]) -> None:
        """``per_batch`` only with an explicit acknowledgement, and then with a loud warning."""
        if self.lock_scope is not LockScope.PER_BATCH:
            return
        why = (
            "SNAPMERGE_LOCK_SCOPE=per_batch takes chroma-final-merge-{batch_id}, which excludes "
            "nobody but the same batch: beside any other writer of the pointer (the original "
            "stream compactor or final merge, which write it without a condition) a publish can "
            "be overwritten and its batch lost (docs/compatibility.md)"
        )
        if env.get(ALLOW_PER_BATCH_ENV, "").strip().lower() not in _TRUE:
            raise InvalidEventError(
                f"{why}; set {ALLOW_PER_BATCH_ENV}=true only if snapmerge is the only writer of "
                "the pointer, or use SNAPMERGE_LOCK_SCOPE=collection"
            )
        log.warning("UNSAFE lock scope: %s (acknowledged by %s)", why, ALLOW_PER_BATCH_ENV)

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
            scope = LockScope(env.get("SNAPMERGE_LOCK_SCOPE", "collection").lower())
        except ValueError as exc:
            raise InvalidEventError(str(exc)) from None
        settings = cls(
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
            lock_scope=scope,
            keep_versions=_int(env, "SNAPMERGE_KEEP_VERSIONS", 4),
            max_tarball_bytes=_int(env, "SNAPMERGE_MAX_TARBALL_BYTES", 2 * 1024**3),
            lock_wait_timeout=timedelta(seconds=_float(env, "SNAPMERGE_LOCK_WAIT_SECONDS", 300)),
            phase_lease=timedelta(
                seconds=_float(
                    env, "SNAPMERGE_PHASE_LEASE_SECONDS", DEFAULT_PHASE_LEASE.total_seconds()
                )
            ),
            verify_margin=timedelta(
                seconds=_float(
                    env, "SNAPMERGE_VERIFY_MARGIN_SECONDS", DEFAULT_VERIFY_MARGIN.total_seconds()
                )
            ),
            rebuild_from_newest=env.get("SNAPMERGE_REBUILD_FROM_NEWEST", "").lower()
            in ("1", "true", "yes"),
            lineage_check=env.get("SNAPMERGE_LINEAGE_CHECK", "1").lower()
            not in ("0", "false", "no"),
            lineage_confirm_after=timedelta(
                seconds=_float(env, "SNAPMERGE_LINEAGE_CONFIRM_AFTER_SECONDS", 0)
            ),
            group_commit=env.get("SNAPMERGE_GROUP_COMMIT", "1").lower() in ("1", "true", "yes"),
            group_wait=timedelta(seconds=_float(env, "SNAPMERGE_GROUP_WAIT_SECONDS", 120)),
            group_beat=timedelta(seconds=_float(env, "SNAPMERGE_GROUP_BEAT_SECONDS", 1)),
            group_stale=timedelta(seconds=_float(env, "SNAPMERGE_GROUP_STALE_SECONDS", 8)),
            change_sets=env.get("SNAPMERGE_CHANGE_SETS", "1").lower() in ("1", "true", "yes"),
            enqueue_by_listing=env.get("SNAPMERGE_ENQUEUE_BY_LISTING", "").lower()
            in ("1", "true", "yes"),
        )
        settings.check_leases()
        settings.check_lock_scope(env)
        return settings


def _minutes(value: timedelta) -> str:
    return f"{value.total_seconds() / 60:g}"
