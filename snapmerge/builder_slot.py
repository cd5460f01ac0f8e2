"""The group-commit builder marker: one builder at a time per database, and its heartbeat.

    {db}/snapshot/pending-builder.json   {"state": "building" | "idle", "owner", "batches", "beat"}

An execution that finds no live builder takes the marker with a conditional PUT
(``If-None-Match`` when there is none, ``If-Match`` on the ETag it saw idle or dead); while it
builds, its :class:`Heartbeat` rewrites the marker, so the ETag changes. A waiter judges liveness
with a :class:`Watch` on its own clock: a marker whose ETag has not changed for ``group_stale`` is
dead and may be taken over. The marker only decides who builds; the pointer CAS decides what is
published (docs/adr/0008-group-commit.md).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from snapmerge.domain import Database
from snapmerge.errors import PointerConflictError
from snapmerge.ports import BlobStore

log = logging.getLogger(__name__)

BUILDING = "building"
IDLE = "idle"


def builder_key(db: Database) -> str:
    return f"{db.value}/snapshot/pending-builder.json"


@dataclass(frozen=True)
class Marker:
    """The builder marker as read: who builds, which batches, and its ETag (the heartbeat)."""

    state: str
    owner: str
    batches: tuple[str, ...]
    etag: str


class BuilderSlot:
    """One builder at a time per database; the marker's ETag changes on every heartbeat."""

    def __init__(self, blobs: BlobStore, db: Database) -> None:
        self.blobs, self.db = blobs, db
        self.key = builder_key(db)

    def read(self) -> Marker | None:
        blob = self.blobs.get(self.key)
        if blob is None:
            return None
        try:
            raw = json.loads(blob.body)
            return Marker(
                str(raw["state"]),
                str(raw.get("owner", "")),
                tuple(str(b) for b in raw.get("batches", ())),
                blob.etag,
            )
        except (ValueError, KeyError, TypeError):
            return Marker(IDLE, "", (), blob.etag)  # unreadable: anyone may take it over

    def _body(self, state: str, owner: str, batches: Sequence[str], beat: int) -> bytes:
        return json.dumps(
            {"state": state, "owner": owner, "batches": list(batches), "beat": beat}
        ).encode()

    def take(self, owner: str, seen: Marker | None) -> str | None:
        """Take the marker over ``seen`` (None: there was none); our ETag, or None if lost."""
        body = self._body(BUILDING, owner, (), 0)
        try:
            if seen is None:
                return self.blobs.put(self.key, body, if_none_match=True)
            return self.blobs.put(self.key, body, if_match=seen.etag)
        except PointerConflictError:
            return None


class Heartbeat:
    """Keeps our marker moving while we build; stops quietly if someone took it over."""

    def __init__(self, slot: BuilderSlot, owner: str, etag: str, interval_s: float) -> None:
        self.slot, self.owner, self.interval_s = slot, owner, interval_s
        self._etag: str | None = etag
        self._batches: tuple[str, ...] = ()
        self._beat = 0
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"group-beat-{owner}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._write(IDLE)

    def cover(self, batches: Sequence[str]) -> None:
        """Say which batches we are building, with the next beat (no write of its own: waiters
        go by the marker's liveness, and a PUT is a request every publish would pay)."""
        with self._mutex:
            self._batches = tuple(batches)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._write(BUILDING)

    def _write(self, state: str) -> None:
        with self._mutex:
            if self._etag is None:
                return
            self._beat += 1
            body = self.slot._body(state, self.owner, self._batches, self._beat)
            try:
                self._etag = self.slot.blobs.put(self.slot.key, body, if_match=self._etag)
            except PointerConflictError:
                self._etag = None  # taken over: our build may still publish (the CAS decides)
            except Exception:
                log.warning("builder heartbeat failed", exc_info=True)


class Watch:
    """Is another builder alive? Its marker's ETag must change within ``stale_s`` of our clock."""

    def __init__(self, stale_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_s, self.clock = stale_s, clock
        self._etag: str | None = None
        self._since = 0.0

    def dead(self, marker: Marker) -> bool:
        now = self.clock()
        if marker.etag != self._etag:
            self._etag, self._since = marker.etag, now
            return False
        return now - self._since >= self.stale_s


def new_owner() -> str:
    return uuid.uuid4().hex


def poll_delay(rng: random.Random, base_s: float) -> float:
    return base_s * (0.5 + rng.random())
