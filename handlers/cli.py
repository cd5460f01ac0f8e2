"""Registrars for the ``snapmerge.commands`` entry-point group that need the top layer.

``snapmerge rollout`` writes the flag document, whose format belongs to ``flags``; ``rollout``
may not import ``flags``, so the rollout commands are registered here with the adapter from
:mod:`handlers.rollout_flags`. ``dashboard`` and ``report`` need nothing from this layer and are
re-exported only so that every command can be wired from one module.
"""

from __future__ import annotations

from typing import Any

from handlers.rollout_flags import flag_writer_for
from rollout import cli as rollout_cli
from rollout.cli import register_dashboard, register_report

__all__ = ["register_dashboard", "register_report", "register_rollout"]


def register_rollout(subparsers: Any) -> None:
    """``snapmerge rollout ...`` with the flag document adapter wired in."""
    rollout_cli.register_rollout(subparsers, flag_writer_for)
