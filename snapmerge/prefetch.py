"""Two-phase's head start: the base downloads into the local cache while the intermediates do.

Legacy reads the pointer and downloads the base under its lock, after the intermediates (the
original's order). Two-phase holds no lock for either, so :class:`BasePrefetch` peeks at the
pointer (no lock) and fills the local cache (:class:`~snapmerge.cache.SnapshotCache`) with that
version on a thread while the caller fetches the intermediates. Phase 1 still reads the pointer
under its lock; when it has not moved, the build's working copy is a local copy.

A head start never decides anything. A pointer that moved meanwhile, no pointer, an
original-format version (no manifest to verify a copy against) or any failure only means no head
start: the build downloads what phase 1 read, as it did before. The cached copy is pinned until
:meth:`BasePrefetch.close`, so another merge's prune cannot remove it before the build copies it.

A run that ends before it needs the base (its own error, a replay) does not wait for the head
start: ``close`` leaves the unpinning to the thread when it is still downloading (into the cache's
own staging directory, never the run's workspace), so a slow or stuck store delays nothing but
the download itself.
"""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack
from types import TracebackType
from typing import TYPE_CHECKING

from snapmerge.domain import LATEST_DIRECT, Database, VersionId

if TYPE_CHECKING:
    from snapmerge.merging import MergeKit

log = logging.getLogger(__name__)


class BasePrefetch:
    """``with BasePrefetch(kit, db) as head:`` … ``head.wait()`` before the build needs it."""

    def __init__(self, kit: MergeKit, db: Database) -> None:
        self.kit, self.db = kit, db
        self.version: VersionId | None = None  # what was cached, once ``wait`` returned
        self._pins = ExitStack()
        self._guard = threading.Lock()
        self._closed = self._ended = False  # whichever comes second unpins
        self._thread = threading.Thread(target=self._run, name=f"prefetch-{db.value}", daemon=True)

    def __enter__(self) -> BasePrefetch:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def wait(self) -> VersionId | None:
        """Until the download ended (or failed); the version now in the cache, if any."""
        if self._thread.is_alive():
            self._thread.join()
        return self.version

    def close(self) -> None:
        """Unpin; or, while the download still runs, let the thread unpin when it ends (a run
        that ends early does not wait out a slow base download)."""
        with self._guard:
            self._closed = True
            ended = self._ended or self._thread.ident is None  # done, or never started
        if ended:
            self._pins.close()

    def _run(self) -> None:
        try:
            self._fill()
        finally:
            with self._guard:
                self._ended = True
                closed = self._closed
            if closed:  # the run is over: nobody else unpins
                self._pins.close()

    def _fill(self) -> None:
        try:
            store = self.kit.store(self.db)
            pointer = store.read_pointer()
            if pointer is None or not pointer.exists or pointer.version == LATEST_DIRECT:
                return
            if store.manifest(pointer.version) is None:  # original format: nothing to verify
                return
            if self._closed:  # the run ended before the download began
                return
            cache = self.kit.cache(self.db)
            self._pins.enter_context(cache.pinned(pointer.version))
            cache.get(pointer.version)  # a download is verified against the manifest
            self.version = pointer.version
        except Exception:  # a head start only: the build reads the base itself and raises
            log.debug("base prefetch of %s failed", self.db.value, exc_info=True)
