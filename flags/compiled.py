"""The compiled form of a flag document: validated once, then evaluated fast, per flag.

Rules are tried in document order and the first whose conditions all hold wins, exactly as
Powertools evaluates them (a context key that is absent never matches; a comparison that raises
does not match). We evaluate ourselves because ``FeatureFlags.evaluate`` does not say which rule
matched, and the reason (STATIC / TARGETING_MATCH / SPLIT / DEFAULT) depends on it. Each outcome
(:class:`Evaluation`) is built once, when the document is compiled. What makes a document valid
is :mod:`flags.document`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from aws_lambda_powertools.utilities.feature_flags.feature_flags import RULE_ACTION_MAPPING
from aws_lambda_powertools.utilities.feature_flags.schema import RuleAction

from flags.bucketing import bucket_of
from flags.document import validate_document
from flags.keys import SALT_FIELD, ContextKey

_SCHEDULE_ACTIONS: Final = frozenset(
    {
        RuleAction.SCHEDULE_BETWEEN_TIME_RANGE.value,
        RuleAction.SCHEDULE_BETWEEN_DATETIME_RANGE.value,
        RuleAction.SCHEDULE_BETWEEN_DAYS_OF_WEEK.value,
    }
)


class TargetingKeyMissing(Exception):
    """A percentage rule was reached for an evaluation without a targeting key (or with an empty
    one: the OpenFeature SDK turns ``""`` into no key when it merges contexts, so the provider
    treats both alike whichever way it is called)."""


@dataclass(frozen=True)
class Evaluation:
    """What one flag evaluated to, and why; built once per outcome when a document is compiled.

    ``metadata`` is the OpenFeature flag metadata of this outcome (``flag_version``, ``rule``),
    read only, so every evaluation can hand out the same object.
    """

    value: Any
    reason: str  # STATIC | TARGETING_MATCH | SPLIT | DEFAULT
    variant: str
    rule: str | None = None
    metadata: Mapping[str, bool | int | float | str] = field(default_factory=dict)


def _outcome(value: Any, reason: str, rule: str | None, version: str) -> Evaluation:
    meta: dict[str, bool | int | float | str] = {"flag_version": version}
    if rule is not None:
        meta["rule"] = rule
    return Evaluation(value, reason, variant_of(value, rule), rule, MappingProxyType(meta))


@dataclass(frozen=True)
class _Condition:
    key: str
    action: str
    value: Any
    test: Callable[[Any, Any], bool]


@dataclass(frozen=True)
class _Rule:
    name: str
    conditions: tuple[_Condition, ...]
    result: Evaluation


def variant_of(value: Any, rule: str | None) -> str:
    """A semantic name for a value: the value itself for scalars, else the rule (or 'default')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return rule or "default"


@dataclass(frozen=True)
class CompiledFlag:
    key: str
    rules: tuple[_Rule, ...]
    salt: str
    fallback: Evaluation  # STATIC when there are no rules, else DEFAULT

    def evaluate(self, targeting_key: str | None, attributes: Mapping[str, Any]) -> Evaluation:
        if not self.rules:
            return self.fallback
        bucket: list[int] = []  # computed at most once, only if a rule asks for it
        for rule in self.rules:
            if self._matches(rule, targeting_key, attributes, bucket):
                return rule.result
        return self.fallback

    def _matches(
        self,
        rule: _Rule,
        targeting_key: str | None,
        attributes: Mapping[str, Any],
        bucket: list[int],
    ) -> bool:
        for cond in rule.conditions:
            if cond.key == ContextKey.BUCKET:
                if not targeting_key:  # None or "": the SDK merges "" away, so "" is missing too
                    raise TargetingKeyMissing(f"flag {self.key!r} rule {rule.name!r} splits by key")
                if not bucket:
                    bucket.append(bucket_of(self.key, self.salt, targeting_key))
                actual: Any = bucket[0]
            elif cond.action in _SCHEDULE_ACTIONS:
                actual = cond.key
            elif cond.key in attributes:
                actual = attributes[cond.key]
            else:
                return False
            try:
                if not cond.test(actual, cond.value):
                    return False
            except Exception:  # Powertools semantics: a comparison that raises does not match
                return False
        return True


def _never(_a: Any, _b: Any) -> bool:
    return False


def _compile_flag(key: str, feature: dict[str, Any], version: str) -> CompiledFlag:
    boolean = bool(feature.get("boolean_type", True))
    rules = []
    for name, rule in (feature.get("rules") or {}).items():
        conds = tuple(
            _Condition(
                c["key"], c["action"], c["value"], RULE_ACTION_MAPPING.get(c["action"], _never)
            )
            for c in rule["conditions"]
        )
        split = any(c.key == ContextKey.BUCKET for c in conds)
        value = bool(rule.get("when_match")) if boolean else rule.get("when_match")
        reason = "SPLIT" if split else "TARGETING_MATCH"
        rules.append(_Rule(name, conds, _outcome(value, reason, name, version)))
    fallback = _outcome(feature["default"], "DEFAULT" if rules else "STATIC", None, version)
    return CompiledFlag(key, tuple(rules), feature.get(SALT_FIELD, ""), fallback)


@dataclass(frozen=True)
class CompiledDocument:
    """A validated document, ready to evaluate; ``version`` is the store's version of it."""

    version: str
    raw: dict[str, Any]
    flags: dict[str, CompiledFlag]


def compile_document(doc: object, version: str) -> CompiledDocument:
    """Validate ``doc`` and compile it; raises :class:`FlagDocumentError`."""
    valid = validate_document(doc)
    flags = {k: _compile_flag(k, f, version) for k, f in valid.items()}
    return CompiledDocument(version, valid, flags)
