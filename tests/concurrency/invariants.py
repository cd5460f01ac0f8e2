"""The checker: every invariant of DESIGN §3 over one recorded history and the final snapshot.

1. Every batch is applied exactly once, and every record holds its last write: the expected
   state is the seed, then each published batch's chunks folded in the order of its FIRST
   publish (a group-commit version applies several batches, in the order its manifest names).
   A batch published again after later batches would revert their writes, so a second
   publish is a violation, and so is any record (of any batch, or of the seed) whose content in
   the pointer's snapshot differs from that expected state, or that should not be there. Group
   commit: every batch is applied under a number it enqueued, and for an id two enqueued batches
   write, the later-enqueued one is applied last (its write wins).
2. The pointer names a complete, readable snapshot, and the chain is linear: each publish's base
   is the version published just before it; each version was complete before it was named.
3. No publish by an expired holder: every pointer write was sent by a worker holding a lease the
   table had confirmed live at that moment, and fences rise strictly along the chain (a stale
   holder never publishes after a newer one).
4. Failures are exceptions (a reported success is a result naming a published version of its
   own batch); a batch's intermediates (the keys under its own chunk prefixes, whoever deleted
   them) are deleted only after the publish that consumed them.

And the harness's own honesty: every batch eventually succeeded (liveness); the injected fault
fired (``nemesis``); every failed attempt raised a declared error type (``errors``) — a retried
AssertionError, TypeError or KeyError is a bug the retry hid.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from snapmerge import synth
from snapmerge.domain import FinalMergeResult, Keys, Record, VersionId
from tests.concurrency.generator import HistoryPlan
from tests.concurrency.history import History
from tests.concurrency.nemesis import CONTENTION_ERRORS, FAULT_ERRORS, Fault


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
    out += _exactly_once(history)
    out += _enqueue_order(plan, history)
    out += _content(plan, history, final)
    out += _fencing(history)
    out += _results(history)
    out += _cleanup(plan, history)
    out += _liveness(plan, history)
    out += _nemesis(plan, history)
    out += _errors(plan, history)
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


def _exactly_once(history: History) -> list[Violation]:
    order = _batch_order(history)
    return [
        Violation("1", f"batch {batch_id} applied {n} times: {' → '.join(order)}")
        for batch_id, n in sorted(Counter(order).items())
        if n > 1
    ]


def _enqueue_order(plan: HistoryPlan, history: History) -> list[Violation]:
    """Group commit: each batch applied under a number it really enqueued, and for an id two
    enqueued batches write, the later-enqueued one applied after the other (so its write is the
    last, which ``_content`` then checks in the snapshot). Legacy publishes have no number: they
    are ordered by their publish. A two-phase version that names no numbers (one batch, as the
    fallback's locked merge writes it) applied its batch under the last number it enqueued."""
    made = {(e.batch_id, e.number) for e in history.enqueues}
    last = {e.batch_id: e.number for e in sorted(history.enqueues, key=lambda e: e.seq)}
    writes = {b.batch_id: {r.id for c in b.chunks for r in c} for b in plan.batches}
    applied: list[tuple[str, int]] = []
    out = []
    for publish in history.publishes:
        manifest = history.manifests.get(publish.version)
        numbered = manifest.batches if manifest else ()
        if manifest and not numbered and manifest.path == "two_phase" and manifest.batch_id in last:
            numbered = ((manifest.batch_id, "", last[manifest.batch_id]),)
        for batch_id, _, number in numbered:
            if (batch_id, number) not in made:
                out.append(
                    Violation(
                        "1",
                        f"{publish.version} applied {batch_id} as number {number},"
                        " which no worker enqueued for it",
                    )
                )
            applied.append((batch_id, number))
    for i, (first, n_first) in enumerate(applied):
        for later, n_later in applied[i + 1 :]:
            shared = writes.get(first, set()) & writes.get(later, set())
            if later != first and n_later < n_first and shared:
                out.append(
                    Violation(
                        "1",
                        f"{later} (enqueued {n_later}) applied after {first} (enqueued"
                        f" {n_first}), both write {min(shared)}: the later-enqueued must win",
                    )
                )
    return out


def _content(plan: HistoryPlan, history: History, final: FinalState) -> list[Violation]:
    """Every record against the state of seed + each batch once, in first-publish order."""
    chunks = {b.batch_id: b.chunks for b in plan.batches}
    once = list(dict.fromkeys(_batch_order(history)))
    writes: list[tuple[str, Sequence[Record]]] = [("seed", plan.seed_rows)]
    writes += [(b, chunk) for b in once for chunk in chunks.get(b, ())]
    expected = synth.expected_state([rows for _, rows in writes])
    writer = {r.id: name for name, rows in writes for r in rows}
    owner = {r.id: b for b, cs in chunks.items() for c in cs for r in c}
    out = []
    for record_id in sorted(expected.keys() | final.records.keys()):
        want, got = expected.get(record_id), final.records.get(record_id)
        if want == got:
            continue
        if want is None:
            out.append(
                Violation("1", f"{record_id} (of {owner.get(record_id)}) was never published")
            )
        elif got is None:
            out.append(Violation("1", f"{record_id} of {writer[record_id]} is lost"))
        else:
            found = [name for name, rows in writes if got in rows] or ["no write at all"]
            out.append(
                Violation(
                    "1",
                    f"{record_id}: not its last write (expected {writer[record_id]}'s,"
                    f" holds {found[-1]}'s)",
                )
            )
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


def _results(history: History) -> list[Violation]:
    out = []
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
    return out


def _cleanup(plan: HistoryPlan, history: History) -> list[Violation]:
    """A key under a batch's own chunk prefix deleted before that batch's first publish."""
    first_publish: dict[str, int] = {}
    for p in history.publishes:
        if p.version in history.manifests:  # a group-commit version consumes several batches
            for batch_id in history.manifests[p.version].consumed:
                first_publish.setdefault(batch_id, p.seq)
    prefixes = [
        (Keys.intermediate_prefix(b.batch_id, i), b.batch_id)
        for b in plan.batches
        for i in range(len(b.chunks))
    ]
    early: set[str] = set()
    for seq, key in history.deleted_keys:
        for prefix, batch_id in prefixes:
            published = first_publish.get(batch_id)
            if key.startswith(prefix) and (published is None or published > seq):
                early.add(batch_id)
    return [
        Violation("4", f"intermediates of {batch_id} deleted before its publish")
        for batch_id in sorted(early)
    ]


def _liveness(plan: HistoryPlan, history: History) -> list[Violation]:
    succeeded = history.successes()
    return [
        Violation("liveness", f"batch {b.batch_id} never succeeded")
        for b in plan.batches
        if b.batch_id not in succeeded
    ]


def _nemesis(plan: HistoryPlan, history: History) -> list[Violation]:
    if plan.fault is Fault.NONE or history.fault_fired:
        return []
    return [Violation("nemesis", f"fault {plan.fault} never fired: the history tested nothing")]


def _errors(plan: HistoryPlan, history: History) -> list[Violation]:
    out = []
    for o in history.outcomes:
        if o.error is None:
            continue
        allowed = CONTENTION_ERRORS
        if o.worker == plan.victim:
            allowed += FAULT_ERRORS[plan.fault]
        if not isinstance(o.error, allowed):
            out.append(
                Violation(
                    "errors",
                    f"worker {o.worker}, {o.batch_id} attempt {o.attempt}: undeclared"
                    f" {type(o.error).__name__}: {o.error}",
                )
            )
    return out
