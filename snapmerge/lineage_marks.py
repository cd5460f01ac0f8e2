"""What a publish leaves for the lineage check: a :class:`Publish` record, kept as a *pending
mark* at ``{db}/snapshot/lineage/pending/{version}.json`` until the check confirms it.

The merge writes the mark right after each publish (:func:`mark_pending`, from its receipt:
:func:`publish_of`); :class:`snapmerge.lineage.LineageChecker` reads the marks back
(:func:`pending_publishes`) and deletes each once the publish is confirmed.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from snapmerge.domain import Database, Keys, VersionId
from snapmerge.errors import PointerConflictError, SnapshotError
from snapmerge.ports import BlobStore


@dataclass(frozen=True)
class Publish:
    """One publish of ours: the version, what it was built on, the batch it carried."""

    version: VersionId
    base_version: VersionId | None
    batch_id: str
    published_at: str = ""

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Publish:
        try:
            raw: dict[str, Any] = json.loads(text)
            base = raw.get("base_version")
            return cls(
                VersionId(str(raw["version"])),
                VersionId(str(base)) if base else None,
                str(raw["batch_id"]),
                str(raw.get("published_at", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"unreadable lineage record: {exc}") from exc


def publish_of(receipt: dict[str, Any]) -> Publish:
    """The publish a receipt records, stamped now (the lineage mark written after it)."""
    base = receipt.get("base_version")
    return Publish(
        VersionId(str(receipt["version"])),
        VersionId(str(base)) if base else None,
        str(receipt["batch_id"]),
        datetime.now(UTC).isoformat(),
    )


def mark_pending(blobs: BlobStore, db: Database, publish: Publish) -> None:
    """Record a publish as not yet confirmed (idempotent: a replay finds the mark there)."""
    key = Keys.lineage_pending(db, publish.version)
    with contextlib.suppress(PointerConflictError):
        blobs.put(key, publish.to_json().encode(), if_none_match=True)


def pending_publishes(blobs: BlobStore, db: Database) -> list[Publish]:
    found = []
    for key in blobs.list(Keys.lineage_pending_prefix(db)):
        blob = blobs.get(key)
        if blob is not None:
            found.append(Publish.from_json(blob.body))
    return found
