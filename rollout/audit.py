"""The rollout audit log: append-only, one :class:`~rollout.audit_entry.AuditEntry` per
controller transition. There is no API to change or remove an entry: a log offers
:meth:`AuditLog.append` and :meth:`AuditLog.history` only.

* :class:`JsonlAuditLog` — one JSON line per entry (the embedded default). Appends hold an
  ``fcntl`` lock on ``<file>.lock``; :meth:`~JsonlAuditLog.history` checks the hash chain
  (:func:`~rollout.audit_entry.check_chain`).
* :class:`S3AuditLog` — one object per entry at ``<prefix><seq:010d>.json``, written with
  ``If-None-Match: *``: two writers can never take one slot; the loser moves to the next one.
* :class:`MemoryAuditLog` — in process, for simulations and tests.
* :class:`rollout.dynamo.DynamoAuditLog` — one item per entry, written with
  ``attribute_not_exists``: the same slot discipline in DynamoDB.

``append`` is idempotent per ``transition_id``: a controller resuming after a crash re-appends
the transition it was applying and gets the entry already written, not a duplicate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from rollout.audit_entry import (
    GENESIS,
    AuditEntry,
    AuditIntegrityError,
    AuditSlotTakenError,
    check_chain,
)
from rollout.signing import AuditKey
from snapmerge.errors import PointerConflictError, StoreError
from snapmerge.localfiles import locked
from snapmerge.ports import BlobStore

_SLOT_ATTEMPTS: Final = 20
_RECENT: Final = 50  # entries scanned for a transition id already written


class AuditLog(Protocol):
    """An append-only log of audit entries (see the module docstring for the backends)."""

    def append(self, entry: AuditEntry) -> AuditEntry:
        """Write ``entry`` at the end (or return the entry already written for its transition)."""
        ...

    def history(self) -> list[AuditEntry]:
        """Every entry, oldest first (empty when there is no log)."""
        ...

    def exists(self) -> bool:
        """Whether there is a log at all (a log with no entries does not count)."""
        ...


def already_written(entries: list[AuditEntry], transition_id: str) -> AuditEntry | None:
    for entry in reversed(entries[-_RECENT:]):
        if entry.transition_id == transition_id:
            return entry
    return None


def append_in_slots(
    log: object,
    history: Callable[[], list[AuditEntry]],
    write_slot: Callable[[AuditEntry], AuditEntry],
    entry: AuditEntry,
    key: AuditKey | None,
) -> AuditEntry:
    """Append ``entry`` to a log whose entries each take their own slot, written only if empty
    (S3 ``If-None-Match``, a DynamoDB condition): a retried transition answers with the entry it
    already wrote; a slot another writer took means re-read and take the next one."""
    for _ in range(_SLOT_ATTEMPTS):
        entries = history()
        done = already_written(entries, entry.transition_id)
        if done is not None:
            return done
        prev = entries[-1].digest if entries else GENESIS
        try:
            return write_slot(entry.sealed(len(entries), prev, key))
        except AuditSlotTakenError:
            continue
    raise StoreError(f"{log!r}: no free slot after {_SLOT_ATTEMPTS} attempts")


class JsonlAuditLog:
    """A local JSON-lines file (see the module docstring)."""

    def __init__(self, path: Path | str, key: AuditKey | None = None) -> None:
        self.path = Path(path)
        self.key = key

    def __repr__(self) -> str:
        return f"JsonlAuditLog({str(self.path)!r})"

    def exists(self) -> bool:
        return self.path.exists()

    def history(self) -> list[AuditEntry]:
        """Read under the append lock, so a line being appended is never read half-written."""
        if not self.path.exists():
            return []
        with locked(self.path):
            return self._read()

    def _read(self) -> list[AuditEntry]:
        if not self.path.exists():
            return []
        entries: list[AuditEntry] = []
        with self.path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    entries.append(AuditEntry.from_json(json.loads(line)))
                except (ValueError, TypeError, RecursionError) as exc:
                    raise AuditIntegrityError(f"{self.path}:{number}: unreadable: {exc}") from None
        return check_chain(entries, str(self.path))

    def append(self, entry: AuditEntry) -> AuditEntry:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.path):
            entries = self._read()
            done = already_written(entries, entry.transition_id)
            if done is not None:
                return done
            prev = entries[-1].digest if entries else GENESIS
            sealed = entry.sealed(len(entries), prev, self.key)
            line = json.dumps(sealed.to_json(), separators=(",", ":"), default=str) + "\n"
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        return sealed


class MemoryAuditLog:
    """An in-process log (simulations, tests): entries sealed on append like every other log.

    Only this object can reach its entries, so :meth:`history` does not re-hash the chain.
    """

    def __init__(self, key: AuditKey | None = None) -> None:
        self.key = key
        self.entries: list[AuditEntry] = []

    def __repr__(self) -> str:
        return f"MemoryAuditLog({len(self.entries)} entries)"

    def exists(self) -> bool:
        return bool(self.entries)

    def history(self) -> list[AuditEntry]:
        return list(self.entries)

    def append(self, entry: AuditEntry) -> AuditEntry:
        done = already_written(self.entries, entry.transition_id)
        if done is not None:
            return done
        prev = self.entries[-1].digest if self.entries else GENESIS
        sealed = entry.sealed(len(self.entries), prev, self.key)
        self.entries.append(sealed)
        return sealed


class S3AuditLog:
    """One object per entry under ``prefix`` in a :class:`~snapmerge.ports.BlobStore` bucket."""

    def __init__(
        self, blobs: BlobStore, prefix: str = "rollout/audit/", key: AuditKey | None = None
    ) -> None:
        self.blobs = blobs
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.key = key

    def exists(self) -> bool:
        return bool(self.blobs.list(self.prefix))

    def __repr__(self) -> str:
        return f"S3AuditLog('s3://{self.blobs.bucket}/{self.prefix}')"

    def slot_key(self, seq: int) -> str:
        return f"{self.prefix}{seq:010d}.json"

    def history(self) -> list[AuditEntry]:
        entries: list[AuditEntry] = []
        for key in self.blobs.list(self.prefix):
            blob = self.blobs.get(key)
            if blob is None:
                raise AuditIntegrityError(f"s3://{self.blobs.bucket}/{key} vanished")
            try:
                entries.append(AuditEntry.from_json(json.loads(blob.body)))
            except (ValueError, TypeError, RecursionError) as exc:
                raise AuditIntegrityError(f"{key}: unreadable: {exc}") from None
        return check_chain(entries, f"s3://{self.blobs.bucket}/{self.prefix}")

    def write_slot(self, entry: AuditEntry) -> AuditEntry:
        """Write a sealed entry into its own slot, only if the slot is empty."""
        key = self.slot_key(entry.seq)
        body = json.dumps(entry.to_json(), sort_keys=True, default=str).encode()
        try:
            self.blobs.put(key, body, if_none_match=True)
        except PointerConflictError:
            raise AuditSlotTakenError(key) from None
        return entry

    def append(self, entry: AuditEntry) -> AuditEntry:
        return append_in_slots(self, self.history, self.write_slot, entry, self.key)
