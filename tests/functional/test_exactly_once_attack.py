"""Adversarial review of issue 10 (round atk10), on the embedded server with real ChromaDB.

Each test lines up one case the issue's fixes left open and checks the DESIGN §3 invariants on
what readers see (the pointer's snapshot against the last write of every id, in publish order).
Each failed on the code before its fix unless its docstring says otherwise (see the report of
the atk10 branch).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from snapmerge import synth
from snapmerge.domain import Keys, LockScope
from snapmerge.two_phase import TwoPhaseFinalMerge
from tests.conftest import AwsEnv
from tests.functional.merge_rig import DB, Crash, Rig, crash_at, make_rig, rows


@pytest.fixture
def rig(aws: AwsEnv, tmp_path: Path) -> Rig:
    return make_rig(aws.bucket, aws.table, tmp_path)


def rewrite(base: list[Any], seed: int) -> list[Any]:
    return synth.overwrite(base, seed=seed, fraction=1.0, vector_fraction=0.5)


def expire_markers(rig: Rig) -> int:
    """Rewrite every in-flight marker as expired: what other runs see of a run whose clock is
    behind by more than its lease, or that waited longer than ``lock_duration`` between its
    upload and its swap (the markers are written once, never extended)."""
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    keys = rig.blobs.list(Keys.inflight_prefix(DB))
    for key in keys:
        blob = rig.blobs.get(key)
        assert blob is not None
        raw = json.loads(blob.body)
        raw["expires"] = past
        rig.blobs.put(key, json.dumps(raw).encode())
    return len(keys)


def killed_before_swap(rig: Rig, batch_id: str, write: list[Any]) -> None:
    """A rival run that uploaded its version and was killed (-9) before its pointer swap: its
    upload stays (a killed process discards nothing), complete, with a fresh in-flight marker."""
    rival = rig.merger(
        "two_phase", crash_at("before_swap"), group_commit=False, lock_scope=LockScope.PER_BATCH
    )
    assert isinstance(rival, TwoPhaseFinalMerge)
    rival.kit.discard = lambda db, built: None  # type: ignore[method-assign]
    with pytest.raises(Crash):
        rival.run(rig.batch(batch_id, [write]))


# -- A1: retention deletes a complete upload that is about to be published ---------------------
@pytest.mark.parametrize(
    ("path", "group"),
    [("legacy", False), ("two_phase", False), ("two_phase", True)],
    ids=["legacy", "two_phase", "two_phase-group"],
)
def test_retention_never_deletes_an_upload_whose_swap_is_still_to_come(
    rig: Rig, path: str, group: bool
) -> None:
    """Retention kept the newest ``keep`` version *prefixes*, whatever they were: with the
    uploader's in-flight marker expired (a slow run, a skewed clock) and ``keep`` newer uploads of
    rivals killed before their swap, a retention run that does not move the pointer (here a
    replay of a finished batch) retired our complete upload; our swap then landed on it. The
    pointer named a version with no data (invariant 2) and every later merge failed."""
    base = rows(1, 10)
    rig.seed(base)
    done_rows = rewrite(base, 2)
    done = rig.batch("done", [done_rows])
    rig.merger(path).run(done)
    ours_rows = rewrite(base, 3)
    fired: list[int] = []

    def meanwhile(step: str) -> None:
        if step != "after_upload" or fired:
            return
        fired.append(expire_markers(rig))
        for i in range(4):  # keep=4 newer prefixes: rivals killed before their swap
            killed_before_swap(rig, f"rival-{i}", rewrite(base, 20 + i))
        # a redelivered finished batch: its replay runs retention without moving the pointer
        replay = rig.merger(path, lock_scope=LockScope.PER_BATCH).run(done)
        assert replay.replayed

    ours = rig.merger(path, meanwhile, group_commit=group)
    result = ours.run(rig.batch("ours", [ours_rows]))

    assert fired and fired[0] >= 1  # the fault fired: our upload's marker was expired
    pointer = rig.store.read_pointer()
    assert pointer is not None and pointer.version == result.version
    assert rig.store.is_complete(pointer.version)  # invariant 2
    assert rig.snapshot() == synth.expected_state([base, done_rows, ours_rows])  # invariant 1
    # and the collection is not blocked: the next merge builds on it
    after = rewrite(base, 4)
    rig.merger(path).run(rig.batch("after", [after]))
    assert rig.snapshot() == synth.expected_state([base, done_rows, ours_rows, after])


# -- A3: with the pointer deleted, retention pushed out the published top ----------------------
@pytest.mark.parametrize("path", ["legacy", "two_phase"])
def test_retention_keeps_the_published_top_while_the_pointer_is_missing(
    rig: Rig, path: str
) -> None:
    """Uploads of runs killed before their swap, then the pointer deleted by hand, then a replay
    of a finished batch (which runs retention): the published top must survive for the
    opted-in rebuild. A regression guard end to end (on the code before atk10-A3 the top's
    unconfirmed-lineage mark happened to protect it here); the unit test
    ``test_retention_takes_nothing_while_the_pointer_is_missing`` shows the rule itself."""
    base = rows(1, 10)
    rig.seed(base)
    done_rows = rewrite(base, 2)
    done = rig.batch("done", [done_rows])
    top = rig.merger(path).run(done)
    for i in range(4):  # keep=4 newer prefixes: rivals killed before their swap
        killed_before_swap(rig, f"rival-{i}", rewrite(base, 20 + i))
    rig.blobs.delete([Keys.pointer(DB)])
    replay = rig.merger(path).run(done)  # a redelivered finished batch: runs retention
    assert replay.replayed and rig.store.read_pointer() is None  # the fault held

    assert rig.store.is_complete(top.version)
    after = rewrite(base, 4)
    rebuilt = rig.merger(path, rebuild_from_newest=True).run(rig.batch("after", [after]))
    assert rebuilt.base_version == top.version
    assert rig.snapshot() == synth.expected_state([base, done_rows, after])
