"""The provider never raises out of ``resolve_*``; ``shutdown()`` per the OpenFeature spec; the
empty targeting key decided one way; the kill switch read with the execution's context."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason

from flags import bootstrap, resolve_pinned
from flags.document import rollout_rule
from flags.provider import DocumentProvider
from flags.stores import CacheSettings, MemoryStore
from snapmerge.domain import MergePath
from tests.unit.flags.helpers import kill, make_doc, path_feature, when

LONE_SURROGATES = ["\ud800", "batch-\udfff", "\udc80\udc80"]


def provider(doc: dict[str, Any]) -> DocumentProvider:
    p = DocumentProvider(MemoryStore(doc), CacheSettings(60.0, 1.0))
    p.initialize(EvaluationContext())
    return p


def odd_doc() -> dict[str, Any]:
    return make_doc(
        final_merge_path=path_feature("legacy", everyone=rollout_rule(50, "two_phase")),
        huge={"default": 10**400, "boolean_type": False},
        split_int={
            "default": 1,
            "boolean_type": False,
            "rules": {"half": rollout_rule(50, 10**400)},
        },
        listy={"default": [1, "x", None], "boolean_type": False},
    )


def test_a_lone_surrogate_targeting_key_reaching_a_bucket_rule() -> None:
    p = provider(odd_doc())
    for key in LONE_SURROGATES:
        details = p.resolve_string_details("final-merge-path", "legacy", EvaluationContext(key))
        assert details.error_code is None, details.error_message
        assert details.reason in ("SPLIT", "DEFAULT") and details.value in ("legacy", "two_phase")
        again = p.resolve_string_details("final-merge-path", "legacy", EvaluationContext(key))
        assert again.value == details.value  # still sticky


def test_an_integer_beyond_a_float_read_as_float_is_a_type_mismatch() -> None:
    p = provider(odd_doc())
    details = p.resolve_float_details("huge", 1.5)
    assert (details.value, details.error_code) == (1.5, ErrorCode.TYPE_MISMATCH)
    assert "beyond a float's range" in (details.error_message or "")
    assert p.resolve_integer_details("huge", 0).value == 10**400  # as an integer it is fine


def test_through_the_sdk_too() -> None:
    api.set_provider_and_wait(provider(odd_doc()), domain="never-throws")
    client = api.get_client(domain="never-throws")
    assert client.get_float_details("huge", 2.5).value == 2.5
    details = client.get_string_details("final-merge-path", "legacy", EvaluationContext("\ud800"))
    assert details.error_code is None


RESOLVERS = ("boolean", "string", "integer", "float", "object")
DEFAULTS = {"boolean": False, "string": "d", "integer": 7, "float": 0.25, "object": {"d": 1}}
weird_text = st.one_of(st.text(max_size=12), st.sampled_from([*LONE_SURROGATES, "", " "]))
weird_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    weird_text,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flag=st.one_of(
        st.sampled_from(["final-merge-path", "huge", "split_int", "listy", "missing"]), weird_text
    ),
    kind=st.sampled_from(RESOLVERS),
    key=st.one_of(st.none(), weird_text),
    attributes=st.dictionaries(
        st.sampled_from(["collection", "batch_id", "bucket", "execution_id", "x"]),
        weird_value,
        max_size=4,
    ),
)
def test_resolve_never_raises(flag: str, kind: str, key: str | None, attributes: Any) -> None:
    p = PROVIDER
    resolve = getattr(p, f"resolve_{kind}_details")
    details = resolve(flag, DEFAULTS[kind], EvaluationContext(key, attributes))
    assert isinstance(details, FlagResolutionDetails)
    if details.error_code is not None:
        assert details.value == DEFAULTS[kind] and details.reason == Reason.ERROR


PROVIDER = provider(odd_doc())


# -- shutdown (OpenFeature spec 2.5.2: revert to the uninitialised state) ------------------------
def test_shutdown_stops_serving_until_initialised_again() -> None:
    store = MemoryStore(make_doc(final_merge_path=path_feature("two_phase")))
    p = DocumentProvider(store, CacheSettings(0.0, 0.0))
    p.initialize(EvaluationContext())
    assert p.resolve_string_details("final-merge-path", "legacy").value == "two_phase"
    p.shutdown()
    loads = store.loads
    details = p.resolve_string_details("final-merge-path", "legacy")
    assert (details.value, details.error_code) == ("legacy", ErrorCode.PROVIDER_NOT_READY)
    assert "shut down" in (details.error_message or "") and p.version is None
    assert store.loads == loads  # the store is not asked after shutdown
    p.initialize(EvaluationContext())
    assert p.resolve_string_details("final-merge-path", "legacy").value == "two_phase"


def test_the_sdk_shutdown_reaches_the_provider() -> None:
    p = provider(make_doc(final_merge_path=path_feature("two_phase")))
    api.set_provider_and_wait(p, domain="shutdown-test")
    api.shutdown()
    assert p.resolve_string_details("final-merge-path", "legacy").error_code == (
        ErrorCode.PROVIDER_NOT_READY
    )


# -- the empty targeting key: missing, whichever way the provider is called -----------------------
def test_an_empty_targeting_key_is_missing_directly_and_through_the_sdk() -> None:
    doc = make_doc(final_merge_path=path_feature("legacy", everyone=rollout_rule(100, "two_phase")))
    p = provider(doc)
    direct = p.resolve_string_details("final-merge-path", "legacy", EvaluationContext(""))
    assert direct.error_code == ErrorCode.TARGETING_KEY_MISSING and direct.value == "legacy"
    api.set_provider_and_wait(p, domain="empty-key")
    via_sdk = api.get_client(domain="empty-key").get_string_details(
        "final-merge-path", "legacy", EvaluationContext("")
    )
    assert via_sdk.error_code == ErrorCode.TARGETING_KEY_MISSING and via_sdk.value == "legacy"


# -- the kill switch with the execution's context -------------------------------------------------
SCOPED_KILL = make_doc(
    final_merge_path=path_feature("two_phase"),
    final_merge_kill_switch={
        "default": False,
        "rules": {"lines only": when("collection", "lines", result=True)},
    },
)


def test_a_per_collection_kill_rule_fires_for_that_collection_only() -> None:
    client = bootstrap(MemoryStore(SCOPED_KILL))
    lines = client.decide_path(targeting_key="b-1", collection="lines", batch_id="b-1")
    words = client.decide_path(targeting_key="b-2", collection="words", batch_id="b-2")
    assert (lines.path, lines.reason, lines.kill_switch) == (MergePath.LEGACY, "KILL_SWITCH", True)
    assert (words.path, words.kill_switch) == (MergePath.TWO_PHASE, False)


def test_a_per_collection_kill_rule_overrides_a_pinned_decision() -> None:
    store = MemoryStore(make_doc(final_merge_path=path_feature("two_phase")))
    client = bootstrap(store)
    events = {
        db: {"batch_id": f"b-{db}", "database": db, "execution_id": f"exec-{db}"}
        for db in ("lines", "words")
    }
    for db, event in events.items():
        event["routing"] = resolve_pinned(event, client).to_event()
        assert event["routing"]["path"] == "two_phase", db
    store.raw = SCOPED_KILL
    client.provider.refresh()
    lines, words = (resolve_pinned(events[db], client) for db in ("lines", "words"))
    assert (lines.path, lines.reason, lines.pinned) == (MergePath.LEGACY, "KILL_SWITCH", True)
    assert (words.path, words.pinned) == (MergePath.TWO_PHASE, True)


def test_a_kill_rule_on_one_execution_id() -> None:
    doc = make_doc(
        final_merge_path=path_feature("two_phase"),
        final_merge_kill_switch={
            "default": False,
            "rules": {"that run": when("execution_id", "exec-bad", result=True)},
        },
    )
    client = bootstrap(MemoryStore(doc))
    bad = {"batch_id": "b", "database": "words", "execution_id": "exec-bad", "routing": None}
    good = {**bad, "execution_id": "exec-good"}
    bad.pop("routing"), good.pop("routing")
    assert resolve_pinned(bad, client).path is MergePath.LEGACY
    assert resolve_pinned(good, client).path is MergePath.TWO_PHASE


@pytest.mark.parametrize("on", [True, False])
def test_the_switch_default_still_applies_with_a_context(on: bool) -> None:
    client = bootstrap(MemoryStore(make_doc(final_merge_kill_switch=kill(on))))
    assert client.read_kill_switch(collection="words", batch_id="b")[0] is on


@pytest.mark.parametrize("event", [["not", "an", "object"], "final_merge", None, 42])
def test_a_non_object_event_is_a_clear_invalid_event_error(event: object) -> None:
    """Review finding (LOW): a list or string event raised AttributeError from ``event.get``."""
    from snapmerge.errors import InvalidEventError

    client = bootstrap(MemoryStore(make_doc(final_merge_path=path_feature("two_phase"))))
    with pytest.raises(InvalidEventError, match="must be a JSON object, not"):
        resolve_pinned(event, client)  # type: ignore[arg-type]
