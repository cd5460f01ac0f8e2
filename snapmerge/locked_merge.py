"""What the two-phase path needs of its fallback, the legacy algorithm (ADR 0010).

The core may not import ``legacy``, so whoever builds a
:class:`~snapmerge.two_phase.TwoPhaseFinalMerge` hands in
:func:`legacy.merge_under_lease.merge_under_lease`, which has the shape of :class:`LockedMerge`
and runs over :class:`LockedSteps`: a :class:`~snapmerge.merging.MergeKit` (one batch), or the
group-commit fallback's steps (:class:`snapmerge.group_publish.LockedGroup`: at each base, every
pending batch not published there, in enqueue order, each claimed before the swap).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from snapmerge.built import BuiltVersion
from snapmerge.domain import Database, FinalMergeRequest, MergePath, Pointer
from snapmerge.exactly_once import Replay
from snapmerge.lock import Lease


class LockedSteps(Protocol):
    """The steps the legacy algorithm takes under the lock."""

    def resolve_base(self, db: Database) -> Pointer | None: ...

    def already_published(
        self, request: FinalMergeRequest, inputs: str, base: Pointer | None
    ) -> Replay | None: ...

    def pin_base(self, db: Database, base: Pointer | None) -> AbstractContextManager[None]: ...

    def build(
        self,
        request: FinalMergeRequest,
        base: Pointer | None,
        sources: list[Path],
        path: MergePath,
        dest: Path,
        *,
        digest: bool = True,
        inputs: str = "",
    ) -> BuiltVersion: ...

    def upload(self, db: Database, built: BuiltVersion) -> BuiltVersion: ...

    def publish(self, db: Database, built: BuiltVersion, lease: Lease | None) -> Pointer: ...

    def discard(self, db: Database, built: BuiltVersion) -> None: ...


class LockedMerge(Protocol):
    """The legacy algorithm: read, build, upload and publish while holding ``lease``."""

    def __call__(
        self,
        kit: LockedSteps,
        request: FinalMergeRequest,
        lease: Lease,
        sources: list[Path],
        path: MergePath,
        work: Path,
        *,
        inputs: str,
        max_rebases: int,
        validate: Callable[[BuiltVersion], None] | None = None,
        digest: bool = True,
    ) -> tuple[BuiltVersion | Replay, int]: ...
