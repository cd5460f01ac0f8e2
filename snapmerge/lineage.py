"""Lineage: every version snapmerge published stays an ancestor of what the pointer names.

A writer outside our protocol (the original stream compactor: its lease lapses, its heartbeat
takes the row back, it writes the pointer without a condition) can overwrite a publish V with a
version O built on V's base: V's batch is then gone from what readers see. We cannot mend that
writer; we can notice and repair. See docs/compatibility.md ("Lineage check and repair").

    publishes   every receipt ({db}/snapshot/receipts/) and every pending mark
                ({db}/snapshot/lineage/pending/{version}.json, written after each publish)
    the chain   the pointer's version, then base links through the commit log, down to the
                bottom or to a version with no log entry (the original writer's)
    verdict     V on the chain: present. Else by content: V is lost if a record V added or
                changed (against V's base) is missing from the pointer's snapshot or holds V's
                base's content there. Without the data to compare, a chain that is ours all the
                way down says lost; one that stops at an original version cannot tell.

A pending mark is deleted (the publish *confirmed*) once V is present and not the pointer itself,
and at least ``confirm_after`` old. Retention keeps every pending version and its base, so a
lost publish can be repaired from what is still on S3 (``snapmerge/lineage_repair.py``). The
records a publish leaves for this check (receipts aside) are in ``snapmerge/lineage_marks.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from snapmerge.commit_log import CommitLog
from snapmerge.domain import LATEST_DIRECT, Keys, Record, VersionId
from snapmerge.errors import SnapshotError, StoreError
from snapmerge.lineage_marks import Publish, pending_publishes
from snapmerge.ports import IndexEngine
from snapmerge.snapshots import SnapshotStore

log = logging.getLogger(__name__)

PUBLISHED_STATES = ("complete", "retired")


@dataclass(frozen=True)
class Loss:
    """A publish that is not in what the pointer names; ``restore`` is what repair re-applies."""

    publish: Publish
    pointer: VersionId | None
    how: str  # "content": records compared; "log": the chain is ours and V is not on it
    missing: tuple[str, ...] = ()  # ids V wrote that the pointer's snapshot lacks
    reverted: tuple[str, ...] = ()  # ids that hold V's base's content instead of V's
    restore: tuple[Record, ...] = field(default=(), compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.publish.version,
            "base_version": self.publish.base_version,
            "batch_id": self.publish.batch_id,
            "pointer": self.pointer,
            "how": self.how,
            "missing": list(self.missing),
            "reverted": list(self.reverted),
        }


@dataclass(frozen=True)
class LineageReport:
    database: str
    pointer: VersionId | None
    checked: tuple[VersionId, ...]
    lost: tuple[Loss, ...]
    unverifiable: tuple[tuple[VersionId, str], ...] = ()
    confirmed: tuple[VersionId, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "pointer": self.pointer,
            "checked": len(self.checked),
            "lost": [loss.to_json() for loss in self.lost],
            "unverifiable": [{"version": v, "reason": r} for v, r in self.unverifiable],
            "confirmed": list(self.confirmed),
        }

    def describe(self) -> list[str]:
        lines = [f"{self.database}: pointer {self.pointer}, {len(self.checked)} publishes checked"]
        for loss in self.lost:
            p = loss.publish
            lines.append(
                f"LOST {p.version} (batch {p.batch_id}, base {p.base_version}): "
                f"{len(loss.missing)} records missing, {len(loss.reverted)} reverted"
                f" ({loss.how}); repair with: snapmerge lineage repair --database {self.database}"
            )
        lines += [f"cannot tell {v}: {reason}" for v, reason in self.unverifiable]
        return lines


# -- the chain -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chain:
    members: frozenset[VersionId]
    stopped_at: VersionId | None  # a version with no log entry (the walk cannot go below it)
    complete: bool = False  # the walk reached the bottom: the chain is ours all the way down


def walk_chain(log_: CommitLog, start: VersionId | None, floor: int = 0) -> Chain:
    """Our versions from ``start`` down its base links; stops at an entry-less version, or once a
    height at or below ``floor`` has been taken (a bounded walk for the check after a publish)."""
    members: set[VersionId] = set()
    current = start
    while current is not None:
        entry = log_.entry(current)
        if entry is None or entry.height <= 0 or entry.state not in PUBLISHED_STATES:
            return Chain(frozenset(members), current)
        members.add(current)
        if floor and entry.height <= floor:
            return Chain(frozenset(members), None)
        current = entry.base_version
    return Chain(frozenset(members), None, complete=True)


# -- the checker ---------------------------------------------------------------------------------
class LineageChecker:
    """Decides, for each publish, whether the pointer's snapshot still holds it."""

    def __init__(
        self,
        store: SnapshotStore,
        engine: IndexEngine,
        workdir: Path,
        *,
        confirm_after: timedelta = timedelta(0),
        now: datetime | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.workdir = workdir
        self.confirm_after = confirm_after
        self.now = now or datetime.now(UTC)
        self._seen: dict[VersionId | None, dict[str, bytes]] = {None: {}}
        self._dirs: dict[VersionId, Path] = {}

    def receipts(self) -> list[Publish]:
        """Every publish a receipt records (a repair's too)."""
        found: dict[VersionId, Publish] = {}
        for key in self.store.blobs.list(Keys.receipts_prefix(self.store.db)):
            blob = self.store.blobs.get(key)
            if blob is None:
                continue
            try:
                raw = json.loads(blob.body)
                base = raw.get("base_version")
                version = VersionId(str(raw["version"]))
                batch = str(raw["batch_id"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SnapshotError(f"receipt {key} is unreadable: {exc}") from exc
            found[version] = Publish(version, VersionId(str(base)) if base else None, batch)
        return list(found.values())

    def verify(self) -> LineageReport:
        """Every publish: receipts and pending marks (the whole chain is walked)."""
        pending = pending_publishes(self.store.blobs, self.store.db)
        merged = {p.version: p for p in self.receipts()}
        merged.update({p.version: p for p in pending})
        return self.check(list(merged.values()), pending={p.version for p in pending})

    def check_pending(self) -> LineageReport:
        """The cheap check after a publish: only unconfirmed publishes, a bounded walk."""
        pending = pending_publishes(self.store.blobs, self.store.db)
        heights = [e.height for p in pending if (e := self.store.log.entry(p.version))]
        floor = min((h for h in heights if h > 0), default=0)
        return self.check(pending, pending={p.version for p in pending}, floor=floor)

    def check(
        self, publishes: list[Publish], *, pending: set[VersionId], floor: int = 0
    ) -> LineageReport:
        pointer = self.store.read_pointer()
        head = pointer.version if pointer is not None else None
        chain = walk_chain(self.store.log, head, floor)
        queue = sorted(publishes, key=lambda p: p.version)
        seen = {p.version for p in queue}
        lost: list[Loss] = []
        unknown: list[tuple[VersionId, str]] = []
        confirmed: list[VersionId] = []
        while queue:
            publish = queue.pop(0)
            verdict = self._decide(publish, head, chain)
            if isinstance(verdict, Loss):
                lost.append(verdict)
                below = self._lost_ancestor(publish, seen)
                if below is not None:  # a loss takes the unconfirmed publishes below it too
                    queue.append(below)
                    seen.add(below.version)
            elif isinstance(verdict, str):
                if publish.version in pending:  # a confirmed publish whose data retention took
                    unknown.append((publish.version, verdict))  # is not asked again
            elif self._confirmable(publish, pending, head):
                self.store.blobs.delete([Keys.lineage_pending(self.store.db, publish.version)])
                confirmed.append(publish.version)
        return LineageReport(
            self.store.db.value,
            head,
            tuple(sorted(seen)),
            tuple(lost),
            tuple(unknown),
            tuple(confirmed),
        )

    def _decide(self, publish: Publish, head: VersionId | None, chain: Chain) -> Loss | str | None:
        """None: present. A Loss. A string: cannot tell, and why."""
        if publish.version in chain.members:
            return None
        by_log = chain.complete  # our chain all the way down, and V is not on it
        try:
            ours = self._prints(publish.version)
            base = self._prints(publish.base_version)
            current = self._prints(head)
        except (SnapshotError, StoreError) as exc:
            if by_log:
                return Loss(publish, head, "log")
            return f"the chain stops at {chain.stopped_at or 'the walk floor'} and {exc}"
        missing, reverted = [], []
        for rid, print_ in ours.items():
            before = base.get(rid)
            if before == print_:
                continue  # not V's write
            now = current.get(rid)
            if now is None:
                missing.append(rid)
            elif before is not None and now == before:
                reverted.append(rid)
        if not missing and not reverted:
            return None
        restore = self._records_of(publish.version, set(missing + reverted))
        return Loss(
            publish, head, "content", tuple(sorted(missing)), tuple(sorted(reverted)), restore
        )

    def _lost_ancestor(self, publish: Publish, seen: set[VersionId]) -> Publish | None:
        base = publish.base_version
        if base is None or base in seen:
            return None
        entry = self.store.log.entry(base)
        if entry is None or entry.state not in PUBLISHED_STATES or entry.path == "seed":
            return None
        return Publish(base, entry.base_version, entry.batch_id, entry.created_at)

    def _confirmable(
        self, publish: Publish, pending: set[VersionId], head: VersionId | None
    ) -> bool:
        """Present, pending, no longer the pointer itself, and old enough."""
        if publish.version not in pending or publish.version == head:
            return False
        if not self.confirm_after:
            return True
        try:
            when = datetime.fromisoformat(publish.published_at)
        except ValueError:
            return False
        aware = when if when.tzinfo else when.replace(tzinfo=UTC)
        return self.now - aware >= self.confirm_after

    def _prints(self, version: VersionId | None) -> dict[str, bytes]:
        """id → content fingerprint of every record of a version (empty for none), once per
        check: a few dozen bytes a record, never the records themselves."""
        if version in self._seen:
            return self._seen[version]
        assert version is not None
        dest = self.workdir / f"v{len(self._seen)}"
        if version == LATEST_DIRECT:
            if self.store.read_legacy_latest(dest) is None:
                raise SnapshotError(f"{Keys.legacy_latest_prefix(self.store.db)} is gone")
        else:
            self.store.download_version(version, dest)
        prints = {r.id: fingerprint(r) for page in self.engine.read_records(dest) for r in page}
        self._seen[version], self._dirs[version] = prints, dest
        return prints

    def _records_of(self, version: VersionId, ids: set[str]) -> tuple[Record, ...]:
        """The records ``ids`` of a version already read, with their content."""
        found = [
            r for page in self.engine.read_records(self._dirs[version]) for r in page if r.id in ids
        ]
        return tuple(sorted(found, key=lambda r: r.id))


def fingerprint(record: Record) -> bytes:
    """A digest of one record's content: vector (as float64 bytes), document and metadata."""
    digest = hashlib.sha256(np.asarray(record.embedding, dtype=np.float64).tobytes())
    digest.update(json.dumps([record.document, record.metadata], sort_keys=True).encode())
    return digest.digest()
