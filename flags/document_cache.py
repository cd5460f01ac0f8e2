"""The flag provider's document: asked of the store at most once per TTL (a shorter one for the
kill switch), validated and compiled, the last good one kept serving when a read fails.

A bad document or a failing store never raises into a caller: the failure is logged and counted
in the provider's ``errors``, and the state moves to ``stale`` (or ``error`` if nothing was ever
loaded) until a good read brings it back to ``ready``. A refused version is counted once, not on
every re-read. Each change of state, and a new document version (with the changed flag keys),
becomes an event that :class:`~flags.provider.DocumentProvider` emits through OpenFeature.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode

from flags.compiled import CompiledDocument, compile_document
from flags.document import FlagDocumentError, flags_changed
from flags.keys import FlagKey
from flags.stores import CacheSettings, FlagDocumentStore

log = logging.getLogger("snapmerge.flags")

Events = list[tuple[str, ProviderEventDetails]]


class DocumentCache:
    """The current compiled document of one store, and the provider state it implies."""

    def __init__(
        self,
        store: FlagDocumentStore,
        cache: CacheSettings,
        *,
        clock: Any,
        errors: Counter[str],
        emit: Callable[[Events], None],
    ) -> None:
        self.store = store
        self.cache = cache
        self.errors = errors
        self.emit = emit
        self._clock = clock
        self._lock = threading.RLock()
        self.document: CompiledDocument | None = None
        self._rejected: str | None = None
        self._checked_at = float("-inf")
        self._state = "ready"
        self.shut_down = False

    @property
    def version(self) -> str | None:
        doc = self.document
        return doc.version if doc else None

    def reopen(self) -> None:
        """Serve again after :meth:`close` (the provider's ``initialize``)."""
        with self._lock:
            self.shut_down = False

    def close(self) -> None:
        """Drop the document: nothing is served, nor the store asked, until :meth:`reopen`."""
        with self._lock:
            self.shut_down = True
            self.document = None
            self._rejected = None
            self._checked_at = float("-inf")
            self._state = "not_ready"

    def current(self, flag_key: str) -> CompiledDocument | None:
        """The document to evaluate ``flag_key`` on, asked of the store again once its TTL is
        over (the kill switch's is shorter); None when there is none or after :meth:`close`."""
        if self.shut_down:
            return None
        ttl = (
            self.cache.kill_switch_ttl_seconds
            if flag_key == FlagKey.KILL_SWITCH
            else self.cache.ttl_seconds
        )
        if self._clock() - self._checked_at >= ttl:
            self.refresh()
        return self.document

    def refresh(self, *, emit: bool = True) -> None:
        """Ask the store now; swap in a new valid document; count and log any failure."""
        events: Events = []
        with self._lock:
            self._checked_at = self._clock()
            try:
                raw, version = self.store.load()
            except FlagDocumentError as exc:
                self._reject(exc.version, exc, events)
            except Exception as exc:  # any store failure, whatever the backend raised
                self.errors["store_error"] += 1
                log.warning("flag store %r failed: %s", self.store, exc)
                self._degrade(f"flag store failed: {exc}", events)
            else:
                self._accept(raw, version, events)
        if emit:
            self.emit(events)

    def _accept(self, raw: dict[str, Any], version: str, events: Events) -> None:
        current = self.document
        if current is not None and current.version == version:
            self._recover(events)
            return
        if version == self._rejected:
            return  # still the same bad document: counted and logged once
        try:
            compiled = compile_document(raw, version)
        except FlagDocumentError as exc:
            self._reject(version, exc, events)
            return
        self.document = compiled
        self._rejected = None
        log.info("flag document %s loaded from %r", version, self.store)
        self._recover(events)
        if current is not None:
            changed = flags_changed(current.raw, compiled.raw)
            details = ProviderEventDetails(
                flags_changed=changed, metadata={"flag_version": version}
            )
            events.append(("configuration_changed", details))

    def _reject(
        self,
        version: str | None,
        exc: Exception,
        events: Events,
    ) -> None:
        if version is not None and version == self._rejected:
            return
        self._rejected = version
        self.errors["invalid_document"] += 1
        serving = self.version or "defaults"
        log.error(
            "flag document %s from %r refused (serving %s): %s", version, self.store, serving, exc
        )
        self._degrade(f"flag document refused: {exc}", events)

    def _degrade(self, message: str, events: Events) -> None:
        state = "stale" if self.document is not None else "error"
        if state != self._state:
            self._state = state
            events.append(
                (state, ProviderEventDetails(message=message, error_code=ErrorCode.GENERAL))
            )

    def _recover(self, events: Events) -> None:
        if self._state != "ready":
            self._state = "ready"
            events.append(("ready", ProviderEventDetails(message="flag document readable again")))
