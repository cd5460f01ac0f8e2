"""``snapmerge gc`` after a dead run, on the embedded server with real ChromaDB, on both paths.

The run dies after its upload and claim, before its CAS (a kill at that step). gc, run as if two
days later, removes what nobody needs (the dead upload's claim and change set) and keeps what
the retry needs (its pending batch, its intermediates, the published chain's claims); the retry
then applies the batch exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from snapmerge import gc, synth
from snapmerge.change_sets import ChangeSets
from snapmerge.domain import Keys
from snapmerge.group_commit import PendingQueue
from tests.conftest import AwsEnv
from tests.functional.merge_rig import DB, PATHS, Crash, Rig, crash_at, make_rig, rows


@pytest.fixture
def rig(aws: AwsEnv, tmp_path: Path) -> Rig:
    return make_rig(aws.bucket, aws.table, tmp_path)


@pytest.mark.parametrize("path", PATHS)
def test_gc_after_a_dead_run_keeps_what_its_retry_needs(rig: Rig, path: str) -> None:
    base = rows(1, 10)
    rig.seed(base)
    done = rows(2, 4, start=100)
    b = rig.merger(path).run(rig.batch("b", [done]))
    first = synth.overwrite(base, seed=3, fraction=1.0, vector_fraction=0.5)
    request = rig.batch("a", [first])
    with pytest.raises(Crash):
        rig.merger(path, crash_at("after_upload")).run(request)
    (dead,) = [c.version for c in rig.store.log.claims("a")]
    queue = PendingQueue(rig.blobs, DB)
    pending_before = [p.key for p in queue.listing()[0] if p.batch_id == "a"]
    assert (path == "two_phase") == bool(pending_before)  # group commit enqueued it
    has_changes = dead in ChangeSets(rig.blobs, DB).versions()

    found = gc.plan(rig.store, now=datetime.now(UTC) + timedelta(days=2))
    gc.apply(rig.store, found)

    assert found.orphan_claims == (Keys.claim(DB, "a", dead),)
    assert rig.store.log.claims("b") and rig.store.log.claims("a") == []
    assert (dead in found.change_sets) == has_changes
    assert [p.key for p in queue.listing()[0] if p.batch_id == "a"] == pending_before
    assert rig.blobs.list("intermediate/a/")

    retry = rig.merger(path).run(request)

    assert not retry.replayed and retry.base_version == b.version
    assert rig.snapshot() == synth.expected_state([base, done, first])
