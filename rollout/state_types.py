"""The rollout state's value: where the rollout stands (:class:`RolloutState`), the
:class:`Transition` that moves it on, their JSON, and the field digests its anchor signs.

A state is immutable; :meth:`RolloutState.after` computes the state a transition leads to
(pure, so a controller resuming another's transition computes the same). A stored state or
transition with a field of the wrong type, or one this version does not know, is refused
(:func:`check_types`) before anything compares or formats it. Where states are kept and how they
are written is in :mod:`rollout.state`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from enum import StrEnum
from typing import Any

from rollout.signing import Anchor, AuditKey

_PLAIN = (str, int, float, bool, type(None))  # hash as they are (Status is a str)


class Status(StrEnum):
    """Where a rollout stands: running, paused, rolled back or complete."""

    RUNNING = "running"
    PAUSED = "paused"
    ROLLED_BACK = "rolled_back"
    COMPLETE = "complete"


@dataclass(frozen=True)
class Transition:
    """One change the controller makes: recorded in the state before it is applied."""

    id: str
    action: str  # init | advance | promote | hold | rollback | complete | pause | resume
    from_percent: float
    to_percent: float
    from_status: str
    to_status: str
    to_stage: int
    kill_switch: bool | None  # None: leave the kill switch as it is
    reason: str
    at_ms: int
    evidence: Mapping[str, Any] = field(default_factory=dict)
    recheck_ms: int = 0  # holds: when to judge again
    who: str = ""  # the actor that took the transition (named to a controller that lost a race)
    # its flag write failed and the document could not be read back: the next mutating command
    # reconciles it by reading the flag document (records it if there, withdraws it if not)
    outcome_unknown: bool = False

    def describe(self) -> str:
        """One line naming the transition, for an operator who lost a race to it."""
        who = f" by {self.who}" if self.who else ""
        return (
            f"{self.action} {self.from_percent:g}→{self.to_percent:g} % "
            f"({self.from_status}→{self.to_status}){who}, transition {self.id}"
        )

    @property
    def touches_flags(self) -> bool:
        moved = self.action == "complete" and self.to_percent != self.from_percent  # holdback
        return moved or self.action in ("init", "advance", "promote", "rollback")


@dataclass(frozen=True)
class RolloutState:
    """Where the rollout stands: its plan, stage and percentage, status, pending transition,
    last action and the signed anchor over the audit log's head."""

    plan: Mapping[str, Any]
    plan_digest: str
    stage_index: int  # -1 before init applied
    percent: float
    status: Status
    stage_started_ms: int
    previous_stage_started_ms: int | None = None
    next_judge_ms: int = 0  # 0: when the stage's bake time is over
    seq: int = 0
    pending: Transition | None = None
    last_action: Mapping[str, Any] | None = None  # action, reason, at_ms, judged, id, who, ...
    audit_anchor: Mapping[str, Any] | None = None  # signing.Anchor.to_json(): the log's head

    def after(self, t: Transition, anchor: Mapping[str, Any] | None = None) -> RolloutState:
        """The state once ``t`` is applied (pure: a resumed controller computes the same).

        ``anchor`` is the audit log's signed head once ``t``'s entry is in it (kept when None).
        """
        new_stage = t.to_stage != self.stage_index or t.action == "init"
        last = {
            "action": t.action,
            "reason": t.reason,
            "at_ms": t.at_ms,
            "judged": bool(t.evidence),
            "id": t.id,
            "who": t.who,
            "description": t.describe(),
        }
        return replace(
            self,
            stage_index=t.to_stage,
            percent=t.to_percent,
            status=Status(t.to_status),
            stage_started_ms=t.at_ms if new_stage else self.stage_started_ms,
            previous_stage_started_ms=(
                self.stage_started_ms
                if new_stage and self.stage_index >= 0
                else self.previous_stage_started_ms
            ),
            next_judge_ms=t.recheck_ms if t.action == "hold" else 0,
            seq=self.seq + 1,
            pending=None,
            last_action=last,
            audit_anchor=anchor if anchor is not None else self.audit_anchor,
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        return json.loads(json.dumps(out, default=str))  # type: ignore[no-any-return]

    def field_digests(self) -> dict[str, str]:
        """A short digest of every field but the anchor: what :class:`Anchor` signs.

        Each value is hashed as it reads back from its stored JSON (so the state written and the
        state read give one digest); plain values skip the round trip. Kept on the (frozen)
        instance: a state read back from a store is a new instance, so it is always recomputed.
        """
        cached: dict[str, str] | None = self.__dict__.get("_field_digests")
        if cached is not None:
            return dict(cached)
        out = {}
        for name in sorted(self.__dataclass_fields__):
            if name == "audit_anchor":
                continue
            value = getattr(self, name)
            if is_dataclass(value) and not isinstance(value, type):
                value = asdict(value)
            if not isinstance(value, _PLAIN):
                value = json.loads(json.dumps(value, default=str))
            canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
            out[name] = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        self.__dict__["_field_digests"] = dict(
            out
        )  # frozen: bypass __setattr__, as cached_property
        return out

    def sealed(self, key: AuditKey | None, location: str, count: int, head: str) -> RolloutState:
        """This state with its anchor: the log's head (``count`` entries, ``head`` digest), its
        location and its fields, signed with ``key`` (unsigned without one)."""
        anchor = Anchor(count, head, location, self.field_digests()).signed(key)
        return replace(self, audit_anchor=anchor.to_json())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RolloutState:
        """Decode a stored state; a field of the wrong type is refused (``ValueError``) here,
        before anything compares or formats it."""
        check_types(data, _STATE_TYPES, "rollout state", _REQUIRED)
        pending = data.get("pending")
        if pending is not None:
            check_types(pending, _TRANSITION_TYPES, "pending transition", _TRANSITION_REQUIRED)
        return cls(
            **{
                **{k: v for k, v in data.items() if k in cls.__dataclass_fields__},
                "status": Status(data["status"]),
                "pending": Transition(**pending) if pending else None,
            }
        )


_INT = (int,)
_NUM = (int, float)
_MAP = (Mapping,)
_NONE = (type(None),)
_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "plan": _MAP,
    "plan_digest": (str,),
    "stage_index": _INT,
    "percent": _NUM,
    "status": (str,),
    "stage_started_ms": _INT,
    "previous_stage_started_ms": _INT + _NONE,
    "next_judge_ms": _INT,
    "seq": _INT,
    "pending": _MAP + _NONE,
    "last_action": _MAP + _NONE,
    "audit_anchor": _MAP + _NONE,
}
_TRANSITION_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "action": (str,),
    "from_percent": _NUM,
    "to_percent": _NUM,
    "from_status": (str,),
    "to_status": (str,),
    "to_stage": _INT,
    "kill_switch": (bool, type(None)),
    "reason": (str,),
    "at_ms": _INT,
    "evidence": _MAP,
    "recheck_ms": _INT,
    "who": (str,),
    "outcome_unknown": (bool,),
}
_REQUIRED = ("plan", "plan_digest", "stage_index", "percent", "status", "stage_started_ms")
_TRANSITION_REQUIRED = tuple(list(_TRANSITION_TYPES)[:10])  # id .. at_ms: no default


def check_types(
    data: object,
    types: Mapping[str, tuple[type, ...]],
    what: str,
    required: tuple[str, ...] = (),
) -> None:
    """Refuse (``ValueError``) a stored record that is not an object of these fields and types
    (bools are not numbers; floats are finite)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a {what} is a JSON object, not {type(data).__name__}")
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in a {what}")
    for name, allowed in types.items():
        if name not in data:
            if name in required:
                raise ValueError(f"{what}: field {name!r} is missing")
            continue
        value = data[name]
        numeric = allowed in (_INT, _NUM, _INT + _NONE)
        if (numeric and isinstance(value, bool)) or not isinstance(value, allowed):
            raise ValueError(f"{what}: field {name!r} is {type(value).__name__}: {value!r:.40}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{what}: field {name!r} is {value!r}")
