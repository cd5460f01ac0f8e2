"""Lineage check and repair beside the original writers (issue 9, part 6 first bullet, part 2).

On the embedded server with real ChromaDB, both paths. The compactor (``original_compactor.py``)
and the original writer (``Rig.original_publish``) behave as the original pipeline's do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snapmerge import synth
from snapmerge.aws import client as aws_client
from snapmerge.cli import main
from snapmerge.domain import Keys, Record, VersionId
from snapmerge.lineage import LineageChecker
from snapmerge.lineage_marks import pending_publishes
from tests.compat.original_compactor import OriginalCompactor
from tests.conftest import AwsEnv
from tests.functional.merge_rig import DB, PATHS, Rig, make_rig, rows


@pytest.fixture
def rig(aws: AwsEnv, tmp_path: Path) -> Rig:
    return make_rig(aws.bucket, aws.table, tmp_path)


def lineage(
    capsys: pytest.CaptureFixture[str], aws: AwsEnv, action: str
) -> tuple[int, dict[str, object]]:
    args = ["lineage", action, "--json", "--database", DB.value, "--bucket", aws.bucket]
    code = main([*args, "--table", aws.table])
    doc = json.loads(capsys.readouterr().out)
    return code, doc["databases"][0]


def owner(rig: Rig) -> str | None:
    item = (
        aws_client("dynamodb")
        .get_item(
            TableName=rig.table.table_name,
            Key={"PK": {"S": f"LOCK#{DB.value}#chroma-{DB.value}-update"}, "SK": {"S": "LOCK"}},
        )
        .get("Item")
    )
    return None if item is None else item.get("owner", {}).get("S")


def lose_a_publish(
    rig: Rig, path: str
) -> tuple[list[Record], list[Record], list[Record], VersionId]:
    """Seed X; the compactor takes the lock, reads X and uploads O; its lease lapses; snapmerge
    takes the row and publishes V on X; the compactor's heartbeat takes the row back and it
    writes the pointer to O. Returns (base, compactor's changes, V's writes, V)."""
    base = rows(1, 12)
    seed = rig.seed(base)
    compactor = OriginalCompactor(rig)
    compactor.take_lock(lapsed=True)
    theirs = synth.overwrite(base[:4], seed=7, fraction=1.0, vector_fraction=0.0)
    compactor.build(theirs)
    assert owner(rig) == compactor.owner

    ours = rows(2, 5, start=100) + synth.overwrite(
        base[6:10], seed=8, fraction=1.0, vector_fraction=0.5
    )
    published = rig.merger(path).run(rig.batch("a", [ours]))
    assert published.base_version == seed.version  # snapmerge took the lapsed row: fault 1 fired

    assert compactor.publish() == compactor.version
    assert compactor.read_version == seed.version and compactor.deleted == []
    seen = rig.snapshot()
    assert all(r.id not in seen for r in ours[:5])  # V's batch is gone: fault 2 fired
    assert all(seen[r.id] == b for r, b in zip(ours[5:], base[6:10], strict=True))
    return base, theirs, ours, published.version


@pytest.mark.parametrize("path", PATHS)
def test_compactor_overwrite_is_reported_repaired_and_then_clean(
    rig: Rig, aws: AwsEnv, capsys: pytest.CaptureFixture[str], path: str
) -> None:
    base, theirs, ours, lost = lose_a_publish(rig, path)

    # the cheap check after the next publish already counts it (LostPublishes)
    later = rows(3, 3, start=200)
    after = rig.merger(path).run(rig.batch("b", [later]))
    assert after.lost_publishes == 1

    code, report = lineage(capsys, aws, "verify")
    assert code == 1
    assert [loss["version"] for loss in report["lost"]] == [lost]  # type: ignore[index]
    (loss,) = report["lost"]  # type: ignore[misc]
    assert loss["missing"] == sorted(r.id for r in ours[:5])
    assert loss["reverted"] == sorted(r.id for r in ours[5:])
    # retention keeps the lost version and its base until the lineage is confirmed
    rig.store.apply_retention(keep=1)
    assert {lost, loss["base_version"]} <= set(rig.store.list_versions())

    code, repaired = lineage(capsys, aws, "repair")
    assert code == 0
    (restored,) = repaired["restored"]  # type: ignore[misc]
    assert restored["lost"] == lost
    assert sorted(restored["records"]) == sorted(loss["missing"] + loss["reverted"])

    expected = synth.expected_state([base, theirs, ours, later])
    seen = rig.snapshot()
    assert set(seen) == set(expected)
    for rid, record in expected.items():
        assert seen[rid] == record, rid  # every id with its content

    code, report = lineage(capsys, aws, "verify")
    assert code == 0 and report["lost"] == []

    # a second repair finds nothing to do; the repair batch applied exactly once
    code, again = lineage(capsys, aws, "repair")
    assert code == 0 and again["restored"] == []
    assert len(rig.store.log.claims(restored["batch_id"])) == 1


@pytest.mark.parametrize("path", PATHS)
def test_original_writer_on_top_of_ours_is_no_loss_and_snapmerge_goes_on(
    rig: Rig, aws: AwsEnv, capsys: pytest.CaptureFixture[str], path: str
) -> None:
    """Issue 9 part 2: the original writer publishes ON TOP of our version."""
    base = rows(1, 10)
    rig.seed(base)
    ours = rows(2, 4, start=100)
    mine = rig.merger(path).run(rig.batch("a", [ours]))
    theirs = synth.overwrite(ours, seed=9, fraction=0.5, vector_fraction=0.5) + rows(
        3, 3, start=300
    )
    original = rig.original_publish(theirs)

    code, report = lineage(capsys, aws, "verify")
    assert code == 0 and report["lost"] == [] and report["pointer"] == original

    later = rows(4, 3, start=400)
    result = rig.merger(path).run(rig.batch("b", [later]))
    assert result.base_version == original and result.lost_publishes == 0
    assert rig.snapshot() == synth.expected_state([base, ours, theirs, later])
    assert mine.version not in {p.version for p in pending_publishes(rig.blobs, DB)}  # confirmed
    code, report = lineage(capsys, aws, "verify")
    assert code == 0 and report["lost"] == []


def test_a_chain_of_our_publishes_has_no_loss(
    rig: Rig, aws: AwsEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    """Negative control: nothing overwritten, nothing reported."""
    rig.seed(rows(1, 8))
    for i, path in enumerate(["legacy", "two_phase", "legacy"]):
        result = rig.merger(path).run(rig.batch(f"c{i}", [rows(10 + i, 3, start=100 * (i + 1))]))
        assert result.lost_publishes == 0
    code, report = lineage(capsys, aws, "verify")
    assert code == 0 and report["lost"] == [] and report["checked"] == 3


@pytest.mark.parametrize("tamper", ["drop", "revert"])
def test_the_checker_reports_a_tampered_snapshot(rig: Rig, tamper: str) -> None:
    """Negative control: one record of V dropped, or set back to its base content, in the
    snapshot the pointer names (an original-format version with no log entry) is a loss."""
    base = rows(1, 8)
    rig.seed(base)
    changed = synth.overwrite(base[:2], seed=5, fraction=1.0, vector_fraction=1.0)
    ours = rows(2, 3, start=100) + changed
    mine = rig.merger("two_phase").run(rig.batch("a", [ours]))
    work = rig.download(Keys.version_prefix(DB, mine.version))
    (work / ".snapshot_hash").unlink()
    records = {r.id: r for page in rig.engine.read_records(work) for r in page}
    victim = ours[0].id if tamper == "drop" else changed[1].id
    if tamper == "drop":
        del records[victim]
    else:
        records[victim] = base[1]
    tampered = rig.root / "tampered"
    rig.engine.write(tampered, list(records.values()), DB.value)
    prefix = Keys.version_prefix(DB, VersionId("20200101_000000"))
    for rel, file in ((p.relative_to(tampered).as_posix(), p) for p in tampered.rglob("*")):
        if file.is_file():
            rig.blobs.upload_file(prefix + rel, file)
    rig.blobs.put(Keys.pointer(DB), b"20200101_000000")

    report = LineageChecker(rig.store, rig.engine, rig.root / "check").verify()
    (loss,) = report.lost
    assert loss.publish.version == mine.version and loss.how == "content"
    assert (loss.missing, loss.reverted) == (
        ((victim,), ()) if tamper == "drop" else ((), (victim,))
    )
    assert [r.id for r in loss.restore] == [victim]
