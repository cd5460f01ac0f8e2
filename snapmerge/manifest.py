"""A version's manifest: what the version holds and how it was made — its commit log entry.

An entry moves through states (:class:`EntryState`), each write conditional on the previous
one; where entries are kept and how they move is :mod:`snapmerge.commit_log`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from snapmerge.domain import VersionId
from snapmerge.errors import SnapshotError


class EntryState(StrEnum):
    UPLOADING = "uploading"
    COMPLETE = "complete"
    RETIRED = "retired"
    DISCARDED = "discarded"


@dataclass(frozen=True)
class VersionManifest:
    """What a version holds and how it was made; state ``complete`` marks its files all there."""

    version: VersionId
    base_version: VersionId | None
    batch_id: str
    record_count: int
    dimension: int
    path: str  # the merge path that wrote it: "legacy", "two_phase" or "seed"
    files: tuple[tuple[str, int], ...]
    created_at: str
    digest: str = ""
    height: int = 0  # 0: unknown (a manifest written before the log existed)
    root: str | None = None
    inputs_digest: str = ""
    format: str = ""  # on-disk chromadb format id of the version ("" where unknown)
    format_upgraded_from: str = ""  # the base's format, when the operator allowed an upgrade
    state: str = EntryState.COMPLETE.value
    # Group commit: every batch the version consumed, in apply order, as (batch id, inputs
    # digest, enqueue sequence); empty for a version that applied ``batch_id`` alone.
    batches: tuple[tuple[str, str, int], ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> VersionManifest:
        try:
            raw: dict[str, Any] = json.loads(text)
            return cls(
                version=VersionId(str(raw["version"])),
                base_version=VersionId(raw["base_version"]) if raw.get("base_version") else None,
                batch_id=str(raw["batch_id"]),
                record_count=int(raw["record_count"]),
                dimension=int(raw["dimension"]),
                path=str(raw["path"]),
                files=tuple((str(rel), int(size)) for rel, size in raw["files"]),
                created_at=str(raw["created_at"]),
                digest=str(raw.get("digest", "")),
                height=int(raw.get("height", 0)),
                root=str(raw["root"]) if raw.get("root") else None,
                inputs_digest=str(raw.get("inputs_digest", "")),
                format=str(raw.get("format") or ""),
                format_upgraded_from=str(raw.get("format_upgraded_from") or ""),
                state=str(EntryState(raw.get("state", EntryState.COMPLETE.value))),
                batches=tuple((str(b), str(d), int(q)) for b, d, q in raw.get("batches", ()) or ()),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"unreadable version manifest: {exc}") from exc

    @property
    def consumed(self) -> tuple[str, ...]:
        """The batches this version applied, in order (group commit names several)."""
        return tuple(b for b, _, _ in self.batches) or (self.batch_id,)

    def inputs_of(self, batch_id: str) -> str:
        """The inputs digest this version applied for ``batch_id``."""
        for batch, digest, _ in self.batches:
            if batch == batch_id:
                return digest
        return self.inputs_digest

    @property
    def complete(self) -> bool:
        return self.state == EntryState.COMPLETE

    def child_lineage(self) -> tuple[int, str | None]:
        """(height, root) of a version built on this one."""
        if self.height <= 0:  # a pre-log manifest: its own history is unknown
            return 1, self.version
        return self.height + 1, self.root
