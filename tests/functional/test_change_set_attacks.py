"""Attacks on the packed change set (issue 12, perf round): a rebase over a change set that is
not whole, or not readable, must rebuild in full — never apply what is left of it, and never
blame (and withdraw) the batch that is rebasing (embedded server, real ChromaDB).

The tar is one PUT, so S3 never shows half of one; but an object cut short in storage (a copy, a
restore, a tool) keeps a readable prefix, and tar has no end a reader requires: cut at a member
boundary, it reads as a shorter, valid archive. Before the fix, the rebasing execution failed with
a MergeInputError about the change set, withdrew its own (good) batch, and the batch was lost.
"""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from snapmerge.change_sets import ChangeSets
from tests.conftest import AwsEnv
from tests.functional.merge_rig import DB, Crash, Rig, make_rig
from tests.functional.test_group_commit import History, group_settings, violations, wait_for


@pytest.fixture
def rig(aws: AwsEnv, tmp_path: Path) -> Rig:
    return make_rig(aws.bucket, aws.table, tmp_path)


def _rewrite(rig: Rig, version: str, change: Callable[[bytes], bytes]) -> None:
    key = ChangeSets(rig.blobs, DB).data_key(version)  # type: ignore[arg-type]
    blob = rig.blobs.get(key)
    assert blob is not None
    rig.blobs.put(key, change(blob.body))


def cut_before_last_file(body: bytes) -> bytes:
    """The tar up to the header of its last source file (so the rest reads as a valid tar)."""
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        members = [m for m in tar.getmembers() if m.name != "end.json"]  # the fix's last member
    cut = body[: members[-1].offset]
    with tarfile.open(fileobj=io.BytesIO(cut)) as tar:  # the fault: a readable, shorter tar
        assert [m.name for m in tar.getmembers()] == [m.name for m in members[:-1]]
    return cut


def garble_sqlite(body: bytes) -> bytes:
    """Every chroma.sqlite3 overwritten in place (same size): whole, but unreadable."""
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith("chroma.sqlite3")]
    out = bytearray(body)
    for m in members:
        out[m.offset_data : m.offset_data + m.size] = b"\xff" * m.size
    assert members and bytes(out) != body
    return bytes(out)


def _rebase_over_a_damaged_change_set(
    rig: Rig, tmp_path: Path, damage: Callable[[bytes], bytes]
) -> tuple[History, list[str]]:
    h = History(rig)
    h.batch("k0", 0)
    h.batch("rival", 9)
    steps: list[str] = []
    damaged: list[str] = []

    def rival_publishes_then_its_change_set_is_damaged(step: str) -> None:
        steps.append(step)
        if step == "after_build" and not damaged:
            rival = rig.merger("two_phase", group_commit=False).run(h.requests["rival"])
            assert not rival.replayed
            _rewrite(rig, rival.version, damage)
            damaged.append(rival.version)

    h.start("k0", hooks=rival_publishes_then_its_change_set_is_damaged).join(120)
    assert damaged, "the fault never fired"
    return h, steps


def test_a_rebase_over_a_cut_change_set_rebuilds_in_full(rig: Rig, tmp_path: Path) -> None:
    h, steps = _rebase_over_a_damaged_change_set(rig, tmp_path, cut_before_last_file)

    assert h.errors == {}, h.errors
    assert h.results["k0"].cas_failures == 1  # it did lose its CAS to the rival
    assert "rebased_from_changes" not in steps  # what was left of the change set: not applied
    assert violations(h) == []
    assert [e.consumed for e in h.chain()] == [("rival",), ("k0",)]
    rival = h.chain()[0].version
    assert ChangeSets(rig.blobs, DB).fetch([(rival, 1)], tmp_path / "probe") is None


def test_a_rebase_over_an_unreadable_change_set_rebuilds_in_full(rig: Rig, tmp_path: Path) -> None:
    h, steps = _rebase_over_a_damaged_change_set(rig, tmp_path, garble_sqlite)

    assert h.errors == {}, h.errors  # not the rebasing batch's bad input: it is not withdrawn
    assert h.results["k0"].cas_failures == 1
    assert "rebased_from_changes" not in steps
    assert violations(h) == []
    assert [e.consumed for e in h.chain()] == [("rival",), ("k0",)]


# -- the replay check a builder no longer repeats at the pointer its wait loop checked ----------
def test_a_duplicate_whose_twin_crashed_after_claiming_builds_it_once(rig: Rig) -> None:
    """Two executions of one batch: the twin takes the marker, claims the batch on its upload and
    dies before its swap; the other, which checked the pointer while waiting, builds at that very
    pointer (so perf4 skips its selection's replay check there). The batch is applied once, and
    a retry of the twin answers with that publish."""
    h = History(rig)
    request = h.batch("r", 0)
    steps: dict[str, list[str]] = {"twin": [], "other": []}
    other_enqueued = threading.Event()

    def twin(step: str) -> None:
        steps["twin"].append(step)
        if step == "builder":
            assert other_enqueued.wait(60)
            time.sleep(0.6)  # the other's wait loop has read the pointer (it polls every 0.2 s)
        if step == "after_claims":
            raise Crash(step)

    def other(step: str) -> None:
        steps["other"].append(step)
        if step == "enqueued":
            other_enqueued.set()

    outcomes: dict[str, Any] = {}

    def go(name: str, hook: Callable[[str], None]) -> threading.Thread:
        merger = rig.merger("two_phase", hook, **group_settings())

        def run() -> None:
            try:
                outcomes[name] = merger.run(request)
            except BaseException as exc:
                outcomes[name] = exc

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    first = go("twin", twin)
    wait_for(lambda: "builder" in steps["twin"], "the twin holding the marker")
    second = go("other", other)
    for t in (first, second):
        t.join(120)

    assert isinstance(outcomes["twin"], Crash)  # the fault fired after the twin's claims
    assert "builder" in steps["other"] and "after_swap" in steps["other"]  # it built, at the
    (publish,) = h.chain()  # pointer it had checked: nothing was published in between
    result = outcomes["other"]
    assert result.version == publish.version and not result.replayed
    h.results["r"] = result
    assert violations(h) == []
    retry = rig.merger("two_phase", **group_settings()).run(request)
    assert retry.replayed and retry.version == publish.version
    assert h.chain() == [publish]
