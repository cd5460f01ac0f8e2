"""The legacy algorithm itself: read, build, upload and publish while holding the collection lock.

    lease held ─► read pointer ─► already published here? (replay) ─► pin and download base
    ─► merge the chunks ─► (validate) ─► upload ─► fenced CAS ─┬─► published
                                                               └─ refused: discard, rebase

The legacy path runs it for every final merge (:mod:`legacy.final_merge`); the two-phase path
runs it as its fallback after ``max_rebases`` lost CASes (it is handed in as
:class:`snapmerge.locked_merge.LockedMerge`), so both paths share one locked merge.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from snapmerge.built import BuiltVersion
from snapmerge.domain import FinalMergeRequest, Keys, MergePath
from snapmerge.errors import PointerConflictError
from snapmerge.exactly_once import Replay
from snapmerge.lock import Lease
from snapmerge.locked_merge import LockedSteps


def merge_under_lease(
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
) -> tuple[BuiltVersion | Replay, int]:
    """Read, build, upload and publish while holding ``lease``; return (outcome, CAS losses).

    ``kit`` supplies the steps: a :class:`~snapmerge.merging.MergeKit` merges ``request`` alone;
    the group-commit fallback's steps merge every pending batch unpublished at each base read.

    Every writer takes the same collection lock, so the CAS under it loses only to a writer
    outside the lock (a per-batch lock id, a holder racing its expiry). Never skip: each loss
    discards the orphan and rebases onto the new pointer, ``max_rebases`` times at most. At
    each base, a publish of this very batch already there is replayed instead.
    """
    db = request.database
    failures = 0
    for attempt in range(max_rebases + 1):
        lease.check()
        base = kit.resolve_base(db)
        prior = kit.already_published(request, inputs, base)
        if prior is not None:
            return prior, failures
        with kit.pin_base(db, base):
            built = kit.build(
                request,
                base,
                sources,
                path,
                work / f"locked-{attempt}",
                digest=digest,
                inputs=inputs,
            )
            if validate is not None:
                validate(built)
            lease.check()
            built = kit.upload(db, built)
            try:
                kit.publish(db, built, lease)
            except PointerConflictError:
                kit.discard(db, built)
                failures += 1
                continue
            except BaseException:
                kit.discard(db, built)
                raise
        return built, failures
    raise PointerConflictError(
        Keys.pointer(db), expected=None, current=f"moved on each of {failures} locked tries"
    )
