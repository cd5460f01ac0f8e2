"""Differential test: our provider against Powertools' own ``FeatureFlags.evaluate`` on generated
documents and contexts (hypothesis).

Documents have boolean and non-boolean flags, ordered rules of every comparison action, absent
context keys (NOT_EQUALS / NOT_IN / KEY_NOT_IN_VALUE on a key the context lacks), the three time
conditions in strict and in loose formats, MODULO_RANGE, and our ``bucket`` split (given to
Powertools as a context value, the bucket we compute). "Now" is generated too and patched into
Powertools' comparators, which both evaluators call, so time conditions are compared at chosen
instants rather than at whatever the clock says.

Agreement means: where Powertools refuses the document (SchemaValidationError) the provider
serves the caller's default with an error; otherwise the provider resolves, without an error, to
the value Powertools returns. The pinned Powertools line is what this is checked against
(pyproject: ``aws-lambda-powertools>=3.37,<3.38``).
"""

from __future__ import annotations

import warnings
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

from aws_lambda_powertools.utilities.feature_flags import comparators
from aws_lambda_powertools.utilities.feature_flags.exceptions import SchemaValidationError
from aws_lambda_powertools.utilities.feature_flags.feature_flags import FeatureFlags
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openfeature.evaluation_context import EvaluationContext

from flags.bucketing import bucket_of
from flags.provider import DocumentProvider
from flags.stores import CacheSettings, MemoryStore
from tests.unit.flags.helpers import StaticStore

EXAMPLES = 600
KEYS = ["tier", "region", "n", "tags"]
COMPARISONS = [
    "EQUALS",
    "NOT_EQUALS",
    "KEY_GREATER_THAN_VALUE",
    "KEY_GREATER_THAN_OR_EQUAL_VALUE",
    "KEY_LESS_THAN_VALUE",
    "KEY_LESS_THAN_OR_EQUAL_VALUE",
    "STARTSWITH",
    "ENDSWITH",
    "IN",
    "NOT_IN",
    "KEY_IN_VALUE",
    "KEY_NOT_IN_VALUE",
    "VALUE_IN_KEY",
    "VALUE_NOT_IN_KEY",
    "ALL_IN_VALUE",
    "ANY_IN_VALUE",
    "NONE_IN_VALUE",
]
NEGATIVE = {"NOT_EQUALS", "NOT_IN", "KEY_NOT_IN_VALUE", "VALUE_NOT_IN_KEY", "NONE_IN_VALUE"}
DAYS = ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"]
ZONES = ["UTC", "Europe/Lisbon", "America/New_York", "Asia/Kolkata"]

scalar = st.one_of(
    st.sampled_from(["gold", "silver", "eu", "us", "g", ""]),
    st.integers(-3, 12),
)
value = st.one_of(scalar, st.lists(scalar, max_size=3))


def hhmm(loose: bool) -> st.SearchStrategy[str]:
    strict = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
    if not loose:
        return strict
    sloppy = st.builds(lambda h, m: f"{h}:{m}", st.integers(0, 9), st.integers(0, 9))
    return st.one_of(strict, sloppy, st.sampled_from(["24:00", "9.30", "noon"]))


def iso(loose: bool) -> st.SearchStrategy[str]:
    moments = st.datetimes(datetime(2024, 1, 1), datetime(2026, 12, 31))
    strict = moments.map(lambda d: d.isoformat(timespec="seconds"))
    if not loose:
        return strict
    return st.one_of(
        strict,
        moments.map(lambda d: d.isoformat(timespec="seconds") + "Z"),
        moments.map(lambda d: d.strftime("%Y-%m-%d")),
        st.sampled_from(["2025-13-01T00:00:00", "yesterday"]),
    )


@st.composite
def time_condition(draw: st.DrawFn) -> dict[str, Any]:
    loose = draw(st.integers(0, 4)) == 0  # one in five may be malformed: both must refuse it
    kind = draw(st.sampled_from(["time", "datetime", "days"]))
    zone = draw(st.sampled_from([*ZONES, None]))
    extra = {"TIMEZONE": zone} if zone else {}
    if kind == "time":
        val = {"START": draw(hhmm(loose)), "END": draw(hhmm(loose)), **extra}
        return {"action": "SCHEDULE_BETWEEN_TIME_RANGE", "key": "CURRENT_TIME", "value": val}
    if kind == "datetime":
        val = {"START": draw(iso(loose)), "END": draw(iso(loose)), **extra}
        return {
            "action": "SCHEDULE_BETWEEN_DATETIME_RANGE",
            "key": "CURRENT_DATETIME",
            "value": val,
        }
    days = draw(st.lists(st.sampled_from([*DAYS, "monday"] if loose else DAYS), max_size=3))
    return {
        "action": "SCHEDULE_BETWEEN_DAYS_OF_WEEK",
        "key": "CURRENT_DAY_OF_WEEK",
        "value": {"DAYS": days, **extra},
    }


@st.composite
def modulo(draw: st.DrawFn) -> dict[str, Any]:
    base = draw(st.integers(1, 10))
    start = draw(st.integers(0, base - 1))
    end = draw(st.integers(start, base - 1))
    if draw(st.integers(0, 9)) == 0:  # sometimes out of range: both must refuse it
        start, end = end + 1, start
    return {
        "action": "MODULO_RANGE",
        "key": "n",
        "value": {"BASE": base, "START": start, "END": end},
    }


LIST_ACTIONS = {"ALL_IN_VALUE", "ANY_IN_VALUE", "NONE_IN_VALUE"}


@st.composite
def comparison(draw: st.DrawFn) -> dict[str, Any]:
    action = draw(st.sampled_from(COMPARISONS))
    wanted = st.lists(scalar, max_size=3) if action in LIST_ACTIONS else value
    cond_value = draw(st.one_of(wanted, value) if draw(st.integers(0, 9)) == 0 else wanted)
    return {"action": action, "key": draw(st.sampled_from(KEYS)), "value": cond_value}


condition = st.one_of(
    comparison(),
    time_condition(),
    modulo(),
    st.builds(
        lambda t: {"action": "KEY_LESS_THAN_VALUE", "key": "bucket", "value": t},
        st.integers(0, 10_000),
    ),
)


@st.composite
def feature(draw: st.DrawFn) -> dict[str, Any]:
    boolean = draw(st.sampled_from([True, False, None]))  # None: boolean_type left out (True)
    result = st.booleans() if boolean in (True, None) else value
    out: dict[str, Any] = {"default": draw(result)}
    if boolean is not None:
        out["boolean_type"] = boolean
    names = draw(st.lists(st.sampled_from(["r0", "r1", "r2", "r3"]), max_size=3, unique=True))
    if names or draw(st.booleans()):
        out["rules"] = {
            name: {
                "when_match": draw(result),
                "conditions": draw(st.lists(condition, min_size=1, max_size=3)),
            }
            for name in names
        }
    return out


documents = st.dictionaries(st.sampled_from(["f0", "f1", "f2"]), feature(), min_size=1, max_size=3)
contexts = st.dictionaries(st.sampled_from(KEYS), value, max_size=4)
instants = st.datetimes(datetime(2024, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC))


SENTINEL = "caller-default"
SEEN: Counter[str] = Counter()


def _resolve(provider: DocumentProvider, name: str, want: Any, ctx: EvaluationContext) -> Any:
    """Ask the provider with the resolver for the type Powertools returned."""
    if isinstance(want, bool):
        return provider.resolve_boolean_details(name, not want, ctx)
    if isinstance(want, int):
        return provider.resolve_integer_details(name, want + 1, ctx)
    if isinstance(want, str):
        return provider.resolve_string_details(name, want + "-not", ctx)
    return provider.resolve_object_details(name, {"not": want}, ctx)


def _note(doc: dict[str, Any], context: dict[str, Any]) -> None:
    for feat in doc.values():
        for rule in (feat.get("rules") or {}).values():
            for cond in rule["conditions"]:
                action = cond["action"]
                if action.startswith("SCHEDULE"):
                    SEEN["time condition"] += 1
                elif cond["key"] not in context and cond["key"] != "bucket":
                    SEEN["absent key"] += 1
                    if action in NEGATIVE:
                        SEEN["absent key, negative action"] += 1
                if cond["key"] == "bucket":
                    SEEN["bucket split"] += 1


def _check(doc: dict[str, Any], context: dict[str, Any], key: str, now: datetime) -> None:
    SEEN["examples"] += 1
    _note(doc, context)

    def fixed_now(zone: Any) -> datetime:
        return now.astimezone(zone or UTC)

    provider = DocumentProvider(MemoryStore(doc), CacheSettings(3600.0, 3600.0))
    with (
        mock.patch.object(comparators, "_get_now_from_timezone", fixed_now),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        ctx_pt = {**context}
        for name in doc:
            flags = FeatureFlags(store=StaticStore(doc))
            ctx_pt["bucket"] = bucket_of(name, "", key)
            try:
                theirs = flags.evaluate(name=name, context=ctx_pt, default=SENTINEL)
            except SchemaValidationError:
                SEEN["documents refused by both"] += 1
                ours = provider.resolve_string_details(
                    name, SENTINEL, EvaluationContext(key, context)
                )
                assert ours.error_code is not None and ours.value == SENTINEL, ours
                continue
            SEEN["evaluations compared"] += 1
            ours = _resolve(provider, name, theirs, EvaluationContext(key, context))
            assert ours.error_code is None, (doc, context, ours)
            assert ours.value == theirs and type(ours.value) is type(theirs), (
                doc,
                context,
                ours,
                theirs,
            )


GENERATED = given(
    doc=documents, context=contexts, key=st.text(min_size=1, max_size=8), now=instants
)
_same_as_powertools = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)(GENERATED(_check))
# the negative control only needs to see a failure, not a shrunk one; derandomized, because a
# random draw of 600 missed the absent-key case about one run in six (seen in this suite)
_same_as_powertools_unshrunk = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)(GENERATED(_check))


def test_the_provider_evaluates_exactly_as_powertools() -> None:
    SEEN.clear()
    _same_as_powertools()
    print(f"\nparity with Powertools: {dict(SEEN)}")
    # the generator really reached the cases the issue names
    assert SEEN["examples"] >= EXAMPLES // 2
    for case in ("time condition", "absent key, negative action", "bucket split"):
        assert SEEN[case] > 20, (case, SEEN)
    assert SEEN["documents refused by both"] > 10 and SEEN["evaluations compared"] > EXAMPLES // 2


def test_time_conditions_are_compared_at_the_generated_instant() -> None:
    """Control for the patch: the same document flips with 'now', in both evaluators."""
    doc = {
        "f0": {
            "default": False,
            "rules": {
                "office hours": {
                    "when_match": True,
                    "conditions": [
                        {
                            "action": "SCHEDULE_BETWEEN_TIME_RANGE",
                            "key": "CURRENT_TIME",
                            "value": {"START": "09:00", "END": "17:00"},
                        }
                    ],
                }
            },
        }
    }
    provider = DocumentProvider(MemoryStore(doc), CacheSettings(3600.0, 3600.0))
    day = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
    for when, expected in ((day, True), (day + timedelta(hours=8), False)):
        with mock.patch.object(comparators, "_get_now_from_timezone", lambda z, w=when: w):
            theirs = FeatureFlags(store=StaticStore(doc)).evaluate(name="f0", default=False)
            ours = provider.resolve_boolean_details("f0", False).value
        assert theirs is ours is expected


def test_negative_control_an_evaluator_that_matches_absent_keys_is_caught() -> None:
    """The rules of older Powertools lines: an absent key compared as None, so NOT_EQUALS and
    friends match it. The differential test must fail on such an evaluator."""
    import pytest

    from flags.compiled import CompiledFlag

    original = CompiledFlag._matches

    def absent_as_none(self: Any, rule: Any, key: Any, attributes: Any, bucket: Any) -> bool:
        filled = {**{c.key: None for c in rule.conditions}, **attributes}
        return original(self, rule, key, filled, bucket)

    with (
        mock.patch.object(CompiledFlag, "_matches", absent_as_none),
        pytest.raises(AssertionError),
    ):
        _same_as_powertools_unshrunk()


def test_the_installed_powertools_is_the_pinned_line() -> None:
    """The parity above is with the installed Powertools; the pin keeps it the one we follow."""
    import re
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    (pin,) = (d for d in deps if d.startswith("aws-lambda-powertools"))
    bounds = re.fullmatch(r"aws-lambda-powertools\[[\w,]+\]>=(\d+)\.(\d+),<(\d+)\.(\d+)", pin)
    assert bounds, f"{pin!r} is not one minor line (>=X.Y,<X.Y+1)"
    low, high = (int(bounds[1]), int(bounds[2])), (int(bounds[3]), int(bounds[4]))
    assert high == (low[0], low[1] + 1)
    installed = tuple(int(part) for part in version("aws-lambda-powertools").split(".")[:2])
    assert low <= installed < high
