"""The checker: every invariant of DESIGN §3 over one recorded history and the final snapshot.

1. Every delta of every batch reported successful is in the pointer's snapshot with the content
   of its last write — "last" meaning the latest publish along the chain (the expected state is
   the seed, then each published batch's chunks folded in publish order).
2. The pointer names a complete, readable snapshot, and the chain is linear: each publish's base
   is the version published just before it; each version was complete before it was named.
3. No publish by an expired holder: every pointer write was sent by a worker holding a lease the
   table had confirmed live at that moment, and fences rise strictly along the chain (a stale
   holder never publishes after a newer one).
4. Failures are exceptions (a reported success is a result naming a published version of its
   own batch); a batch's intermediates are deleted only after the publish that consumed them.

Plus liveness: every batch eventually succeeded, and no batch published twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from snapmerge import synth
from snapmerge.domain import FinalMergeResult, Record, VersionId
from tests.concurrency.generator import HistoryPlan
from tests.concurrency.history import History


@dataclass(frozen=True)
class FinalState:
    pointer: VersionId | None
    complete: bool
    records: Mapping[str, Record]


@dataclass(frozen=True)
class Violation:
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.detail}"


def check(plan: HistoryPlan, history: History, final: FinalState) -> list[Violation]:
    out: list[Violation] = []
    out += _chain(history, final)
    out += _content(plan, history, final)
    out += _fencing(history)
    out += _failures_and_cleanup(plan, history)
    return out


def _chain(history: History, final: FinalState) -> list[Violation]:
    out = []
    previous = history.seed_version
    for publish in history.publishes:
        manifest = history.manifests.get(publish.version)
        if manifest is None:
            out.append(Violation("2", f"{publish.version} was named with no manifest written"))
            continue
        if history.manifest_seq[publish.version] > publish.seq:
            out.append(Violation("2", f"{publish.version} named before it was complete"))
        if manifest.base_version != previous:
            out.append(
                Violation(
                    "2",
                    f"chain not linear: {publish.version} (batch {manifest.batch_id}) is based on"
                    f" {manifest.base_version}, but {previous} was published before it",
                )
            )
        previous = publish.version
    if final.pointer != previous:
        out.append(Violation("2", f"pointer names {final.pointer}, last publish was {previous}"))
    if not final.complete:
        out.append(Violation("2", f"pointer's version {final.pointer} is not complete/readable"))
    return out


def _batch_order(history: History) -> list[str]:
    """The batches in the order they were applied (a group-commit version applies several)."""
    return [
        batch_id
        for p in history.publishes
        if p.version in history.manifests
        for batch_id in history.manifests[p.version].consumed
    ]


def _content(plan: HistoryPlan, history: History, final: FinalState) -> list[Violation]:
    out = []
    chunks = {b.batch_id: b.chunks for b in plan.batches}
    order = _batch_order(history)
    writes: list[Sequence[Record]] = [plan.seed_rows]
    for batch_id in order:
        writes.extend(chunks.get(batch_id, ()))
    expected = synth.expected_state(writes)
    for batch_id in history.successes():
        if order.count(batch_id) != 1:
            out.append(Violation("1", f"batch {batch_id} published {order.count(batch_id)} times"))
        ids = {r.id for chunk in chunks[batch_id] for r in chunk}
        for record_id in sorted(ids):
            got = final.records.get(record_id)
            if got is None:
                out.append(Violation("1", f"{record_id} of successful {batch_id} is lost"))
            elif got != expected[record_id]:
                out.append(Violation("1", f"{record_id} of {batch_id}: not its last write"))
    missing_seed = [r.id for r in plan.seed_rows if r.id not in final.records]
    if missing_seed:
        out.append(Violation("1", f"seed records lost: {missing_seed[:3]}"))
    return out


def _fencing(history: History) -> list[Violation]:
    out = []
    last_fence = 0
    for publish in history.publishes:
        if publish.fence is None or publish.confirmed_expires is None:
            out.append(
                Violation(
                    "3", f"{publish.version} written by worker {publish.worker} holding no lease"
                )
            )
            continue
        if publish.sent_at >= publish.confirmed_expires:
            out.append(
                Violation(
                    "3",
                    f"{publish.version} sent at {publish.sent_at:%T.%f} by a "
                    f"lease that expired at {publish.confirmed_expires:%T.%f}",
                )
            )
        if publish.fence <= last_fence:
            out.append(
                Violation(
                    "3",
                    f"{publish.version} published with fence {publish.fence}"
                    f" after fence {last_fence} published",
                )
            )
        last_fence = max(last_fence, publish.fence)
    return out


def _failures_and_cleanup(plan: HistoryPlan, history: History) -> list[Violation]:
    out = []
    published = {
        batch_id: p.seq
        for p in history.publishes
        if p.version in history.manifests
        for batch_id in history.manifests[p.version].consumed
    }
    chain = {p.version for p in history.publishes}
    for outcome in history.outcomes:
        if outcome.error is not None:
            continue
        result = outcome.result
        if not isinstance(result, FinalMergeResult) or result.batch_id != outcome.batch_id:
            out.append(Violation("4", f"{outcome.batch_id}: success reported as {result!r}"))
        elif result.version not in chain:
            out.append(
                Violation("4", f"{outcome.batch_id}: result names unpublished {result.version}")
            )
    for seq, batch_id in history.intermediate_deletes:
        if batch_id not in published or published[batch_id] > seq:
            out.append(Violation("4", f"intermediates of {batch_id} deleted before its publish"))
    for batch in plan.batches:
        if batch.batch_id not in history.successes():
            out.append(Violation("liveness", f"batch {batch.batch_id} never succeeded"))
    return out
