"""``snapmerge lineage repair``: re-apply each lost publish onto the current pointer.

A lost publish V's effect is what V wrote against its base and the pointer no longer holds (the
checker's ``Loss.restore``: V's own content of those records, read from V on S3). Repair writes
it as one intermediate under the batch id ``lineage-repair-{V}`` and runs a normal two-phase
final merge on it, so the repair is itself exactly-once through the commit log's claims and its
receipt: a second repair of V answers with the first one's publish, and a crashed repair is
finished by the next from the same intermediate (written once, reused while it is there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snapmerge.domain import Database, FinalMergeRequest, Keys, VersionId
from snapmerge.lineage import LineageChecker, Loss
from snapmerge.merging import MergeKit
from snapmerge.ports import FinalMerger
from snapmerge.transfer import upload_directory

REPAIR_PREFIX = "lineage-repair-"


def repair_batch_id(version: VersionId) -> str:
    return f"{REPAIR_PREFIX}{version}"


@dataclass(frozen=True)
class Restored:
    lost: VersionId
    batch_id: str
    version: VersionId | None  # the repair's publish (None: nothing could be restored)
    records: tuple[str, ...]
    replayed: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "lost": self.lost,
            "batch_id": self.batch_id,
            "version": self.version,
            "records": list(self.records),
            "replayed": self.replayed,
            "note": self.note,
        }


def repair(kit: MergeKit, db: Database, merge: FinalMerger) -> list[Restored]:
    """Find the lost publishes of ``db`` and re-apply each with ``merge`` (a two-phase final
    merge on ``kit``); return what was restored."""
    store = kit.store(db)
    with kit.workspace() as work:
        report = LineageChecker(store, kit.engine, work / "check").verify()
    done = []
    for loss in sorted(report.lost, key=lambda lost: lost.publish.version):  # oldest first
        done.append(_repair_one(kit, db, loss, merge))
    return done


def _repair_one(kit: MergeKit, db: Database, loss: Loss, merge: FinalMerger) -> Restored:
    store = kit.store(db)
    batch = repair_batch_id(loss.publish.version)
    ids = tuple(r.id for r in loss.restore)
    receipt = store.read_receipt(batch)
    if receipt is not None:  # repaired before; if that repair was lost too, it is a loss itself
        return Restored(
            loss.publish.version,
            batch,
            VersionId(str(receipt["version"])),
            ids,
            replayed=True,
            note="repaired earlier",
        )
    if not loss.restore:
        note = "no data left to restore from (the version or its base is gone from S3)"
        return Restored(loss.publish.version, batch, None, (), note=note)
    prefix = Keys.intermediate_prefix(batch, 0)
    if not kit.blobs.list(prefix):  # a crashed repair's intermediate is reused as it is
        with kit.workspace() as work:
            local = work / "repair"
            kit.engine.write(local, list(loss.restore), db.value)
            upload_directory(kit.blobs, local, prefix)
    request = FinalMergeRequest(batch_id=batch, database=db, intermediate_keys=(prefix,))
    result = merge.run(request)
    return Restored(loss.publish.version, batch, result.version, ids, replayed=result.replayed)
