"""``snapmerge rollout | dashboard | report``: registrars for the core CLI's entry-point group.

``register_rollout`` needs a factory for the flag writer, because the flag document format lives
in ``flags`` and ``rollout`` may not import it: ``handlers.cli.register_rollout`` passes
:func:`handlers.rollout_flags.flag_writer_for`. ``register_dashboard`` and ``register_report``
need nothing from above and are wired directly.

Local defaults live under ``.snapmerge/`` in the working directory; each has an environment
variable, and the state and audit log may be on S3 instead (``s3://bucket/key`` for the state,
``s3://bucket/prefix/`` for the audit log) or in DynamoDB (``dynamodb://table/name`` for both):

====================  ==============================  ====================================
option                env                             default
====================  ==============================  ====================================
``--state``           ``SNAPMERGE_ROLLOUT_STATE``     ``.snapmerge/rollout-state.json``
``--audit``           ``SNAPMERGE_AUDIT``             ``.snapmerge/audit.jsonl``
``--emf``             ``SNAPMERGE_EMF_FILE``          ``.snapmerge/emf.jsonl``
``--log-group``       ``SNAPMERGE_LOG_GROUP``         (read EMF from the file)
====================  ==============================  ====================================

The audit key (``SNAPMERGE_AUDIT_KEY`` or ``SNAPMERGE_AUDIT_KEY_SSM``, :mod:`rollout.signing`)
signs every entry and the head kept in the state; ``rollout verify`` needs it. The locations are
opened by :mod:`rollout.locations`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rollout import dashboard
from rollout.audit import AuditLog
from rollout.audit_entry import AuditMissingError
from rollout.controller import FlagWriter, RolloutController, TickResult, Timing
from rollout.locations import HOME, env_or, open_audit, open_source, open_state, source_options
from rollout.metric_names import default_namespace
from rollout.plan import FlagStoreSpec, RolloutPlan, load_plan, parse_plan
from rollout.signing import AuditKey, key_from_env
from rollout.state import StateStore, location_of
from rollout.state_types import RolloutState
from rollout.verify import verify_record
from snapmerge.errors import InvalidEventError

FlagWriterFactory = Callable[[FlagStoreSpec], FlagWriter]
Subparsers = Any  # argparse's _SubParsersAction is private


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# -- rollout ----------------------------------------------------------------------------------
def _describe(state: RolloutState, flags: str) -> str:
    plan = parse_plan(state.plan)
    stages = " → ".join(
        f"[{s.percent:g}]" if i == state.stage_index else f"{s.percent:g}"
        for i, s in enumerate(plan.stages)
    )
    lines = [
        f"plan      {plan.name} ({state.plan_digest[:12]})",
        f"status    {state.status}",
        f"percent   {state.percent:g} % two_phase   stages: {stages}",
        f"flags     {flags}",
    ]
    if state.last_action:
        lines.append(
            f"last      {state.last_action.get('action')}: {state.last_action.get('reason')}"
        )
    if state.pending:
        settle = (
            "flag write outcome unknown: the next command that changes the rollout records it "
            "if the flag document shows it, else withdraws it"
            if state.pending.outcome_unknown
            else "the next command that changes the rollout finishes it"
        )
        lines.append(f"pending   {state.pending.action} ({state.pending.id}): {settle}")
    return "\n".join(lines)


def _run_rollout(args: argparse.Namespace, factory: FlagWriterFactory) -> int:
    states = open_state(args.state)
    key = key_from_env()
    if args.action == "history":
        return _history(open_audit(args.audit, key), states, key, args)
    if args.action == "verify":
        audit = open_audit(args.audit, key)
        report = verify_record(audit, states.read()[0], key, location_of(states))
        print(report.describe())
        return 0
    current, _ = states.read()  # what this command acts on: a later change by another is a race
    if args.action == "init":
        plan: RolloutPlan | None = load_plan(args.plan)
    else:
        plan = parse_plan(current.plan) if current else None
    if plan is None:
        raise InvalidEventError("no rollout state: run `snapmerge rollout init --plan P` first")
    timing = Timing(
        speed=getattr(args, "speed", 1.0),
        bake_seconds=getattr(args, "bake_seconds", None),
        poll_seconds=getattr(args, "poll_seconds", 30.0),
    )
    ctl = RolloutController(
        states,
        factory(plan.flag_store),
        open_audit(args.audit, key),
        open_source(args, must_exist=True),
        timing=timing,
        key=key,
        based_on=current.seq if current is not None else None,
    )
    return _ACTIONS[args.action](ctl, args, plan)


def _show(ctl: RolloutController, args: argparse.Namespace, state: RolloutState) -> int:
    if getattr(args, "json", False):
        _print(state.to_json())
        return 0
    try:
        flags, version = ctl.flags.read()
        text = f"{flags.percent:g} % two_phase, kill switch {'ON' if flags.kill_switch else 'off'}"
        text += f" (document {version[:12]})"
    except Exception as exc:  # status must work when the flag store does not
        text = f"unreadable: {exc}"
    print(_describe(state, text))
    return 0


def _history(
    audit: AuditLog, states: StateStore, key: AuditKey | None, args: argparse.Namespace
) -> int:
    """The log, oldest first; verified against the key and the state's anchor when there is a
    key (a record that fails is not printed), else checked as a chain only, with a warning."""
    if not audit.exists():
        raise AuditMissingError(
            f"no audit log at {audit!r} (no rollout was started with it, or it was deleted: "
            "run `snapmerge rollout verify`)"
        )
    if key is not None:
        verify_record(audit, states.read()[0], key, location_of(states))
    else:
        print(
            "warning: no audit key (SNAPMERGE_AUDIT_KEY): entries checked as a hash chain only",
            file=sys.stderr,
        )
    entries = audit.history()
    if args.json:
        _print([e.to_json() for e in entries])
        return 0
    for e in entries:
        print(
            f"{e.seq:>4} {e.at} {e.who:<24} {e.action:<9} {e.from_percent:g}→{e.to_percent:g} % "
            f"{e.from_status}→{e.to_status}  {e.reason}"
        )
    return 0


def _progress(result: TickResult) -> None:
    """One line per action of ``rollout run`` (baking is silent)."""
    if result.action == "baking":
        return
    state = result.state
    reasons = "; ".join(result.verdict.reasons) if result.verdict else ""
    print(f"{result.action:<9} {state.percent:g} % {state.status}  {reasons}", flush=True)


def _judge(ctl: RolloutController, args: argparse.Namespace) -> int:
    verdict = ctl.judge()
    if args.json:
        _print(verdict.to_json())
    else:
        print(f"verdict: {verdict.decision}")
        for reason in verdict.reasons:
            print(f"  - {reason}")
    return 0


_ACTIONS: dict[str, Callable[[RolloutController, argparse.Namespace, RolloutPlan], int]] = {
    "init": lambda c, a, p: _show(
        c, a, c.init(p, force=a.force, clear_kill_switch=a.clear_kill_switch)
    ),
    "status": lambda c, a, p: _show(c, a, c.status()),  # reads only: never settles `pending`
    "advance": lambda c, a, p: _show(c, a, c.advance(a.to, reason=a.reason)),
    "rollback": lambda c, a, p: _show(c, a, c.rollback(a.reason)),
    "pause": lambda c, a, p: _show(c, a, c.pause(a.reason)),
    "resume": lambda c, a, p: _show(c, a, c.resume(a.reason)),
    "judge": lambda c, a, p: _judge(c, a),
    "run": lambda c, a, p: _show(c, a, c.run(a.max_ticks, _progress)),
}


def register_rollout(subparsers: Subparsers, flag_writer_factory: FlagWriterFactory) -> None:
    parser = subparsers.add_parser("rollout", help="drive the staged rollout of two_phase")
    parser.add_argument(
        "--state", default=env_or("SNAPMERGE_ROLLOUT_STATE", HOME / "rollout-state.json")
    )
    parser.add_argument("--audit", default=env_or("SNAPMERGE_AUDIT", HOME / "audit.jsonl"))
    source_options(parser)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = sub.add_parser("init", help="validate a plan and start its first stage")
    init.add_argument("--plan", type=Path, default=None, help="YAML/JSON plan (default: packaged)")
    init.add_argument("--force", action="store_true", help="replace a live rollout")
    init.add_argument("--clear-kill-switch", action="store_true")
    sub.add_parser("status", help="where the rollout is").add_argument(
        "--json", action="store_true"
    )
    adv = sub.add_parser("advance", help="go to the next (or --to) stage now")
    adv.add_argument("--to", type=float, default=None, metavar="PCT")
    adv.add_argument("--reason", default="manual advance")
    for name, default in (
        ("rollback", "manual rollback"),
        ("pause", "manual pause"),
        ("resume", "manual resume"),
    ):
        sub.add_parser(name, help=f"{name} the rollout").add_argument("--reason", default=default)
    sub.add_parser("judge", help="the verdict on the current stage").add_argument(
        "--json", action="store_true"
    )
    run = sub.add_parser("run", help="the automatic loop: bake, judge, act, repeat")
    run.add_argument("--bake-seconds", type=float, default=None, help="override every stage's bake")
    run.add_argument("--speed", type=float, default=1.0, help="divide every wait by this")
    run.add_argument("--poll-seconds", type=float, default=30.0)
    run.add_argument("--max-ticks", type=int, default=None)
    sub.add_parser("history", help="the audit log").add_argument("--json", action="store_true")
    sub.add_parser(
        "verify", help="check the audit log's chain and signatures and the state's anchor and plan"
    )
    parser.set_defaults(func=lambda args: _run_rollout(args, flag_writer_factory))


# -- dashboard --------------------------------------------------------------------------------
def _dashboard(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    collections = [c for c in args.collections.split(",") if c]
    body = dashboard.render(args.namespace, collections, args.region, plan)
    alarms = dashboard.alarms(plan, namespace=args.namespace, collections=collections)
    if args.dash_action == "render":
        text = json.dumps({"dashboard": body, "alarms": alarms}, indent=2)
        if args.out:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
            print(f"wrote {args.out}: {len(body['widgets'])} widgets, {len(alarms)} alarms")
        else:
            print(text)
        return 0
    _print(dashboard.deploy(body, alarms, args.name))
    return 0


def register_dashboard(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("dashboard", help="the A/B CloudWatch dashboard and alarms")
    sub = parser.add_subparsers(dest="dash_action", metavar="ACTION", required=True)
    for name in ("render", "deploy"):
        p = sub.add_parser(name, help=f"{name} the dashboard body and the guardrail alarms")
        p.add_argument("--plan", type=Path, default=None, help="plan (default: packaged)")
        p.add_argument("--namespace", default=default_namespace())
        p.add_argument("--collections", default="words,lines")
        p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
        p.add_argument("--name", default="snapmerge-final-merge")
        if name == "render":
            p.add_argument("--out", default=None, help="file (default: stdout)")
    parser.set_defaults(func=_dashboard)


# -- report -----------------------------------------------------------------------------------
def _report(args: argparse.Namespace) -> int:
    from rollout.report import build_report  # matplotlib: the [report] extra, only here

    out = build_report(open_source(args), open_audit(args.audit), Path(args.out))
    print(f"wrote {out}")
    return 0


def register_report(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("report", help="one self-contained HTML report")
    source_options(parser)
    parser.add_argument("--audit", default=env_or("SNAPMERGE_AUDIT", HOME / "audit.jsonl"))
    parser.add_argument("--out", default=str(HOME / "report.html"))
    parser.set_defaults(func=_report)


def main(argv: list[str] | None = None, factory: FlagWriterFactory | None = None) -> int:
    """Run these commands without the core CLI (tests); ``factory`` enables ``rollout``."""
    parser = argparse.ArgumentParser(prog="snapmerge")
    sub = parser.add_subparsers(dest="command", required=True)
    if factory is not None:
        register_rollout(sub, factory)
    register_dashboard(sub)
    register_report(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    sys.stdout.flush()
    return result
