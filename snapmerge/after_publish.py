"""The steps after a swap, shared by both paths and by a replayed run: the published mark, the
receipt, the exact clean-up of the batch's intermediates, the lineage check and retention.

    swap landed ─► mark published ─► receipt ─► lineage mark ─► clear in-flight
                ─► delete this batch's intermediates ─► lineage check ─► retention

None of it is under the lock. :class:`~snapmerge.merging.MergeKit` inherits these steps, so a
path calls ``kit.finish(...)`` as it calls every other step.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

from snapmerge.bases import batch_intermediates
from snapmerge.config import Settings
from snapmerge.domain import Database, FinalMergeRequest, FinalMergeResult
from snapmerge.errors import SnapshotError
from snapmerge.exactly_once import Replay, receipt_payload
from snapmerge.lineage import LineageChecker
from snapmerge.lineage_marks import mark_pending, publish_of
from snapmerge.ports import BlobStore, IndexEngine
from snapmerge.snapshots import SnapshotStore

log = logging.getLogger("snapmerge.merging")


class AfterPublish:
    """What follows a publish (or answers a retry of one); mixed into MergeKit."""

    blobs: BlobStore
    engine: IndexEngine
    settings: Settings

    def store(self, db: Database) -> SnapshotStore:
        raise NotImplementedError

    def hook(self, step: str) -> None:
        raise NotImplementedError

    def workspace(self) -> AbstractContextManager[Path]:
        raise NotImplementedError

    def finish(
        self,
        request: FinalMergeRequest,
        result: FinalMergeResult,
        *,
        cleanup: bool,
        receipt: dict[str, Any] | None = None,
    ) -> int:
        """After a publish: published mark, receipt, lineage mark, intermediates, lineage check,
        retention.

        Returns how many earlier publishes the lineage check found overwritten (LostPublishes).
        """
        store = self.store(request.database)
        if receipt is None:
            entry = store.manifest(result.version)
            if entry is None:
                raise SnapshotError(f"published version {result.version} has no manifest")
            receipt = receipt_payload(entry, request)
        # before the receipt: a run (or replay) that answers has marked what the pointer named
        store.log.mark_published(result.version)
        store.write_receipt(request.batch_id, receipt)
        self.hook("after_receipt")
        mark_pending(self.blobs, request.database, publish_of(receipt))
        store.clear_inflight(result.version, result.version)
        if cleanup:
            self.delete_intermediates(request)
        lost = self.check_lineage(request.database)
        store.apply_retention(self.settings.keep_versions)
        return lost

    def check_lineage(self, db: Database) -> int:
        """The cheap lineage check after a publish, off the lock: unconfirmed publishes only.

        Never fails the merge that ran it (its publish stands): a failure is logged and counts 0.
        """
        if not self.settings.lineage_check:
            return 0
        try:
            with self.workspace() as work:
                checker = LineageChecker(
                    self.store(db),
                    self.engine,
                    work,
                    confirm_after=self.settings.lineage_confirm_after,
                )
                report = checker.check_pending()
        except Exception:
            log.warning("lineage check of %s failed", db.value, exc_info=True)
            return 0
        for line in report.describe()[1:]:
            log.error("lineage: %s", line)
        return len(report.lost)

    def delete_intermediates(self, request: FinalMergeRequest) -> None:
        """Delete exactly this batch's intermediates (``snapmerge/bases.py``)."""
        keys = batch_intermediates(self.blobs, request)
        if keys:
            self.blobs.delete(keys)

    def finish_replay(
        self, request: FinalMergeRequest, replay: Replay, *, cleanup: bool
    ) -> FinalMergeResult:
        """What the first run would have done after its swap: receipt, clean-up, retention."""
        lost = self.finish(request, replay.result, cleanup=cleanup, receipt=replay.receipt)
        return replace(replay.result, lost_publishes=lost)
