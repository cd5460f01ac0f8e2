"""Rollout: the controller that moves executions to the two-phase path stage by stage, the judge
that decides each stage, and the metrics both paths emit.

The public API is ``__all__`` below (kept by ``tests/unit/test_public_api.py``); import it from
``rollout``, not from the modules that define it:

* the controller — :class:`RolloutController` with its :class:`Timing` and :class:`TickResult`,
  the flag document it drives (:class:`FlagWriter`, :class:`RolloutFlagState`) and its errors;
* its plan — :class:`RolloutPlan` of :class:`Stage` s, from :func:`load_plan` / :func:`parse_plan`;
* its record — :class:`RolloutState` (a :class:`Status`, a pending :class:`Transition`) in a
  :class:`StateStore`, and the :class:`AuditLog` of :class:`AuditEntry` s, signed with an
  :class:`AuditKey`;
* the judge — the module :mod:`rollout.judge`, whose :func:`rollout.judge.judge` gives a
  :class:`Verdict` (its ``decision`` a ``Decision``: promote, hold or rollback) over
  :class:`Guardrail` s; ``DEFAULT_GUARDRAILS`` are the packaged ones. ``rollout.judge`` names the
  module, not the function: Python binds a package's attribute to its submodule whenever the
  submodule is imported, so a function of that name would not stay put;
* the metrics — :class:`MergeMetrics` emits :class:`MetricName` s in :class:`Unit` s under two
  :class:`Dimension` s to the namespace :func:`default_namespace` names; a
  :class:`MetricSource` (:class:`EmfFileSource`, :class:`CloudWatchLogsSource`) reads them back
  as :class:`MetricRecord` s.

Names are loaded on first use, so the Lambda, which imports :mod:`rollout.router` and
:mod:`rollout.metrics`, does not load the judge's statistics (the ``[rollout]`` extra) with them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rollout.audit import AuditLog, JsonlAuditLog, MemoryAuditLog, S3AuditLog
    from rollout.audit_entry import AuditEntry, AuditIntegrityError
    from rollout.controller import RolloutController
    from rollout.flag_writer import (
        FlagWriter,
        FlagWriteRefusedError,
        FlagWriteUnknownError,
        RolloutFlagState,
    )
    from rollout.guardrails import DEFAULT_GUARDRAILS, Guardrail
    from rollout.judge import Decision, Verdict
    from rollout.loop import (
        NotInitialisedError,
        RolloutConflictError,
        StateOutOfPlanError,
        TickResult,
        Timing,
    )
    from rollout.metric_names import Dimension, MetricName, Unit, default_namespace
    from rollout.metrics import MergeMetrics
    from rollout.plan import RolloutPlan, Stage, load_plan, parse_plan
    from rollout.plan_fields import PlanError
    from rollout.signing import AuditKey
    from rollout.sources import CloudWatchLogsSource, EmfFileSource, MetricRecord, MetricSource
    from rollout.state import BlobStateStore, FileStateStore, StateConflictError, StateStore
    from rollout.state_types import RolloutState, Status, Transition

# where each public name is defined
_HOMES: dict[str, str] = {
    **dict.fromkeys(("AuditLog", "JsonlAuditLog", "MemoryAuditLog", "S3AuditLog"), "audit"),
    **dict.fromkeys(("AuditEntry", "AuditIntegrityError"), "audit_entry"),
    "RolloutController": "controller",
    **dict.fromkeys(
        ("FlagWriter", "FlagWriteRefusedError", "FlagWriteUnknownError", "RolloutFlagState"),
        "flag_writer",
    ),
    **dict.fromkeys(("DEFAULT_GUARDRAILS", "Guardrail"), "guardrails"),
    **dict.fromkeys(("Decision", "Verdict"), "judge"),
    **dict.fromkeys(
        (
            "NotInitialisedError",
            "RolloutConflictError",
            "StateOutOfPlanError",
            "TickResult",
            "Timing",
        ),
        "loop",
    ),
    **dict.fromkeys(("Dimension", "MetricName", "Unit", "default_namespace"), "metric_names"),
    "MergeMetrics": "metrics",
    **dict.fromkeys(("RolloutPlan", "Stage", "load_plan", "parse_plan"), "plan"),
    "PlanError": "plan_fields",
    "AuditKey": "signing",
    **dict.fromkeys(
        ("CloudWatchLogsSource", "EmfFileSource", "MetricRecord", "MetricSource"), "sources"
    ),
    **dict.fromkeys(
        ("BlobStateStore", "FileStateStore", "StateConflictError", "StateStore"), "state"
    ),
    **dict.fromkeys(("RolloutState", "Status", "Transition"), "state_types"),
}

__all__ = [
    "DEFAULT_GUARDRAILS",
    "AuditEntry",
    "AuditIntegrityError",
    "AuditKey",
    "AuditLog",
    "BlobStateStore",
    "CloudWatchLogsSource",
    "Decision",
    "Dimension",
    "EmfFileSource",
    "FileStateStore",
    "FlagWriteRefusedError",
    "FlagWriteUnknownError",
    "FlagWriter",
    "Guardrail",
    "JsonlAuditLog",
    "MemoryAuditLog",
    "MergeMetrics",
    "MetricName",
    "MetricRecord",
    "MetricSource",
    "NotInitialisedError",
    "PlanError",
    "RolloutConflictError",
    "RolloutController",
    "RolloutFlagState",
    "RolloutPlan",
    "RolloutState",
    "S3AuditLog",
    "Stage",
    "StateConflictError",
    "StateOutOfPlanError",
    "StateStore",
    "Status",
    "TickResult",
    "Timing",
    "Transition",
    "Unit",
    "Verdict",
    "default_namespace",
    "judge",
    "load_plan",
    "parse_plan",
]


def __getattr__(name: str) -> Any:
    if name == "judge":  # the module (see the docstring)
        return importlib.import_module("rollout.judge")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'rollout' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rollout.{home}"), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
