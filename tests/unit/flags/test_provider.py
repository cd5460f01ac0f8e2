"""OpenFeature provider conformance: types, reasons, defaults, errors, metadata, events, caching."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus

from flags.document import rollout_rule
from flags.provider import DocumentProvider
from flags.stores import CacheSettings, MemoryStore
from snapmerge.errors import StoreError
from tests.unit.flags.helpers import ManualClock, kill, make_doc, path_feature, when

DOMAIN = "provider-tests"
CTX = EvaluationContext("batch-0001", {"collection": "words", "batch_id": "batch-0001"})


def typed_doc() -> dict[str, object]:
    return make_doc(
        final_merge_path=path_feature("legacy", w=when("collection", "words", result="shadow")),
        ratio={"default": 0.5, "boolean_type": False},
        whole={"default": 3, "boolean_type": False},
        blob={"default": {"a": [1]}, "boolean_type": False},
    )


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(typed_doc())


Emitted = list[tuple[ProviderEvent, ProviderEventDetails]]


def register(provider: DocumentProvider, emitted: Emitted | None = None) -> OpenFeatureClient:
    """Register under a test domain; record what the provider emits (synchronously) if asked.

    The SDK delivers events to handlers on a thread pool, so ordering is only observable at the
    provider's ``emit``; :func:`test_sdk_delivers_events_to_handlers` checks the delivery itself.
    """
    with contextlib.suppress(Exception):  # initialize refused: registered, status ERROR
        api.set_provider_and_wait(provider, domain=DOMAIN)
    if emitted is not None:
        dispatch = provider._on_emit

        def record(p: Any, event: ProviderEvent, details: ProviderEventDetails) -> None:
            emitted.append((event, details))
            dispatch(p, event, details)

        provider._on_emit = record
    return api.get_client(domain=DOMAIN)


def provider_for(store: MemoryStore, clock: ManualClock, ttl: float = 10.0) -> DocumentProvider:
    return DocumentProvider(store, CacheSettings(ttl, min(1.0, ttl)), clock=clock)


def test_typed_resolution(store: MemoryStore, clock: ManualClock) -> None:
    client = register(provider_for(store, clock))
    path = client.get_string_details("final-merge-path", "legacy", CTX)
    assert (path.value, path.variant, path.reason) == ("shadow", "shadow", Reason.TARGETING_MATCH)
    assert path.flag_metadata["rule"] == "w"
    assert client.get_boolean_value("final-merge-kill-switch", True) is False
    assert client.get_integer_value("chunk-size-words", 0) == 15
    assert client.get_integer_value("whole", 0) == 3
    assert client.get_float_value("ratio", 0.0) == 0.5
    whole_as_float = client.get_float_details("whole", 0.0)
    assert whole_as_float.value == 3.0 and isinstance(whole_as_float.value, float)
    assert client.get_object_value("blob", {}) == {"a": [1]}
    static = client.get_integer_details("group-size", 0)
    assert (static.reason, static.variant) == (Reason.STATIC, "20")


@pytest.mark.parametrize(
    ("method", "key", "default"),
    [
        ("get_boolean_details", "final-merge-path", False),
        ("get_string_details", "final-merge-kill-switch", "x"),
        ("get_integer_details", "final-merge-kill-switch", 7),  # a bool is not an integer
        ("get_integer_details", "ratio", 7),
        ("get_float_details", "final-merge-path", 1.5),
        ("get_object_details", "whole", {"d": 1}),
    ],
)
def test_wrong_type_is_an_error_with_the_default(
    store: MemoryStore, clock: ManualClock, method: str, key: str, default: object
) -> None:
    provider = provider_for(store, clock)
    details = getattr(register(provider), method)(key, default, CTX)
    assert details.value == default
    assert details.reason == Reason.ERROR
    assert details.error_code == ErrorCode.TYPE_MISMATCH
    assert provider.errors["type_mismatch"] == 1


def test_unknown_flag(store: MemoryStore, clock: ManualClock) -> None:
    provider = provider_for(store, clock)
    details = register(provider).get_string_details("no-such-flag", "dflt")
    assert (details.value, details.reason) == ("dflt", Reason.ERROR)
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND
    assert provider.errors["flag_not_found"] == 1


def test_version_in_metadata(store: MemoryStore, clock: ManualClock) -> None:
    provider = provider_for(store, clock)
    details = register(provider).get_string_details("final-merge-path", "legacy", CTX)
    assert details.flag_metadata["flag_version"] == store.load()[1] == provider.version


def test_split_needs_a_targeting_key(clock: ManualClock) -> None:
    store = MemoryStore(make_doc(final_merge_path=path_feature(r=rollout_rule(100, "two_phase"))))
    provider = provider_for(store, clock)
    client = register(provider)
    split = client.get_string_details("final-merge-path", "legacy", CTX)
    assert (split.value, split.reason, split.variant) == ("two_phase", Reason.SPLIT, "two_phase")
    keyless = client.get_string_details("final-merge-path", "legacy")
    assert (keyless.value, keyless.error_code) == ("legacy", ErrorCode.TARGETING_KEY_MISSING)


def test_sdk_delivers_events_to_handlers(store: MemoryStore, clock: ManualClock) -> None:
    """READY once initialized, CONFIGURATION_CHANGED (with the changed keys) after a re-read."""
    got: dict[ProviderEvent, EventDetails] = {}
    arrived = {e: threading.Event() for e in ProviderEvent}

    def on(event: ProviderEvent) -> object:
        def handler(details: EventDetails) -> None:
            got[event] = details
            arrived[event].set()

        return handler

    client = register(provider_for(store, clock, ttl=10))
    assert client.get_provider_status() == ProviderStatus.READY
    client.add_handler(ProviderEvent.PROVIDER_READY, on(ProviderEvent.PROVIDER_READY))  # type: ignore[arg-type]
    changed = ProviderEvent.PROVIDER_CONFIGURATION_CHANGED
    client.add_handler(changed, on(changed))  # type: ignore[arg-type]
    assert arrived[ProviderEvent.PROVIDER_READY].wait(10)
    store.raw = {**typed_doc(), "final-merge-kill-switch": kill(True)}
    clock.advance(10)
    client.get_integer_value("group-size", 0)
    assert arrived[changed].wait(10)
    assert got[changed].flags_changed == ["final-merge-kill-switch"]
    assert got[changed].metadata["flag_version"] == store.load()[1]


def test_configuration_changed_only_after_the_ttl(store: MemoryStore, clock: ManualClock) -> None:
    emitted: Emitted = []
    client = register(provider_for(store, clock, ttl=10), emitted)
    store.raw = make_doc(final_merge_kill_switch=kill(True))
    clock.advance(5)  # within the TTL: still the old document, nothing emitted
    assert client.get_integer_value("group-size", 0) == 20
    assert emitted == []
    clock.advance(5)
    client.get_integer_value("group-size", 0)
    assert [e for e, _ in emitted] == [ProviderEvent.PROVIDER_CONFIGURATION_CHANGED]
    clock.advance(10)
    client.get_integer_value("group-size", 0)  # re-read, same version: no event
    assert len(emitted) == 1


def test_kill_switch_has_the_shorter_cache(store: MemoryStore, clock: ManualClock) -> None:
    client = register(provider_for(store, clock, ttl=10))  # kill switch TTL: 1 s
    store.raw = make_doc(final_merge_kill_switch=kill(True))
    clock.advance(1)
    assert client.get_boolean_value("final-merge-kill-switch", False) is True


def test_bad_document_keeps_the_last_good_and_counts_once(
    store: MemoryStore, clock: ManualClock
) -> None:
    emitted: Emitted = []
    provider = provider_for(store, clock, ttl=1)
    client = register(provider, emitted)
    good = provider.version
    store.raw = make_doc(final_merge_path=path_feature("turbo"))  # unknown variant
    for _ in range(3):
        clock.advance(1)
        details = client.get_string_details("final-merge-path", "legacy", CTX)
        assert (details.value, details.flag_metadata["flag_version"]) == ("shadow", good)
    assert provider.errors["invalid_document"] == 1
    assert client.get_provider_status() == ProviderStatus.STALE
    store.raw = typed_doc()  # the good one again
    clock.advance(1)
    client.get_string_details("final-merge-path", "legacy", CTX)
    assert client.get_provider_status() == ProviderStatus.READY
    assert [e for e, _ in emitted] == [ProviderEvent.PROVIDER_STALE, ProviderEvent.PROVIDER_READY]


def test_store_errors_keep_the_last_good(store: MemoryStore, clock: ManualClock) -> None:
    provider = provider_for(store, clock, ttl=1)
    client = register(provider)
    store.failure = StoreError("boom")
    for _ in range(2):
        clock.advance(1)
        assert client.get_string_value("final-merge-path", "legacy", CTX) == "shadow"
    assert provider.errors["store_error"] == 2


@pytest.mark.parametrize("raw", [None, "not a document", {"final-merge-path": {"default": "x"}}])
def test_nothing_valid_ever_means_defaults(raw: object, clock: ManualClock) -> None:
    emitted: Emitted = []
    store = MemoryStore(raw)
    provider = provider_for(store, clock, ttl=1)
    client = register(provider, emitted)
    assert client.get_provider_status() == ProviderStatus.ERROR
    details = client.get_string_details("final-merge-path", "legacy", CTX)
    assert (details.value, details.reason) == ("legacy", Reason.ERROR)
    assert details.error_code == ErrorCode.PROVIDER_NOT_READY
    assert sum(provider.errors.values()) >= 2  # the refusal and the evaluation
    store.raw = typed_doc()
    clock.advance(1)
    assert client.get_string_value("final-merge-path", "legacy", CTX) == "shadow"
    assert client.get_provider_status() == ProviderStatus.READY
    assert [e for e, _ in emitted] == [ProviderEvent.PROVIDER_READY]


def test_event_handler_that_raises_does_not_break_evaluation(
    store: MemoryStore, clock: ManualClock
) -> None:
    def explode(_details: EventDetails) -> None:
        raise RuntimeError("handler bug")

    client = register(provider_for(store, clock, ttl=1))
    api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, explode)
    try:
        store.raw = make_doc(final_merge_kill_switch=kill(True))
        clock.advance(1)
        assert client.get_boolean_value("final-merge-kill-switch", False) is True
    finally:
        api.remove_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, explode)


def test_raising_the_rollout_only_adds_keys(clock: ManualClock) -> None:
    """End to end through the provider: each key in the 10 % rollout stays in at 25 % and 50 %."""
    store = MemoryStore()
    provider = provider_for(store, clock, ttl=0)
    keys = [f"batch-{i:04d}" for i in range(400)]
    chosen: list[set[str]] = []
    for percent in (10, 25, 50):
        store.raw = make_doc(final_merge_path=path_feature(r=rollout_rule(percent, "two_phase")))
        provider.refresh()
        chosen.append(
            {
                k
                for k in keys
                if provider.resolve_string_details(
                    "final-merge-path", "legacy", EvaluationContext(k)
                ).value
                == "two_phase"
            }
        )
    assert chosen[0] <= chosen[1] <= chosen[2]
    assert 0 < len(chosen[0]) < len(chosen[1]) < len(chosen[2]) < len(keys)
