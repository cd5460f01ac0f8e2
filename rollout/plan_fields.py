"""Reading one field of a decoded rollout plan: each reader returns the value or raises
:class:`PlanError` naming the field (``stages[2].percent``) and what is wrong with it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from snapmerge.errors import InvalidEventError


class PlanError(InvalidEventError):
    """A plan that must not run; the message names the field and the problem."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"invalid rollout plan: {where}: {problem}")


def number(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlanError(where, f"{value!r} is not a number")
    if not math.isfinite(value):
        raise PlanError(where, f"{value!r} is not finite")
    return float(value)


def positive(where: str, value: object) -> float:
    found = number(where, value)
    if found <= 0:
        raise PlanError(where, f"{found:g} must be > 0")
    return found


def count(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(where, f"{value!r} must be an integer >= 1")
    return value


def mapping(where: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PlanError(where, f"expected a mapping, got {type(value).__name__}")
    return value


def no_extra(where: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise PlanError(where, f"unknown field(s) {extra}; expected some of {sorted(allowed)}")
