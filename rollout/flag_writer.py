"""The controller's view of the flag document: two values, one conditional write.

``rollout`` may not import ``flags`` (siblings), so the controller sees the flag document only
through :class:`FlagWriter`; ``handlers/rollout_flags.py`` adapts ``flags.stores`` and the
document format to it. :func:`set_flags` is idempotent: it writes nothing when the document
already has the target, and re-reads and retries when the document changed under it.

A write that fails for any other reason is *ambiguous*: a timeout or a lost reply may come after
the store applied it. So the document is read back before anything is concluded:

* it says the target → the write landed: done (the controller finishes the transition);
* it is still the version we wrote against → nothing landed: :class:`FlagWriteRefusedError`
  (the controller withdraws its intent);
* it changed to something else → another writer moved it: re-read and re-apply, as for a
  lost race;
* it cannot be read → nobody knows: :class:`FlagWriteUnknownError`, and the controller leaves its
  intent pending for the next command to settle the same way.

Only the project's errors count as a store failure (:data:`STORE_FAILURES`): the stores' adapters
translate every AWS error (a timeout included) into them, so anything else is a bug and propagates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from snapmerge.errors import FlagDocumentConflictError, SnapmergeError

ATTEMPTS = 5
# what a FlagWriter raises when its store fails or refuses (see FlagWriter.write)
STORE_FAILURES = (SnapmergeError, ValueError)


class FlagWriteRefusedError(SnapmergeError):
    """The flag store refused the write; nothing was changed (flag document, audit, state)."""


class FlagWriteUnknownError(SnapmergeError):
    """A flag write failed and the document could not be read back: it may or may not have
    landed. The controller's intent stays pending; the next command settles it."""


@dataclass(frozen=True)
class RolloutFlagState:
    """What the controller controls in the flag document."""

    percent: float  # share of executions routed to two_phase, 0..100
    kill_switch: bool

    def same_as(self, other: RolloutFlagState) -> bool:
        return math.isclose(self.percent, other.percent) and self.kill_switch == other.kill_switch


class FlagWriter(Protocol):
    """The flag document as the controller sees it: the rollout percentage and the kill switch,
    read and written together (``handlers/rollout_flags.py`` adapts the document format)."""

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
        except STORE_FAILURES as exc:
            raise FlagWriteUnknownError(
                f"the flag document cannot be read for {label}: {exc}"
            ) from exc
        kill = current.kill_switch if kill_switch is None else kill_switch
        want = RolloutFlagState(percent, kill)
        if current.same_as(want):
            return False
        try:
            writer.write(want, version)
            return True
        except FlagDocumentConflictError:
            continue  # the document changed under us: re-read, re-apply
        except STORE_FAILURES as exc:  # refused, timed out, reply lost: read back to know which
            if _settled(writer, want, version, label, exc):
                return True
    raise FlagWriteRefusedError(
        f"the flag document kept changing: {label} not applied after {ATTEMPTS} attempts"
    )


def _settled(
    writer: FlagWriter, want: RolloutFlagState, version: str, label: str, exc: Exception
) -> bool:
    """After a failed write: True if it landed, False if another writer moved the document;
    raise FlagWriteRefusedError if nothing landed, FlagWriteUnknownError if we cannot tell."""
    try:
        after, after_version = writer.read()
    except STORE_FAILURES as read_exc:
        raise FlagWriteUnknownError(
            f"{label}: the write failed ({exc}) and the document cannot be read back "
            f"({read_exc}); the change may or may not be in effect"
        ) from exc
    if after.same_as(want):
        return True
    if after_version == version:
        raise FlagWriteRefusedError(f"the flag store refused {label}: {exc}") from exc
    return False
