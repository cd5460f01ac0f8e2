"""Flag documents: Powertools' schema, our stricter checks, and how a document is stored.

A document is a Powertools FeatureFlags configuration (one object per flag: ``default``, optional
``boolean_type: false`` for non-boolean values, optional ordered ``rules`` of ``when_match`` +
``conditions``). It is valid when Powertools' :class:`SchemaValidator` accepts it *and*:

* every value of a known flag (``default`` and each ``when_match``) has that flag's type —
  ``final-merge-path`` one of the :class:`~snapmerge.domain.MergePath` values, the sizes integers
  ≥ 1, the switches booleans — so an unknown variant is refused at load, never at merge time;
* a condition on the reserved ``bucket`` key is ``KEY_LESS_THAN_VALUE`` with an integer
  0..10000 (the only form whose meaning is "the first P % of buckets", which keeps rollouts
  monotonic; see :mod:`flags.bucketing`);
* an optional ``salt`` next to ``default`` is a string;
* an optional ``switchback`` next to ``default`` is ``{"window_seconds": <int 1..86400>,
  "by_collection": <bool, default true>}`` and nothing else (see :mod:`flags.bucketing`); of
  the flags snapmerge reads only ``final-merge-path`` may carry one (never the kill switch).

The compiled form that evaluates a valid document is :mod:`flags.compiled`; the stored form
(:func:`encode_document`, :func:`decode_document`, :func:`content_version`) and the rule a rollout
writes (:func:`rollout_rule`) are here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from aws_lambda_powertools.utilities.feature_flags.exceptions import SchemaValidationError
from aws_lambda_powertools.utilities.feature_flags.schema import RuleAction, SchemaValidator

from flags.bucketing import BUCKETS, threshold_for
from flags.keys import (
    MAX_SWITCHBACK_WINDOW_SECONDS,
    SALT_FIELD,
    SWITCHBACK_BY_COLLECTION,
    SWITCHBACK_FIELD,
    SWITCHBACK_WINDOW,
    ContextKey,
    FlagKey,
)
from snapmerge.domain import MergePath
from snapmerge.errors import InvalidEventError

_BUCKET_ACTION: Final = RuleAction.KEY_LESS_THAN_VALUE.value


class FlagDocumentError(InvalidEventError):
    """A flag document that must not be served (malformed, wrong type, unknown variant).

    ``version`` is the store's version of the refused document when known, so a document that
    stays bad is counted once, not on every re-read.
    """

    def __init__(self, message: str, version: str | None = None):
        super().__init__(message)
        self.version = version


def is_int(value: object) -> bool:
    """An int that is not a bool (JSON's true/false are Python ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_known_value(flag: FlagKey, value: object) -> str | None:
    """Why ``value`` is not a legal value of ``flag`` (None when it is)."""
    if flag is FlagKey.FINAL_MERGE_PATH:
        if value not in {p.value for p in MergePath}:
            return f"unknown variant {value!r} (expected one of {[p.value for p in MergePath]})"
    elif flag in (FlagKey.KILL_SWITCH, FlagKey.SINGLE_CHUNK_FAST_PATH):
        if not isinstance(value, bool):
            return f"{value!r} is not a boolean"
    elif not is_int(value) or int(value) < 1:  # type: ignore[call-overload]
        return f"{value!r} is not an integer >= 1"
    return None


def _switchback_refused(name: str) -> str | None:
    """Why flag ``name`` may not carry a ``switchback`` at all (None when it may).

    Of the flags snapmerge reads only ``final-merge-path`` may: its decision is the one that
    records its unit (``PathDecision.unit``), so the judge can compare unit with unit. The kill
    switch must act alike on every execution whatever the window; the sizing and fast-path flags
    would be randomized per window with no record of which unit an execution was in (and
    ``group-size`` and ``single-chunk-fast-path`` are read without a collection, so a rule split
    by collection could never be decided). Flags snapmerge does not read are served as they are.
    """
    if name == FlagKey.KILL_SWITCH:
        return "a kill switch must act on every execution alike, never be randomized per window"
    if name in FlagKey.__members__.values() and name != FlagKey.FINAL_MERGE_PATH:
        return (
            f"only {FlagKey.FINAL_MERGE_PATH.value!r} records the unit it was decided in, so a "
            "split of this flag by window could not be judged"
        )
    return None


def _check_switchback(name: str, switchback: object) -> None:
    where = f"flag {name!r}: {SWITCHBACK_FIELD}"
    refused = _switchback_refused(name)
    if refused is not None:
        raise FlagDocumentError(f"{where} is not allowed on this flag: {refused}")
    if not isinstance(switchback, dict):
        raise FlagDocumentError(f"{where} must be an object, got {switchback!r}")
    unknown = sorted(set(switchback) - {SWITCHBACK_WINDOW, SWITCHBACK_BY_COLLECTION})
    if unknown:
        raise FlagDocumentError(f"{where} has unknown fields {unknown}")
    window = switchback.get(SWITCHBACK_WINDOW)
    in_range = isinstance(window, int) and 1 <= window <= MAX_SWITCHBACK_WINDOW_SECONDS
    if isinstance(window, bool) or not in_range:
        raise FlagDocumentError(
            f"{where}.{SWITCHBACK_WINDOW} must be an integer "
            f"1..{MAX_SWITCHBACK_WINDOW_SECONDS}, got {window!r}"
        )
    by_collection = switchback.get(SWITCHBACK_BY_COLLECTION, True)
    if not isinstance(by_collection, bool):
        raise FlagDocumentError(
            f"{where}.{SWITCHBACK_BY_COLLECTION} must be a boolean, got {by_collection!r}"
        )


def _check_feature(name: str, feature: dict[str, Any]) -> None:
    salt = feature.get(SALT_FIELD, "")
    if not isinstance(salt, str):
        raise FlagDocumentError(f"flag {name!r}: salt must be a string, got {salt!r}")
    if SWITCHBACK_FIELD in feature:
        _check_switchback(name, feature[SWITCHBACK_FIELD])
    rules = feature.get("rules") or {}
    values = [("default", feature.get("default"))]
    for rule_name, rule in rules.items():
        values.append((f"rule {rule_name!r}", rule.get("when_match")))
        for cond in rule.get("conditions", []):
            if cond.get("key") != ContextKey.BUCKET.value:
                continue
            bound = cond.get("value")
            if (
                cond.get("action") != _BUCKET_ACTION
                or not is_int(bound)
                or not 0 <= bound <= BUCKETS
            ):
                raise FlagDocumentError(
                    f"flag {name!r} rule {rule_name!r}: a 'bucket' condition must be "
                    f"{_BUCKET_ACTION} with an integer 0..{BUCKETS}, got {cond!r}"
                )
    if name in FlagKey.__members__.values():
        for where, value in values:
            problem = _check_known_value(FlagKey(name), value)
            if problem:
                raise FlagDocumentError(f"flag {name!r} {where}: {problem}")


def validate_document(doc: object) -> dict[str, Any]:
    """Return ``doc`` if it may be served, else raise :class:`FlagDocumentError` saying why."""
    if not isinstance(doc, dict):
        raise FlagDocumentError(f"a flag document is a JSON object, got {type(doc).__name__}")
    try:
        SchemaValidator(doc).validate()
    except SchemaValidationError as exc:
        raise FlagDocumentError(f"not a Powertools feature-flag document: {exc}") from None
    except Exception as exc:  # the validator indexes into whatever it is given
        raise FlagDocumentError(f"not a Powertools feature-flag document: {exc!r}") from None
    for name, feature in doc.items():
        _check_feature(name, feature)
    return doc


def encode_document(doc: Mapping[str, Any], *, compact: bool = False) -> bytes:
    """The stored bytes of a document. Keys keep their order: rule order is significant."""
    if compact:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def decode_document(body: bytes | str, version: str | None = None) -> dict[str, Any]:
    """Parse stored bytes; anything but a JSON object is a :class:`FlagDocumentError`."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FlagDocumentError(f"flag document is not JSON: {exc}", version) from None
    if not isinstance(doc, dict):
        raise FlagDocumentError(f"flag document is a {type(doc).__name__}, not an object", version)
    return doc


def content_version(doc: Mapping[str, Any]) -> str:
    """A version for stores that have none of their own: sha256 of the compact JSON.

    Keys are not sorted: reordering rules changes what a document means, so it changes the version.
    """
    canonical = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def flags_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """Keys whose definition differs between two documents (added, removed or edited)."""
    old = old or {}
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def rollout_rule(percent: float | str, value: Any) -> dict[str, Any]:
    """A rule serving ``value`` to the first ``percent`` % of buckets (:mod:`flags.bucketing`)."""
    return {
        "when_match": value,
        "conditions": [
            {
                "action": _BUCKET_ACTION,
                "key": ContextKey.BUCKET.value,
                "value": threshold_for(percent),
            }
        ],
    }
