"""The one module that calls the OpenFeature API (DESIGN §4).

:func:`bootstrap` registers a :class:`~flags.provider.DocumentProvider` once, with
``set_provider_and_wait`` (``set_provider`` returns before the provider is ready), under the
``snapmerge`` domain so other OpenFeature users in the process keep their own default provider.
:class:`FlagClient` turns flag evaluations into the values the pipeline needs, and fails closed:
any evaluation error or a provider that is not ready gives the default (legacy for the path), is
logged and counted. The kill switch fails *safe*: if it cannot be read it counts as ON. No hooks
are registered (an exception in a hook's ``after`` would silently turn a result into the default).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails
from openfeature.provider import FeatureProvider

from flags.decision import PathDecision
from flags.keys import DEFAULTS, ContextKey, DecisionReason, FlagKey
from flags.provider import DocumentProvider
from flags.stores import CacheSettings, FlagDocumentStore, UnavailableStore, store_from_env
from snapmerge.domain import Database, MergePath

log = logging.getLogger("snapmerge.flags")

DOMAIN: Final = "snapmerge"
_EMPTY_CONTEXT: Final = EvaluationContext()


def _context(
    targeting_key: str | None = None,
    collection: str | None = None,
    batch_id: str | None = None,
    execution_id: str | None = None,
) -> EvaluationContext:
    attributes = {}
    if collection is not None:
        attributes[ContextKey.COLLECTION.value] = collection
    if batch_id is not None:
        attributes[ContextKey.BATCH_ID.value] = batch_id
    if execution_id is not None:
        attributes[ContextKey.EXECUTION_ID.value] = execution_id
    if targeting_key is None and not attributes:
        return _EMPTY_CONTEXT
    return EvaluationContext(targeting_key=targeting_key, attributes=attributes)


def evaluation_context(
    targeting_key: str | None = None,
    collection: str | None = None,
    batch_id: str | None = None,
) -> EvaluationContext:
    """The context :class:`FlagClient` evaluates with (for callers that evaluate directly, such
    as the flag benchmark)."""
    return _context(targeting_key, collection, batch_id)


class FlagClient:
    """Typed, fail-closed access to the flags. Never raises from an evaluation."""

    def __init__(self, provider: DocumentProvider, of_client: OpenFeatureClient) -> None:
        self.provider = provider
        self._client = of_client
        self._counts: Counter[str] = Counter()

    def count(self, name: str) -> None:
        self._counts[name] += 1

    def counters(self) -> dict[str, int]:
        """Provider errors (``errors.<kind>``) and client outcomes (fail-closed decisions, ...)."""
        out = {f"errors.{k}": v for k, v in self.provider.errors.items()}
        out.update(self._counts)
        return out

    def _failed(self, key: FlagKey, details: FlagEvaluationDetails[object]) -> str | None:
        if details.error_code is None:
            return None
        if key in OPTIONAL_FLAGS and details.error_code == ErrorCode.FLAG_NOT_FOUND:
            return "absent"  # not set in the document: the environment's value applies, quietly
        self.count("evaluation_errors")
        message = f"{key}: {details.error_code}: {details.error_message}"
        log.warning("flag evaluation failed, using the default: %s", message)
        return message

    def read_kill_switch(
        self,
        *,
        targeting_key: str | None = None,
        collection: str | None = None,
        batch_id: str | None = None,
        execution_id: str | None = None,
    ) -> tuple[bool, str | None]:
        """(on, error) for an execution. Unreadable counts as ON — legacy is always safe — and
        says why. The context is the execution's, so a rule scoped to a collection, a batch or an
        execution fires for it; with no context only the switch's default applies."""
        context = _context(targeting_key, collection, batch_id, execution_id)
        try:
            details = self._client.get_boolean_details(FlagKey.KILL_SWITCH, False, context)
        except Exception as exc:  # the SDK should not raise; if it does, still fail safe
            log.error("kill switch evaluation raised: %r", exc)
            self.count("kill_switch_unreadable")
            return True, f"kill switch unreadable: {exc!r}"
        error = self._failed(FlagKey.KILL_SWITCH, details)
        if error is not None:
            self.count("kill_switch_unreadable")
            return True, f"kill switch unreadable: {error}"
        return bool(details.value), None

    def kill_switch(self) -> bool:
        """Whether legacy is forced (the shortest cache of all flags; unreadable counts as ON)."""
        return self.read_kill_switch()[0]

    def decide_path(
        self,
        *,
        targeting_key: str,
        collection: str,
        batch_id: str,
        execution_id: str | None = None,
    ) -> PathDecision:
        """The final-merge path for an execution; called once, at its start, by the split step."""
        try:
            return self._decide(targeting_key, collection, batch_id, execution_id)
        except Exception as exc:  # belt and braces: a decision must always come back
            log.exception("path decision failed, failing closed to legacy")
            self.count("fail_closed_decisions")
            return PathDecision.fail_closed(repr(exc))

    def _decide(
        self, targeting_key: str, collection: str, batch_id: str, execution_id: str | None
    ) -> PathDecision:
        kill, kill_error = self.read_kill_switch(
            targeting_key=targeting_key,
            collection=collection,
            batch_id=batch_id,
            execution_id=execution_id,
        )
        if kill_error is not None:
            self.count("fail_closed_decisions")
            return replace(PathDecision.fail_closed(kill_error), kill_switch=True)
        if kill:
            self.count("kill_switch_decisions")
            legacy = MergePath.LEGACY
            return PathDecision(
                legacy, legacy.value, DecisionReason.KILL_SWITCH.value, self.provider.version, True
            )
        context = _context(targeting_key, collection, batch_id, execution_id)
        details = self._client.get_string_details(
            FlagKey.FINAL_MERGE_PATH, str(DEFAULTS[FlagKey.FINAL_MERGE_PATH]), context
        )
        version = details.flag_metadata.get("flag_version")
        version = str(version) if version is not None else None
        error = self._failed(FlagKey.FINAL_MERGE_PATH, details)
        if error is None:
            try:
                path = MergePath(details.value)
            except ValueError:
                error = f"unknown path variant {details.value!r}"
        if error is not None:
            self.count("fail_closed_decisions")
            return PathDecision.fail_closed(error, flag_version=version)
        variant = details.variant or path.value
        unit = details.flag_metadata.get("unit")  # set only by a switchback flag's split
        # a unit key is never empty: a provider that names "" (or a non-string) named no unit,
        # and a decision pinned with unit "" would be refused by the next step (from_event)
        unit = unit if isinstance(unit, str) and unit != "" else None
        return PathDecision(path, variant, str(details.reason), version, unit=unit)

    def int_flag(
        self,
        key: FlagKey,
        default: int,
        *,
        collection: str | None = None,
        batch_id: str | None = None,
        targeting_key: str | None = None,
    ) -> int:
        context = _context(targeting_key, collection, batch_id)
        try:
            details = self._client.get_integer_details(key, default, context)
        except Exception as exc:
            log.error("flag %s raised: %r", key, exc)
            self.count("evaluation_errors")
            return default
        if self._failed(key, details) is not None or isinstance(details.value, bool):
            return default
        return int(details.value)

    def bool_flag(
        self,
        key: FlagKey,
        default: bool,
        *,
        collection: str | None = None,
        batch_id: str | None = None,
        targeting_key: str | None = None,
    ) -> bool:
        context = _context(targeting_key, collection, batch_id)
        try:
            details = self._client.get_boolean_details(key, default, context)
        except Exception as exc:
            log.error("flag %s raised: %r", key, exc)
            self.count("evaluation_errors")
            return default
        if self._failed(key, details) is not None:
            return default
        return bool(details.value)

    def chunk_size(self, database: Database, default: int) -> int:
        """Chunk size for ``database`` (both collection spellings map to it); default from env."""
        key = FlagKey.CHUNK_SIZE_WORDS if database is Database.WORDS else FlagKey.CHUNK_SIZE_LINES
        return self.int_flag(key, default, collection=database.value)

    def group_size(self, default: int) -> int:
        return self.int_flag(FlagKey.GROUP_SIZE, default)

    def single_chunk_fast_path(self) -> bool:
        return self.bool_flag(FlagKey.SINGLE_CHUNK_FAST_PATH, False)


# Sizing knobs may be left out of a document: the env vars (CHUNK_SIZE_WORDS, ...) then apply.
OPTIONAL_FLAGS: frozenset[FlagKey] = frozenset(
    {
        FlagKey.CHUNK_SIZE_WORDS,
        FlagKey.CHUNK_SIZE_LINES,
        FlagKey.GROUP_SIZE,
        FlagKey.SINGLE_CHUNK_FAST_PATH,
    }
)

_lock = threading.Lock()
_registered: tuple[FlagDocumentStore, FlagClient] | None = None


def _store_or_unavailable() -> FlagDocumentStore:
    try:
        return store_from_env()
    except Exception as exc:
        log.error("flag store configuration unusable, serving defaults (legacy): %s", exc)
        return UnavailableStore(f"flag store configuration unusable: {exc}")


def bootstrap(
    store: FlagDocumentStore | None = None, *, wall_clock: Callable[[], float] | None = None
) -> FlagClient:
    """Register the provider once and return the client; idempotent and never raises.

    With ``store=None`` the first call builds the store from the environment and later calls
    return the same client. Passing a different store re-registers (tests, the benchmark), and
    so does a different ``wall_clock`` (epoch seconds, ``time.time`` by default: the clock that
    says which switchback window an evaluation is in).
    """
    global _registered
    with _lock:
        if (
            _registered is not None
            and store in (None, _registered[0])
            and wall_clock in (None, _registered[1].provider.wall_clock)
        ):
            return _registered[1]
        chosen = store if store is not None else _store_or_unavailable()
        try:
            cache = CacheSettings.for_store(chosen)
        except Exception as exc:
            log.error("flag cache settings unusable, using defaults: %s", exc)
            cache = CacheSettings()
        provider = DocumentProvider(chosen, cache, wall_clock=wall_clock or time.time)
        try:
            api.set_provider_and_wait(provider, domain=DOMAIN)
        except Exception as exc:  # initialize found no valid document: serve defaults, counted
            log.error("flag provider not ready at start-up (serving defaults): %s", exc)
        client = FlagClient(provider, api.get_client(domain=DOMAIN))
        if provider.version is None:
            client.count("provider_not_ready_at_start")
        _registered = (chosen, client)
        return client


def reset() -> None:
    """Forget the registered client (tests); the next bootstrap registers a new provider."""
    global _registered
    with _lock:
        _registered = None


def open_domain(provider: FeatureProvider, domain: str) -> OpenFeatureClient:
    """Register ``provider`` under its own ``domain`` and return a raw OpenFeature client for it:
    comparisons only (the flag benchmark); the pipeline uses :func:`bootstrap`."""
    if domain == DOMAIN:
        raise ValueError(f"domain {DOMAIN!r} belongs to bootstrap()")
    api.set_provider_and_wait(provider, domain=domain)
    return api.get_client(domain=domain)


def clear_domains() -> None:
    """Unregister every provider of the process (after a comparison) and forget the client."""
    reset()
    api.clear_providers()
