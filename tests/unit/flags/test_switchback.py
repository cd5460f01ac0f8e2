"""Switchback flags: percentage rules bucketed by (collection, time window), the unit they record.

Every assertion here is about a document with a ``switchback`` field; documents without one are
covered, unchanged, by the rest of this package's tests.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.feature_flags import FeatureFlags
from hypothesis import given, settings
from hypothesis import strategies as st
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails

from flags import bootstrap, resolve_pinned
from flags.bucketing import bucket_of, unit_key, window_of
from flags.client import FlagClient, clear_domains, open_domain
from flags.compiled import CompiledFlag, compile_document
from flags.decision import PathDecision
from flags.document import FlagDocumentError, rollout_rule, validate_document
from flags.keys import SWITCHBACK_FIELD
from flags.provider import DocumentProvider
from flags.stores import CacheSettings, MemoryStore
from snapmerge.domain import MergePath
from snapmerge.errors import InvalidEventError
from tests.unit.flags.helpers import StaticStore, kill, make_doc, path_feature, when

FLAG = "final-merge-path"
HOUR = 3600
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the start of an hour window
COLLECTIONS = ["words", "lines", "receipt_words", "receipt_lines"]

# The same table is published in docs/flags.md ("Switchback test vectors"); change both or neither.
# (flag, salt, by_collection, collection, window_seconds, now, unit key, bucket)
VECTORS: list[tuple[str, str, bool, str, int, float, str, int]] = [
    (FLAG, "", True, "words", 3600, 1767225600, "words@490896", 4870),
    (FLAG, "", True, "lines", 3600, 1767225600, "lines@490896", 5656),
    (FLAG, "", True, "words", 3600, 1767229199.5, "words@490896", 4870),
    (FLAG, "", True, "words", 3600, 1767229200, "words@490897", 9684),
    (FLAG, "", False, "words", 3600, 1767225600, "@490896", 1615),
    (FLAG, "v2", True, "words", 900, 1767225600, "words@1963584", 4482),
    (FLAG, "", True, "receipt_words", 86400, 1767225600, "receipt_words@20454", 4255),
]


class WallClock:
    """Epoch seconds, set by the test."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def switchback(window: int = HOUR, by_collection: bool | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"window_seconds": window}
    if by_collection is not None:
        out["by_collection"] = by_collection
    return out


def sb_doc(
    percent: float = 50,
    window: int = HOUR,
    by_collection: bool | None = None,
    salt: str = "",
    **rules: dict[str, Any],
) -> dict[str, Any]:
    feature = path_feature("legacy", **rules, rollout=rollout_rule(percent, "two_phase"))
    feature["salt"] = salt
    feature[SWITCHBACK_FIELD] = switchback(window, by_collection)
    return make_doc(final_merge_path=feature)


def compiled(doc: dict[str, Any]) -> CompiledFlag:
    return compile_document(doc, "v").flags[FLAG]


def path_at(flag: CompiledFlag, collection: str | None, now: float, key: str = "b-1") -> str:
    attributes = {} if collection is None else {"collection": collection}
    return str(flag.evaluate(key, attributes, lambda: now).value)


# -- test vectors ------------------------------------------------------------------------------
@pytest.mark.parametrize(("flag", "salt", "by", "coll", "window", "now", "unit", "bucket"), VECTORS)
def test_published_vectors(
    flag: str, salt: str, by: bool, coll: str, window: int, now: float, unit: str, bucket: int
) -> None:
    assert unit_key(coll if by else None, now, window) == unit
    assert bucket_of(flag, salt, unit) == bucket
    # and the evaluator buckets exactly that unit: a rollout just above the bucket includes it,
    # one at the bucket does not
    for percent, expected in ((bucket + 1, "two_phase"), (bucket, "legacy")):
        doc = sb_doc(percent / 100, window, by, salt)
        result = compiled(doc).evaluate("any", {"collection": coll}, lambda n=now: n)
        assert result.value == expected
        assert result.unit == unit  # both arms name the unit: the judge compares units


def test_vectors_match_the_docs() -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "flags.md").read_text()
    for flag, salt, by, coll, window, now, unit, bucket in VECTORS:
        row = f'| "{flag}" | "{salt}" | {str(by).lower()} | "{coll}" | {window} | {now} | '
        assert f'{row}"{unit}" | {bucket} |' in text, row


def test_window_is_the_floor_of_now_over_the_window() -> None:
    assert (
        window_of(T0, HOUR) == window_of(T0 + HOUR - 0.001, HOUR) == window_of(T0 + HOUR, HOUR) - 1
    )
    assert window_of(59.999, 60) == 0 and window_of(60, 60) == 1


# -- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (3600, "switchback must be an object"),
        (None, "switchback must be an object"),
        ([3600], "switchback must be an object"),
        ({}, "window_seconds must be an integer"),
        ({"window_seconds": 3600, "extra": 1}, r"unknown fields \['extra'\]"),
        ({"window_seconds": "3600"}, "window_seconds must be an integer"),
        ({"window_seconds": 3600.0}, "window_seconds must be an integer"),
        ({"window_seconds": True}, "window_seconds must be an integer"),
        ({"window_seconds": 0}, "window_seconds must be an integer 1..86400"),
        ({"window_seconds": -60}, "window_seconds must be an integer 1..86400"),
        ({"window_seconds": 86401}, "window_seconds must be an integer 1..86400"),
        ({"window_seconds": 60, "by_collection": "yes"}, "by_collection must be a boolean"),
        ({"window_seconds": 60, "by_collection": 1}, "by_collection must be a boolean"),
        ({"window_seconds": 60, "by_collection": None}, "by_collection must be a boolean"),
    ],
)
def test_refused_switchback_fields(value: object, fragment: str) -> None:
    doc = make_doc(final_merge_path={**path_feature(), SWITCHBACK_FIELD: value})
    with pytest.raises(FlagDocumentError, match=fragment) as info:
        validate_document(doc)
    assert f"flag {FLAG!r}: switchback" in str(info.value)  # names the flag and the field
    with pytest.raises(FlagDocumentError):
        compile_document(doc, "v")


@pytest.mark.parametrize(
    "value",
    [
        {"window_seconds": 1},
        {"window_seconds": 86400},
        {"window_seconds": 900, "by_collection": True},
        {"window_seconds": 900, "by_collection": False},
    ],
)
def test_accepted_switchback_fields(value: dict[str, Any]) -> None:
    doc = make_doc(final_merge_path={**path_feature(), SWITCHBACK_FIELD: value})
    assert validate_document(doc) is doc
    assert compiled(doc).switchback is not None


@pytest.mark.parametrize(
    ("flag", "feature", "fragment"),
    [
        ("final-merge-kill-switch", kill(False), "a kill switch must act on every execution"),
        ("chunk-size-words", {"default": 15, "boolean_type": False}, "only 'final-merge-path'"),
        ("chunk-size-lines", {"default": 25, "boolean_type": False}, "only 'final-merge-path'"),
        ("group-size", {"default": 20, "boolean_type": False}, "only 'final-merge-path'"),
        ("single-chunk-fast-path", {"default": False}, "only 'final-merge-path'"),
    ],
)
def test_a_switchback_is_refused_on_every_flag_read_but_the_path(
    flag: str, feature: dict[str, Any], fragment: str
) -> None:
    # a well-formed field, and a percentage rule it would randomize per window
    flipped = not feature["default"] if isinstance(feature["default"], bool) else 7
    rule = rollout_rule(50, flipped)
    feature = {**feature, "rules": {"r": rule}, SWITCHBACK_FIELD: switchback(60)}
    doc = make_doc(**{flag.replace("-", "_"): feature})
    with pytest.raises(FlagDocumentError, match=fragment) as info:
        validate_document(doc)
    assert f"flag {flag!r}: switchback is not allowed on this flag" in str(info.value)
    with pytest.raises(FlagDocumentError):
        MemoryStore(make_doc()).save(doc, None)  # a store cannot write it either
    del feature[SWITCHBACK_FIELD]
    assert validate_document(doc) is doc  # the same flag without it is served


def test_a_flag_snapmerge_does_not_read_may_still_carry_a_switchback() -> None:
    doc = make_doc(other_flag={"default": False, SWITCHBACK_FIELD: switchback(60)})
    assert validate_document(doc) is doc  # served as it is, like any unknown flag
    doc["other-flag"][SWITCHBACK_FIELD] = {}
    with pytest.raises(FlagDocumentError, match="window_seconds"):
        validate_document(doc)  # and its field still has the one shape


def test_a_bad_switchback_document_is_refused_by_the_provider_and_legacy_serves() -> None:
    bad = make_doc(final_merge_path={**path_feature("two_phase"), SWITCHBACK_FIELD: {}})
    provider = DocumentProvider(MemoryStore(bad), CacheSettings(60.0, 1.0))
    provider.refresh(emit=False)
    got = provider.resolve_string_details(FLAG, "legacy", EvaluationContext("k"))
    assert (got.value, got.error_code) == ("legacy", ErrorCode.PROVIDER_NOT_READY)
    assert provider.errors["invalid_document"] == 1


@settings(max_examples=60, deadline=None)
@given(
    percent=st.integers(0, 100),
    collection=st.sampled_from(COLLECTIONS),
    now=st.floats(T0, T0 + 30 * 86400),
    by_collection=st.booleans(),
)
def test_still_a_powertools_document_with_the_same_value(
    percent: int, collection: str, now: float, by_collection: bool
) -> None:
    """Powertools accepts the document (it ignores ``switchback`` as it ignores ``salt``) and,
    given the unit's bucket as ``bucket``, picks the value our evaluator picks."""
    doc = sb_doc(percent, 900, by_collection, "s1", w=when("batch_id", "b-2", result="shadow"))
    context = {"collection": collection, "batch_id": "b-1"}
    ours = compiled(doc).evaluate("k", context, lambda: now)
    unit = unit_key(collection if by_collection else None, now, 900)
    theirs = FeatureFlags(store=StaticStore(doc)).evaluate(
        name=FLAG, context={**context, "bucket": bucket_of(FLAG, "s1", unit)}, default="legacy"
    )
    assert ours.value == theirs


# -- evaluation --------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(
    batches=st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=8),
    # not up to HOUR: near epoch 1.8e9 floats step by 2.4e-7 s, so start + 3599.9999999999995
    # is the next window's first instant (and the evaluator rightly says so)
    offsets=st.lists(st.floats(0, HOUR - 0.001), min_size=2, max_size=8),
    collection=st.sampled_from(COLLECTIONS),
    hour=st.integers(0, 10_000),
    percent=st.integers(1, 99),
)
def test_one_collection_in_one_window_takes_one_path_whatever_the_batch(
    batches: list[str], offsets: list[float], collection: str, hour: int, percent: int
) -> None:
    flag = compiled(sb_doc(percent))
    start = T0 + hour * HOUR
    paths = {path_at(flag, collection, start + o, b) for b in batches for o in offsets}
    assert len(paths) == 1


def test_the_share_of_units_in_the_rollout_is_the_percentage() -> None:
    """Units, not executions: 2,000 windows x 4 collections, each unit with 1 to 7 executions.
    The unit share is within 2.5 points of the percentage; the execution share is whatever the
    units' sizes make it, and every execution of a unit agrees with its unit."""
    for percent in (10, 30, 50):
        flag = compiled(sb_doc(percent))
        units = in_rollout = 0
        for w in range(2000):
            for i, collection in enumerate(COLLECTIONS):
                executions = {
                    path_at(flag, collection, T0 + w * HOUR + 60 * e, f"b-{w}-{i}-{e}")
                    for e in range(1 + (w + i) % 7)
                }
                assert len(executions) == 1
                units += 1
                in_rollout += executions == {"two_phase"}
        assert abs(in_rollout / units - percent / 100) < 0.025, (percent, in_rollout / units)


def test_raising_the_percentage_within_a_window_only_adds_units() -> None:
    now = WallClock(T0 + 5 * HOUR + 17)
    store = MemoryStore(sb_doc(10))
    provider = DocumentProvider(store, CacheSettings(0.0, 0.0), wall_clock=now)
    collections = [f"c{i:03d}" for i in range(300)]
    chosen: list[set[str]] = []
    for percent in (10, 25, 50, 100):
        store.raw = sb_doc(percent)
        provider.refresh()
        chosen.append(
            {
                c
                for c in collections
                if provider.resolve_string_details(
                    FLAG, "legacy", EvaluationContext(f"b-{c}", {"collection": c})
                ).value
                == "two_phase"
            }
        )
    assert chosen[0] <= chosen[1] <= chosen[2] <= chosen[3] == set(collections)
    assert 0 < len(chosen[0]) < len(chosen[1]) < len(chosen[2]) < len(collections)


def test_the_next_window_draws_again() -> None:
    flag = compiled(sb_doc(50))
    for collection in COLLECTIONS:
        over_six_windows = [path_at(flag, collection, T0 + w * HOUR) for w in range(6)]
        assert set(over_six_windows) == {"legacy", "two_phase"}, (collection, over_six_windows)
    # and collections are drawn apart: within one window, not every collection agrees
    assert len({path_at(flag, c, T0 + 3 * HOUR) for c in [f"c{i}" for i in range(20)]}) == 2


def test_not_by_collection_every_collection_of_a_window_shares_a_path() -> None:
    flag = compiled(sb_doc(50, by_collection=False))
    per_window = []
    for w in range(40):
        paths = {path_at(flag, c, T0 + w * HOUR + 7) for c in [*COLLECTIONS, None]}
        assert len(paths) == 1, w
        per_window.append(paths.pop())
    assert set(per_window) == {"legacy", "two_phase"}
    result = flag.evaluate(None, {}, lambda: T0)  # neither collection nor targeting key needed
    assert (result.value, result.unit) == ("two_phase", "@490896")  # bucket 1615 < 5000


def test_a_switchback_split_needs_no_targeting_key() -> None:
    flag = compiled(sb_doc(100))
    result = flag.evaluate(None, {"collection": "words"}, lambda: T0)
    assert (result.value, result.reason, result.unit) == ("two_phase", "SPLIT", "words@490896")


@pytest.mark.parametrize("attributes", [{}, {"collection": ""}, {"collection": 7}])
def test_no_collection_is_a_missing_key_in_the_provider(attributes: dict[str, Any]) -> None:
    provider = DocumentProvider(MemoryStore(sb_doc(100)), CacheSettings(60.0, 1.0))
    provider.refresh(emit=False)
    got = provider.resolve_string_details(FLAG, "legacy", EvaluationContext("b-1", attributes))
    assert (got.value, got.error_code) == ("legacy", ErrorCode.TARGETING_KEY_MISSING)
    assert "collection" in (got.error_message or "")
    assert provider.errors["targeting_key_missing"] == 1


def test_a_targeting_rule_before_the_split_still_needs_no_collection() -> None:
    """The unit is only formed when a percentage rule is reached."""
    flag = compiled(sb_doc(100, special=when("batch_id", "b-7", result="shadow")))
    result = flag.evaluate("b-7", {"batch_id": "b-7"}, lambda: T0)
    assert (result.value, result.reason, result.unit) == ("shadow", "TARGETING_MATCH", None)


def test_the_unit_is_added_per_evaluation_not_to_the_shared_outcome() -> None:
    flag = compiled(sb_doc(100))
    first = flag.evaluate(None, {"collection": "words"}, lambda: T0)
    second = flag.evaluate(None, {"collection": "lines"}, lambda: T0 + HOUR)
    assert (first.unit, second.unit) == ("words@490896", "lines@490897")
    assert (first.metadata["unit"], second.metadata["unit"]) == ("words@490896", "lines@490897")
    shared = flag.rules[0].result
    assert shared.unit is None and "unit" not in shared.metadata
    assert first.metadata["rule"] == "rollout" and first.metadata["flag_version"] == "v"


def test_a_flag_without_switchback_records_no_unit() -> None:
    doc = make_doc(final_merge_path=path_feature(r=rollout_rule(100, "two_phase")))
    result = compiled(doc).evaluate("b-1", {"collection": "words"}, lambda: T0)
    assert (result.reason, result.unit) == ("SPLIT", None)
    assert "unit" not in result.metadata


# -- decisions ---------------------------------------------------------------------------------
def decide(client: FlagClient, collection: str = "words", batch: str = "b-1") -> PathDecision:
    return client.decide_path(targeting_key=batch, collection=collection, batch_id=batch)


def test_the_decision_records_its_unit() -> None:
    now = WallClock(T0 + 30)
    client = bootstrap(MemoryStore(sb_doc(100)), wall_clock=now)
    d = decide(client)
    assert (d.path, d.reason, d.unit, d.error) == (
        MergePath.TWO_PHASE,
        "SPLIT",
        "words@490896",
        None,
    )
    assert d.to_event()["unit"] == "words@490896"
    now.now += HOUR  # the injected clock is the one evaluations read
    assert decide(client, "lines").unit == "lines@490897"
    assert bootstrap() is client and bootstrap(wall_clock=now) is client


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (sb_doc(100, t=when("collection", "words", result="shadow")), "TARGETING_MATCH"),
        (make_doc(final_merge_path=path_feature(r=rollout_rule(100, "two_phase"))), "SPLIT"),
        (make_doc(), "STATIC"),
    ],
    ids=["targeting-rule", "per-execution-split", "static"],
)
def test_only_a_switchback_split_records_a_unit(doc: dict[str, Any], reason: str) -> None:
    d = decide(bootstrap(MemoryStore(doc), wall_clock=WallClock()))
    assert (d.reason, d.unit, d.error) == (reason, None, None)


def test_a_unit_the_split_did_not_take_is_named_on_the_legacy_side_too() -> None:
    # at 0 % every unit stays on legacy (the default): its executions still name their unit,
    # so the judge can compare legacy's units with two-phase's
    d = decide(bootstrap(MemoryStore(sb_doc(0)), wall_clock=WallClock()))
    assert (d.path, d.reason, d.error) == (MergePath.LEGACY, "DEFAULT", None)
    assert d.unit is not None and d.unit.startswith("words@")


def test_the_kill_switch_decision_has_no_unit() -> None:
    doc = {**sb_doc(100), "final-merge-kill-switch": kill(True)}
    d = decide(bootstrap(MemoryStore(doc), wall_clock=WallClock()))
    assert (d.path, d.reason, d.unit) == (MergePath.LEGACY, "KILL_SWITCH", None)


def test_a_switchback_flag_without_a_collection_fails_closed_with_an_error() -> None:
    client = bootstrap(MemoryStore(sb_doc(100)), wall_clock=WallClock())
    d = decide(client, collection="")
    assert (d.path, d.reason, d.kill_switch, d.unit) == (MergePath.LEGACY, "ERROR", False, None)
    assert "TARGETING_KEY_MISSING" in (d.error or "") and "collection" in (d.error or "")
    assert d.flag_version == client.provider.version
    counters = client.counters()
    assert counters["fail_closed_decisions"] == 1
    assert counters["errors.targeting_key_missing"] == 1
    # not by collection, the same call is decided: the unit is the window alone
    open_doc = sb_doc(100, by_collection=False)
    d = decide(bootstrap(MemoryStore(open_doc), wall_clock=WallClock()), collection="")
    assert (d.path, d.unit) == (MergePath.TWO_PHASE, "@490896")


def test_the_unit_round_trips_through_the_event() -> None:
    d = PathDecision(MergePath.TWO_PHASE, "two_phase", "SPLIT", "v1", unit="words@490896")
    event = json.loads(json.dumps(d.to_event()))
    assert event["unit"] == "words@490896"
    assert PathDecision.from_event(event) == d
    old = {k: v for k, v in event.items() if k != "unit"}  # an execution from before switchback
    assert PathDecision.from_event(old).unit is None
    assert PathDecision.from_event({**event, "unit": None}).unit is None


@pytest.mark.parametrize("bad", [7, ["words@1"], {"c": "words"}, True])
def test_a_non_string_unit_is_refused(bad: object) -> None:
    event = {**PathDecision(MergePath.TWO_PHASE, "two_phase", "SPLIT").to_event(), "unit": bad}
    with pytest.raises(InvalidEventError, match="unit"):
        PathDecision.from_event(event)


def test_an_empty_unit_is_refused_as_malformed_state() -> None:
    # "" is a string, but no unit key is empty: a decision naming it would read as a unit in the
    # execution's state and as none to the judge (rollout.samples.unit_of)
    event = {**PathDecision(MergePath.TWO_PHASE, "two_phase", "SPLIT").to_event(), "unit": ""}
    with pytest.raises(InvalidEventError, match="empty unit"):
        PathDecision.from_event(event)


def test_a_decision_pinned_with_an_empty_unit_fails_closed_to_legacy() -> None:
    client = bootstrap(MemoryStore(sb_doc(100)), wall_clock=WallClock())
    pinned = {**decide(client).to_event(), "unit": ""}
    assert pinned["path"] == "two_phase"
    d = resolve_pinned({"batch_id": "b-1", "database": "words", "routing": pinned}, client)
    assert (d.path, d.reason, d.pinned, d.unit) == (MergePath.LEGACY, "ERROR", True, None)
    assert "empty unit" in (d.error or "")
    assert client.counters()["pinned_decision_invalid"] == 1  # like any malformed pinned field


class EmptyUnitProvider(DocumentProvider):
    """A provider whose path evaluations name the unit ``""`` (ours never does)."""

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        got = super().resolve_string_details(flag_key, default_value, evaluation_context)
        return replace(got, flag_metadata={**got.flag_metadata, "unit": ""})


def test_a_provider_naming_an_empty_unit_named_none_and_the_decision_stays_pinnable() -> None:
    provider = EmptyUnitProvider(MemoryStore(make_doc(final_merge_path=path_feature("two_phase"))))
    try:
        client = FlagClient(provider, open_domain(provider, "test-empty-unit"))
        d = decide(client)
        assert (d.path, d.unit, d.error) == (MergePath.TWO_PHASE, None, None)
        event = {"batch_id": "b-1", "database": "words", "routing": d.to_event()}
        later = resolve_pinned(event, client)  # the next step takes it as it was pinned
        assert (later.path, later.pinned, later.unit) == (MergePath.TWO_PHASE, True, None)
    finally:
        clear_domains()


def test_a_pinned_decision_keeps_its_unit_across_the_window_boundary() -> None:
    now = WallClock(T0 + HOUR - 1)
    store = MemoryStore(sb_doc(100))
    client = bootstrap(store, wall_clock=now)
    event: dict[str, Any] = {"batch_id": "b-1", "database": "words"}
    event["routing"] = decide(client).to_event()  # the split step, one second before the hour
    now.now += 2  # the next window: a new execution would be in unit words@490897
    assert decide(client).unit == "words@490897"
    later = resolve_pinned(event, client)
    assert (later.path, later.pinned, later.unit) == (MergePath.TWO_PHASE, True, "words@490896")
    # the kill switch turns it into legacy, which is no longer the arm the unit was given
    store.raw = {**sb_doc(100), "final-merge-kill-switch": kill(True)}
    client.provider.refresh()
    killed = resolve_pinned(event, client)
    assert (killed.path, killed.reason, killed.unit) == (MergePath.LEGACY, "KILL_SWITCH", None)


def test_the_example_in_the_docs_is_valid() -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "flags.md").read_text()
    section = text.split("## Switchback", 1)[1]
    example = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    flag = compiled(example)
    assert flag.switchback is not None and flag.switchback.window_seconds == HOUR
    # the vectors' first row: words@490896 has bucket 4870, below the example's 5000
    result = flag.evaluate(None, {"collection": "words"}, lambda: T0)
    assert (result.value, result.unit) == ("two_phase", "words@490896")
