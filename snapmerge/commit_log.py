"""The commit log beside the versions: one manifest per version, and each batch's claims.

    {db}/snapshot/manifests/{version}.json        the version's manifest (its log entry)
    {db}/snapshot/claims/{quoted batch}/{version}.json   "this batch is published as that version"
    {db}/snapshot/published/{version}.json        "the pointer named this version" (after the CAS)

Both live outside ``timestamped/``, so the original writer (which copies every file of a version
into its own next version) never carries them, and retention (which deletes version *data*)
never shortens them. An entry moves through states, each write conditional on the previous one:

    uploading ──► complete ──► retired (its data deleted by retention; still part of the chain)
        └────────────┴──────► discarded (an orphan: never published, data deleted)

``uploading`` is written with ``If-None-Match`` before any file goes into the prefix: it claims
the version id, so two publishers can never write files into one prefix.

Each entry has a ``height`` (its base's + 1) and a ``root`` (where our run of entries starts: None
for the first version ever, else the id of a base we hold no entry for: an original-format version
or ``latest-direct``). Along one chain, heights within a root fall by exactly one per step, so
"is V an ancestor of B?" is decided by a walk of ``height(B) - height(V)`` reads, without trusting
id order (clocks skew). See ``docs/adr/0006-exactly-once.md``.

A *published mark* is written after a version's pointer swap, by the run that swapped it and by
every replay of it, before its receipt: an upload whose run died before its CAS has none. The
published chain is every marked version and its bases; with the pointer gone, its top is what a
rebuild starts from (``snapmerge/bases.py``). A crash between the CAS and the mark leaves a
published version unmarked until the next publish on it (its base link covers it) or its replay.

The entry itself (:class:`~snapmerge.manifest.VersionManifest`) is in ``snapmerge/manifest.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from snapmerge.domain import Database, Keys, VersionId
from snapmerge.errors import PointerConflictError, SnapshotError, VersionTakenError
from snapmerge.manifest import EntryState, VersionManifest
from snapmerge.ports import BlobStore

__all__ = [
    "Claim",
    "CommitLog",
    "lineage",
    "published_key",
    "published_prefix",
]


def published_prefix(db: Database) -> str:
    return f"{db.value}/snapshot/published/"


def published_key(db: Database, version: VersionId) -> str:
    return f"{published_prefix(db)}{version}.json"


def lineage(base: VersionId | None, manifest: VersionManifest | None) -> tuple[int, str | None]:
    """(height, root) of a version built on ``base`` whose complete manifest is ``manifest``."""
    if base is None:
        return 1, None
    if manifest is None:  # original-format, latest-direct: we know nothing below it
        return 1, base
    return manifest.child_lineage()


@dataclass(frozen=True)
class Claim:
    batch_id: str
    version: VersionId
    inputs_digest: str
    listing: str = ""  # the inputs' listing, when the publisher knew it (exactly_once.InputsId)


class CommitLog:
    """The manifests and claims of one database."""

    def __init__(self, blobs: BlobStore, db: Database) -> None:
        self.blobs = blobs
        self.db = db

    # -- entries -------------------------------------------------------------------------------
    def read(self, version: VersionId) -> tuple[VersionManifest, str] | None:
        """The entry of ``version`` and its ETag; an entry naming another version is refused."""
        blob = self.blobs.get(Keys.manifest(self.db, version))
        if blob is None:
            return None
        entry = VersionManifest.from_json(blob.body)
        if entry.version != version:
            key = Keys.manifest(self.db, version)
            raise SnapshotError(f"log entry {key} names {entry.version}")
        return entry, blob.etag

    def entry(self, version: VersionId) -> VersionManifest | None:
        found = self.read(version)
        return None if found is None else found[0]

    def begin(self, manifest: VersionManifest) -> str:
        """Claim ``manifest.version`` (state uploading); a taken id is a SnapshotError."""
        entry = replace(manifest, state=EntryState.UPLOADING.value)
        key = Keys.manifest(self.db, entry.version)
        try:
            return self.blobs.put(key, entry.to_json().encode(), if_none_match=True)
        except PointerConflictError as exc:
            found = self.read(entry.version)
            if found is not None and found[0] == entry:  # our own write; its reply was lost
                return found[1]
            raise VersionTakenError(f"version {entry.version} already exists") from exc

    def advance(self, manifest: VersionManifest, etag: str, state: EntryState) -> str:
        """Move an entry to ``state``, conditional on the ETag we last saw."""
        entry = replace(manifest, state=state.value)
        key = Keys.manifest(self.db, entry.version)
        try:
            return self.blobs.put(key, entry.to_json().encode(), if_match=etag)
        except PointerConflictError as exc:
            found = self.read(entry.version)
            if found is not None and found[0] == entry:
                return found[1]
            raise SnapshotError(f"log entry of {entry.version} changed under us") from exc

    def set_state(self, version: VersionId, state: EntryState) -> None:
        """Retire or discard an entry we did not just write (no-op if there is none).

        A retired entry (published, its data deleted) is never turned into a discarded one: the
        claims that name it must keep counting as published.
        """
        found = self.read(version)
        if found is None or found[0].state == state:
            return
        if found[0].state == EntryState.RETIRED and state == EntryState.DISCARDED:
            return
        self.advance(found[0], found[1], state)

    def versions(self) -> list[VersionId]:
        prefix = Keys.manifests_prefix(self.db)
        names = (key[len(prefix) :] for key in self.blobs.list(prefix))
        return sorted(VersionId(n[: -len(".json")]) for n in names if n.endswith(".json"))

    # -- published marks -----------------------------------------------------------------------
    def mark_published(self, version: VersionId) -> None:
        """Record that the pointer named ``version`` (idempotent: a replay writes it again)."""
        body = json.dumps({"version": version, "at": datetime.now(UTC).isoformat()})
        self.blobs.put(published_key(self.db, version), body.encode())

    def published_marks(self) -> list[VersionId]:
        prefix = published_prefix(self.db)
        names = (key[len(prefix) :] for key in self.blobs.list(prefix))
        return sorted(VersionId(n[: -len(".json")]) for n in names if n.endswith(".json"))

    # -- claims --------------------------------------------------------------------------------
    def write_claim(
        self, batch_id: str, version: VersionId, inputs_digest: str, listing: str = ""
    ) -> None:
        fields = {"listing": listing} if listing else {}
        body = json.dumps(
            {
                "batch_id": batch_id,
                "version": version,
                "inputs_digest": inputs_digest,
                **fields,
                "created_at": datetime.now(UTC).isoformat(),
            }
        ).encode()
        try:
            self.blobs.put(Keys.claim(self.db, batch_id, version), body, if_none_match=True)
        except PointerConflictError:  # our retried write, or a claim of this very version
            claim = self._claim(Keys.claim(self.db, batch_id, version))
            if claim is None or claim.inputs_digest != inputs_digest:
                raise SnapshotError(f"batch {batch_id} already claimed {version}") from None

    def claims(self, batch_id: str) -> list[Claim]:
        found = []
        for key in self.blobs.list(Keys.claims_prefix(self.db, batch_id)):
            claim = self._claim(key)
            if claim is not None and claim.batch_id == batch_id:
                found.append(claim)
        return found

    def all_claims(self) -> list[tuple[str, Claim | None, str]]:
        """Every claim object of every batch: (key, claim or None if unreadable, created_at)."""
        found: list[tuple[str, Claim | None, str]] = []
        for key in self.blobs.list(Keys.all_claims_prefix(self.db)):
            blob = self.blobs.get(key)
            if blob is None:  # deleted since we listed
                continue
            try:
                raw = json.loads(blob.body)
                claim = Claim(
                    str(raw["batch_id"]),
                    VersionId(raw["version"]),
                    str(raw["inputs_digest"]),
                    str(raw.get("listing") or ""),
                )
                found.append((key, claim, str(raw.get("created_at") or "")))
            except (ValueError, KeyError, TypeError):
                found.append((key, None, ""))
        return found

    def delete_entry(self, version: VersionId) -> None:
        """Remove a discarded entry that never held data (``snapmerge gc``)."""
        found = self.read(version)
        if found is not None and found[0].state != EntryState.DISCARDED:
            raise SnapshotError(f"log entry of {version} is {found[0].state}, not discarded")
        self.blobs.delete([Keys.manifest(self.db, version)])

    def delete_claim(self, batch_id: str, version: VersionId) -> None:
        self.blobs.delete([Keys.claim(self.db, batch_id, version)])

    def _claim(self, key: str) -> Claim | None:
        blob = self.blobs.get(key)
        if blob is None:
            return None
        try:
            raw = json.loads(blob.body)
            return Claim(
                str(raw["batch_id"]),
                VersionId(raw["version"]),
                str(raw["inputs_digest"]),
                str(raw.get("listing") or ""),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"claim {key} is unreadable: {exc}") from exc

    # -- ancestry ------------------------------------------------------------------------------
    def is_ancestor(self, entry: VersionManifest, start: VersionId | None) -> bool | None:
        """Is ``entry``'s version ``start`` or below it on ``start``'s chain? None: cannot tell.

        The walk follows base links down from ``start``. It answers False as soon as it reaches
        a version of ``entry``'s root at or below ``entry``'s height (heights fall by one per
        step within a root), or the bottom of a chain that is ours all the way down. It cannot
        tell when it reaches a version it holds no entry for (an original-format version,
        ``latest-direct``) before deciding: the original writer records no base.
        """
        current = start
        while current is not None:
            if current == entry.version:
                return True
            step = self.entry(current)
            if step is None or step.height <= 0:
                return None
            if step.root != entry.root:
                return False if step.root is None else None
            if step.height <= entry.height:
                return False
            current = step.base_version
        return False
