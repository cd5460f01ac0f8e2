"""An OpenFeature provider over Powertools-schema flag documents (none exists for Python).

The provider asks its :class:`~flags.stores.FlagDocumentStore` for the document at most once per
TTL (a shorter one for the kill switch), validates and compiles it
(:class:`~flags.document_cache.DocumentCache`), and evaluates flags itself so it can say *why* a
value was chosen:

* ``STATIC`` — the flag has no rules; ``TARGETING_MATCH`` — a rule on context attributes
  (``collection``, ``batch_id``, ...) matched; ``SPLIT`` — a percentage rule (a ``bucket``
  condition) matched; ``DEFAULT`` — rules exist, none matched;
* ``ERROR`` with the caller's default — no valid document yet, or the provider was shut down
  (``PROVIDER_NOT_READY``), an unknown flag (``FLAG_NOT_FOUND``), a value of the wrong type or
  one that does not fit the type asked for, such as an integer beyond a float's range
  (``TYPE_MISMATCH``), a percentage rule without a targeting key or with an empty one
  (``TARGETING_KEY_MISSING``), anything else that goes wrong (``GENERAL``).

No ``resolve_*`` raises, whatever the flag key, default or context: an unexpected exception is
logged, counted in :attr:`errors` (``evaluation_error``) and returned as ``GENERAL``.

``shutdown()`` (OpenFeature spec, requirement 2.5.2: the provider reverts to its uninitialised
state) drops the document: every evaluation after it is ``PROVIDER_NOT_READY`` with the caller's
default, and the store is not asked again until ``initialize()`` runs.

``flag_metadata`` carries ``flag_version`` (the store's version of the document served), when
a rule matched, ``rule``, and when a switchback flag's percentage rule was reached, ``unit`` (the
collection@window it bucketed on, whether the rule took it or the default did; ``wall_clock``,
epoch seconds, says which window it is).

A bad document or a failing store never raises into a caller: the last good document keeps
serving, the failure is logged and counted in :attr:`errors`, and the status moves to STALE (or
ERROR if nothing was ever loaded) until a good read brings it back to READY.
A new document version emits ``PROVIDER_CONFIGURATION_CHANGED`` with the changed flag keys.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from flags.compiled import CompiledDocument, TargetingKeyMissing
from flags.document import is_int
from flags.document_cache import DocumentCache, Events
from flags.stores import CacheSettings, FlagDocumentStore

log = logging.getLogger("snapmerge.flags")

PROVIDER_NAME: Final = "snapmerge-powertools-documents"
T = TypeVar("T")
_EMPTY: Final[Mapping[str, Any]] = {}


def _is_bool(v: object) -> bool:
    return isinstance(v, bool)


def _is_str(v: object) -> bool:
    return isinstance(v, str)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_object(v: object) -> bool:
    return isinstance(v, dict | list)


class DocumentProvider(AbstractProvider):
    """OpenFeature provider serving one store's documents; see the module docstring."""

    def __init__(
        self,
        store: FlagDocumentStore,
        cache: CacheSettings | None = None,
        *,
        clock: Any = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.store = store
        self.wall_clock = wall_clock
        self.cache = cache or CacheSettings.for_store(store)
        self.errors: Counter[str] = Counter()
        self._documents = DocumentCache(
            store, self.cache, clock=clock, errors=self.errors, emit=self._emit_all
        )

    # -- lifecycle -----------------------------------------------------------------------------
    def get_metadata(self) -> Metadata:
        return Metadata(name=PROVIDER_NAME)

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Load the first document; raising lets the SDK mark the provider ERROR (not FATAL)."""
        self._documents.reopen()
        self.refresh(emit=False)
        if self._documents.document is None:
            raise ProviderNotReadyError(f"no valid flag document from {self.store!r}")

    def shutdown(self) -> None:
        """Revert to the uninitialised state: no document, nothing served until initialize()."""
        self._documents.close()

    @property
    def version(self) -> str | None:
        return self._documents.version

    def refresh(self, *, emit: bool = True) -> None:
        """Ask the store now; swap in a new valid document; count and log any failure."""
        self._documents.refresh(emit=emit)

    def _emit_all(self, events: Events) -> None:
        emitters = {
            "ready": self.emit_provider_ready,
            "stale": self.emit_provider_stale,
            "error": self.emit_provider_error,
            "configuration_changed": self.emit_provider_configuration_changed,
        }
        for kind, details in events:
            try:
                emitters[kind](details)
            except Exception:  # a misbehaving event handler must not break evaluation
                log.exception("flag event handler failed on %s", kind)

    # -- resolution ----------------------------------------------------------------------------
    def _resolve(
        self,
        flag_key: str,
        default: T,
        context: EvaluationContext | None,
        accepts: Any,
        kind: str,
    ) -> FlagResolutionDetails[T]:
        """Never raises (see the module docstring)."""
        try:
            return self._evaluate(flag_key, default, context, accepts, kind)
        except Exception as exc:
            log.exception("flag %r evaluation failed, serving the default", flag_key)
            return self._error(
                default, ErrorCode.GENERAL, f"evaluation failed: {exc!r}", "evaluation_error"
            )

    def _evaluate(
        self,
        flag_key: str,
        default: T,
        context: EvaluationContext | None,
        accepts: Any,
        kind: str,
    ) -> FlagResolutionDetails[T]:
        doc = self._documents.current(flag_key)
        if doc is None:
            shut = self._documents.shut_down
            why = "the provider was shut down" if shut else "no valid flag document"
            return self._error(default, ErrorCode.PROVIDER_NOT_READY, why, "no_document")
        flag = doc.flags.get(flag_key)
        if flag is None:
            return self._error(
                default, ErrorCode.FLAG_NOT_FOUND, f"no flag {flag_key!r}", "flag_not_found", doc
            )
        ctx = context or EvaluationContext()
        try:
            result = flag.evaluate(ctx.targeting_key, ctx.attributes or _EMPTY, self.wall_clock)
        except TargetingKeyMissing as exc:
            return self._error(
                default, ErrorCode.TARGETING_KEY_MISSING, str(exc), "targeting_key_missing", doc
            )
        if not accepts(result.value):
            message = f"flag {flag_key!r} is {type(result.value).__name__}, asked for {kind}"
            return self._error(default, ErrorCode.TYPE_MISMATCH, message, "type_mismatch", doc)
        value: Any = result.value
        if kind == "float":
            try:
                value = float(result.value)
            except OverflowError:
                message = f"flag {flag_key!r} is {result.value!r}, beyond a float's range"
                return self._error(default, ErrorCode.TYPE_MISMATCH, message, "type_mismatch", doc)
        return FlagResolutionDetails(
            value=value, reason=result.reason, variant=result.variant, flag_metadata=result.metadata
        )

    def _error(
        self,
        default: T,
        code: ErrorCode,
        message: str,
        counter: str,
        doc: CompiledDocument | None = None,
    ) -> FlagResolutionDetails[T]:
        self.errors[counter] += 1
        return FlagResolutionDetails(
            value=default,
            reason=Reason.ERROR,
            error_code=code,
            error_message=message,
            flag_metadata={"flag_version": doc.version} if doc else {},
        )

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_bool, "boolean")

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_str, "string")

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, is_int, "integer")

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_number, "float")

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_object, "object")
