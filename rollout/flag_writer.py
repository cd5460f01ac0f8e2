"""The controller's view of the flag document: two values, one conditional write.

``rollout`` may not import ``flags`` (siblings), so the controller sees the flag document only
through :class:`FlagWriter`; ``handlers/rollout_flags.py`` adapts ``flags.stores`` and the
document format to it. :func:`set_flags` is idempotent: it writes nothing when the document
already has the target, and re-reads and retries when the document changed under it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from snapmerge.errors import FlagDocumentConflictError, SnapmergeError

ATTEMPTS = 5


class FlagWriteRefusedError(SnapmergeError):
    """The flag store refused the write; nothing was changed (flag document, audit, state)."""


@dataclass(frozen=True)
class RolloutFlagState:
    """What the controller controls in the flag document."""

    percent: float  # share of executions routed to two_phase, 0..100
    kill_switch: bool

    def same_as(self, other: RolloutFlagState) -> bool:
        return math.isclose(self.percent, other.percent) and self.kill_switch == other.kill_switch


class FlagWriter(Protocol):
    def read(self) -> tuple[RolloutFlagState, str]:
        """The current rollout flags and the document's version."""
        ...

    def write(self, state: RolloutFlagState, expected_version: str) -> str:
        """Set both values in one conditional write; return the new version.

        A lost race raises :class:`~snapmerge.errors.FlagDocumentConflictError`; any other
        refusal a :class:`~snapmerge.errors.SnapmergeError` (or ``ValueError``).
        """
        ...


def set_flags(writer: FlagWriter, percent: float, kill_switch: bool | None, label: str) -> bool:
    """Make the document say ``percent`` (and ``kill_switch`` unless None); True if it wrote."""
    for _ in range(ATTEMPTS):
        try:
            current, version = writer.read()
            kill = current.kill_switch if kill_switch is None else kill_switch
            want = RolloutFlagState(percent, kill)
            if current.same_as(want):
                return False
            writer.write(want, version)
            return True
        except FlagDocumentConflictError:
            continue  # the document changed under us: re-read, re-apply
        except (SnapmergeError, ValueError) as exc:
            raise FlagWriteRefusedError(f"the flag store refused {label}: {exc}") from exc
    raise FlagWriteRefusedError(
        f"the flag document kept changing: {label} not applied after {ATTEMPTS} attempts"
    )
