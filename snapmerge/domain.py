"""Domain values shared by every layer: databases, S3 keys, version ids, records, results.

Everything here is pure: no I/O, no boto3, no chromadb.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NewType
from urllib.parse import quote

from snapmerge.errors import InvalidEventError

VersionId = NewType("VersionId", str)
"""A snapshot version: ``YYYYMMDD_HHMMSS`` (the original), or that + ``_ffffff_<hex32>`` (ours)."""

LATEST_DIRECT = VersionId("latest-direct")
"""The base the original reader uses when there is no pointer: ``{db}/snapshot/latest/``."""

S3Key = NewType("S3Key", str)

DEFAULT_DIMENSION = 1536


class Database(StrEnum):
    WORDS = "words"
    LINES = "lines"

    @classmethod
    def parse(cls, value: object) -> Database:
        try:
            return cls(str(value))
        except ValueError:
            raise InvalidEventError(
                f"unknown database {value!r}: expected one of {[d.value for d in cls]}"
            ) from None

    @property
    def collection_names(self) -> tuple[str, str]:
        """Both spellings a delta may use for this database's collection."""
        return (self.value, f"receipt_{self.value}")

    @classmethod
    def from_collection(cls, name: str) -> Database:
        """``words`` and ``receipt_words`` both mean WORDS (the original ignored one spelling)."""
        for db in cls:
            if name in db.collection_names:
                return db
        raise InvalidEventError(f"collection {name!r} belongs to no known database")


class MergePath(StrEnum):
    LEGACY = "legacy"
    TWO_PHASE = "two_phase"
    SHADOW = "shadow"


class LockScope(StrEnum):
    """Which lock id a final merge takes (DESIGN §1)."""

    COLLECTION = "collection"  # chroma-{collection}-update: shared by every writer (default)
    PER_BATCH = "per_batch"  # chroma-final-merge-{batch_id}: compatibility only


def lock_id_for(collection: str, batch_id: str, scope: LockScope = LockScope.COLLECTION) -> str:
    if scope is LockScope.PER_BATCH:
        return f"chroma-final-merge-{batch_id}"
    return f"chroma-{collection}-update"


def new_version_id(now: datetime | None = None) -> VersionId:
    """A version id that keeps the original ``YYYYMMDD_HHMMSS`` prefix, sorts by time and is unique.

    The microseconds keep ids from one second in order; 128 random bits keep two publishers in
    the same microsecond (or with skewed clocks) from sharing a prefix in practice. The upload
    still claims its id in the commit log before writing a file (``SnapshotStore.claim_version``).
    """
    now = now or datetime.now(UTC)
    return VersionId(f"{now:%Y%m%d_%H%M%S}_{now:%f}_{secrets.token_hex(16)}")


class Keys:
    """Every S3 key of the original layout, in one place (DESIGN §1)."""

    @staticmethod
    def pointer(db: Database) -> S3Key:
        return S3Key(f"{db.value}/snapshot/latest-pointer.txt")

    @staticmethod
    def versions_prefix(db: Database) -> str:
        return f"{db.value}/snapshot/timestamped/"

    @staticmethod
    def version_prefix(db: Database, version: VersionId) -> str:
        return f"{Keys.versions_prefix(db)}{version}/"

    @staticmethod
    def legacy_latest_prefix(db: Database) -> str:
        return f"{db.value}/snapshot/latest/"

    @staticmethod
    def delta_prefix(db: Database, name: str) -> str:
        return f"{db.value}/delta/{name}/"

    @staticmethod
    def intermediate_prefix(batch_id: str, index: int) -> str:
        return f"intermediate/{batch_id}/chunk-{index}/"

    @staticmethod
    def group_prefix(batch_id: str, group: int) -> str:
        return f"intermediate/{batch_id}-group-{group}/merged/"

    @staticmethod
    def chunks_list(batch_id: str) -> S3Key:
        return S3Key(f"chunks/{batch_id}/chunks.json")

    @staticmethod
    def groups_list(batch_id: str) -> S3Key:
        return S3Key(f"chunk_groups/{batch_id}/groups.json")

    @staticmethod
    def inflight_prefix(db: Database) -> str:
        """Markers of merges in flight, by base version; retention spares those bases."""
        return f"{db.value}/snapshot/inflight/"

    @staticmethod
    def manifest(db: Database, version: VersionId) -> S3Key:
        """The commit-log entry of a version: outside its prefix, never deleted by retention."""
        return S3Key(f"{Keys.manifests_prefix(db)}{version}.json")

    @staticmethod
    def manifests_prefix(db: Database) -> str:
        return f"{db.value}/snapshot/manifests/"

    @staticmethod
    def all_claims_prefix(db: Database) -> str:
        return f"{db.value}/snapshot/claims/"

    @staticmethod
    def claims_prefix(db: Database, batch_id: str) -> str:
        """Every version a batch claimed before its pointer swap (one object each)."""
        return f"{Keys.all_claims_prefix(db)}{quote(batch_id, safe='')}/"

    @staticmethod
    def claim(db: Database, batch_id: str, version: VersionId) -> S3Key:
        return S3Key(f"{Keys.claims_prefix(db, batch_id)}{version}.json")

    @staticmethod
    def receipt(db: Database, batch_id: str) -> S3Key:
        """What a batch's publish returned; a retried final merge answers from it."""
        return S3Key(f"{Keys.receipts_prefix(db)}{batch_id}.json")

    @staticmethod
    def receipts_prefix(db: Database) -> str:
        return f"{db.value}/snapshot/receipts/"

    @staticmethod
    def lineage_pending_prefix(db: Database) -> str:
        """Publishes whose lineage is not confirmed yet (retention keeps them and their bases)."""
        return f"{db.value}/snapshot/lineage/pending/"

    @staticmethod
    def lineage_pending(db: Database, version: VersionId) -> S3Key:
        return S3Key(f"{Keys.lineage_pending_prefix(db)}{version}.json")


@dataclass(frozen=True)
class Pointer:
    """The pointer object's value and the ETag it was read with (the CAS token).

    ``exists=False`` is a base with no pointer object behind it (``latest/``, or the newest
    complete version when the operator opted in to a rebuild): its publish is ``If-None-Match``.
    """

    version: VersionId
    etag: str
    exists: bool = True


@dataclass(frozen=True)
class Record:
    """One Chroma record. ``embedding`` is float32 values as a tuple (hashable, comparable)."""

    id: str
    embedding: tuple[float, ...]
    document: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class MergeStats:
    """What one merge of intermediates into a base did."""

    base_count: int
    new_ids: int
    changed_vectors: int
    metadata_only: int
    unchanged: int
    final_count: int
    dimension: int
    records_merged: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    # On-disk format ids (``sysdb9.metadb5.queue2``); None where the engine has none (the fake).
    format_before: str | None = None  # the base's; None for a new target
    format_after: str | None = None
    format_upgraded: bool = False  # the operator allowed it (SNAPMERGE_ALLOW_FORMAT_UPGRADE)


@dataclass(frozen=True)
class FinalMergeResult:
    """What either final-merge path returns; the handler shapes it into the event response."""

    path: MergePath
    batch_id: str
    database: Database
    version: VersionId
    base_version: VersionId | None
    snapshot_key: str
    total_embeddings: int
    processing_time_seconds: float
    chunk_count: int
    delta_count: int
    records_merged: int
    lock_wait_ms: float
    lock_hold_ms: float
    lock_phases_ms: dict[str, float] = field(default_factory=dict)
    lock_contention: int = 0
    cas_failures: int = 0
    cas_retries: int = 0
    fallback_to_legacy: bool = False
    replayed: bool = False
    digest: str = ""
    snapshot_format: str = ""  # the published snapshot's on-disk format id ("" if unknown)
    format_upgraded: bool = False  # published in a newer format than its base, on purpose
    # Group commit (issue 12), optional so today's paths and old receipts need not set them:
    # the batches the published version consumed, in apply order (empty: this batch alone); the
    # batch whose execution published it (None: this execution did); versions this execution
    # built and uploaded that were never published (None: not counted by the path).
    consumed_batches: tuple[str, ...] = ()
    published_by: str | None = None
    wasted_builds: int | None = None
    lost_publishes: int = 0  # earlier publishes the check after this one found overwritten

    def __post_init__(self) -> None:
        # a receipt read back from JSON carries a list
        object.__setattr__(self, "consumed_batches", tuple(self.consumed_batches))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.value if isinstance(value, StrEnum) else value
        return out


@dataclass(frozen=True)
class FinalMergeRequest:
    """The inputs of a final merge, parsed from the ``final_merge`` event (DESIGN §1)."""

    batch_id: str
    database: Database
    intermediate_keys: tuple[str, ...]
    poll_results_s3_key: str | None = None
    poll_results_s3_bucket: str | None = None
    execution_id: str | None = None
    delta_count: int = 0
    # the intermediates the split planned for this final merge (None: not told)
    planned_chunk_count: int | None = None

    @property
    def collection(self) -> str:
        return self.database.value
