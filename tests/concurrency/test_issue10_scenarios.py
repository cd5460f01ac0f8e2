"""Issue 10's failures as scripted histories on the serialised embedded server, both paths.

Each test forces the interleaving (``scenarios.py``), checks that it happened (no scripted wait
timed out, the fault fired), and then holds the history to DESIGN §3 — every batch exactly
once — or, where the right answer is a refusal, to that refusal. Today's core fails them all;
they are marked ``xfail(strict=True)`` until the exactly-once core lands (then an unexpected pass
fails the run, and the marks come off).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from snapmerge import merging, synth
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.domain import MergePath, VersionId, new_version_id
from snapmerge.errors import LeaseLostError, MergeInputError, SnapmergeError, SnapshotError
from snapmerge.snapshots import SnapshotStore
from tests.concurrency import scenarios
from tests.concurrency.choreography import Script, do
from tests.concurrency.generator import PATHS as PATH_CHOICES
from tests.concurrency.generator import HistoryPlan
from tests.concurrency.history import History
from tests.concurrency.invariants import FinalState, check
from tests.concurrency.runner import run_history
from tests.conftest import AwsEnv

NEEDS_CORE = pytest.mark.xfail(strict=True, reason="issue 10: needs the exactly-once core")
PATHS = pytest.mark.parametrize("path", list(PATH_CHOICES), ids=str)


def _run(aws: AwsEnv, tmp: Path, plan: HistoryPlan, script: Script) -> tuple[History, FinalState]:
    history, final = run_history(plan, aws.cloud, MemoryIndex(), tmp, script=script)
    assert script.timed_out == [], "the scripted interleaving did not happen"
    return history, final


def _clean(plan: HistoryPlan, history: History, final: FinalState) -> None:
    violations = check(plan, history, final)
    print(*violations, sep="\n")
    assert violations == []


@PATHS
def test_retry_after_swap_and_six_later_publishes_applies_once(
    aws: AwsEnv, tmp_path: Path, path: MergePath
) -> None:
    plan, script = scenarios.crash_after_swap_then_many_publishes(path)
    history, final = _run(aws, tmp_path, plan, script)
    assert history.fault_fired
    _clean(plan, history, final)


@PATHS
def test_concurrent_duplicates_of_one_batch_apply_once(
    aws: AwsEnv, tmp_path: Path, path: MergePath
) -> None:
    plan, script = scenarios.concurrent_duplicates(path)
    history, final = _run(aws, tmp_path, plan, script)
    _clean(plan, history, final)


@PATHS
@pytest.mark.parametrize("mid_run", [False, True], ids=["before-run", "mid-run"])
def test_a_deleted_pointer_is_an_error_not_a_first_publish(
    aws: AwsEnv, tmp_path: Path, path: MergePath, mid_run: bool
) -> None:
    plan, script = scenarios.pointer_deleted(path, mid_run=mid_run)
    seen: dict[str, object] = {}

    def look(blobs: object) -> None:  # what the bucket holds once "after" has given up
        store = SnapshotStore(blobs, scenarios.DB)  # type: ignore[arg-type]
        seen["complete"] = {v: store.is_complete(v) for v in store.list_versions()}

    script.at(1, "done", do(look))
    history, _ = _run(aws, tmp_path, plan, script)
    before = [p for p in history.publishes if history.manifests[p.version].batch_id == "before"]
    assert len(history.publishes) == len(before) == 1, "a publish after the pointer vanished"
    after = [o for o in history.outcomes if o.batch_id == "after"]
    assert after and all(isinstance(o.error, SnapshotError) for o in after), after
    complete = seen["complete"]
    assert isinstance(complete, dict) and complete.get(before[0].version) is True


@PATHS
def test_a_reused_batch_id_with_new_inputs_is_refused(
    aws: AwsEnv, tmp_path: Path, path: MergePath
) -> None:
    plan, script = scenarios.reused_batch_id(path)
    history, final = _run(aws, tmp_path, plan, script)
    first = [o.error for o in history.outcomes if o.worker == 0]
    # under load its lease may pass its local deadline once: a declared error, retried
    assert first and first[-1] is None, first
    assert all(isinstance(e, LeaseLostError) for e in first[:-1]), first
    # the second set of inputs must never get a success-shaped answer it did not earn
    again = [o for o in history.outcomes if o.worker == 1]
    assert again and all(o.error is not None for o in again), [o.result for o in again]
    assert all(isinstance(o.error, SnapmergeError) for o in again), [o.error for o in again]
    assert len(history.publishes) == 1
    first_rows = {r.id: r for c in plan.workers[0].batches[0].chunks for r in c}
    assert {k: final.records[k] for k in first_rows} == first_rows


@PATHS
def test_an_intermediate_of_another_collection_is_refused(
    aws: AwsEnv, tmp_path: Path, path: MergePath
) -> None:
    plan, script = scenarios.other_collections_intermediate(path)
    history, final = _run(aws, tmp_path, plan, script)
    refused = [o for o in history.outcomes if o.worker == 1]
    assert refused and all(isinstance(o.error, MergeInputError) for o in refused), refused
    assert [history.manifests[p.version].batch_id for p in history.publishes] == ["words-batch"]
    good = plan.workers[0].batches[0]
    assert dict(final.records) == synth.expected_state([plan.seed_rows, *good.chunks])


@PATHS
def test_prefix_sharing_batch_ids_keep_their_intermediates(
    aws: AwsEnv, tmp_path: Path, path: MergePath
) -> None:
    plan, script = scenarios.prefix_sharing_ids(path)
    history, final = _run(aws, tmp_path, plan, script)
    _clean(plan, history, final)


@PATHS
def test_a_version_id_collision_never_overwrites_the_live_version(
    aws: AwsEnv, tmp_path: Path, path: MergePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed: list[VersionId] = []
    lock = threading.Lock()
    collide = new_version_id()

    def colliding() -> VersionId:  # the first two builds get one id: two publishers, one µs
        with lock:
            handed.append(collide if len(handed) < 2 else new_version_id())
            return handed[-1]

    monkeypatch.setattr(merging, "new_version_id", colliding)
    plan, script = scenarios.version_collision(path)
    engine = MemoryIndex()
    held: dict[str, object] = {}

    def read_first(blobs: object) -> None:  # the first publish's version, as a reader gets it
        dest = tmp_path / "read-first"
        try:
            SnapshotStore(blobs, scenarios.DB).download_version(collide, dest)  # type: ignore[arg-type]
            held["records"] = {r.id: r for page in engine.read_records(dest) for r in page}
        except SnapmergeError as exc:
            held["error"] = exc

    script.at(1, "done", do(read_first))
    history, final = run_history(plan, aws.cloud, engine, tmp_path / "h", script=script)
    assert script.timed_out == []
    assert handed[:2] == [collide, collide], "the collision was not reached"
    first = plan.workers[0].batches[0]
    expected = synth.expected_state([plan.seed_rows, *first.chunks])
    assert "error" not in held, f"the first publish's version became unreadable: {held}"
    assert held["records"] == expected, "the first publish's version now holds other content"
    # A refused claim of a taken id may surface as a SnapshotError that the retry (a fresh id)
    # resolves; anything else the checker finds is a violation.
    violations = [
        v
        for v in check(plan, history, final)
        if not (v.invariant == "errors" and "SnapshotError" in v.detail)
    ]
    assert violations == []
