"""A merged snapshot on local disk before its publish, and the result shape both paths return."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from snapmerge.domain import (
    FinalMergeRequest,
    FinalMergeResult,
    Keys,
    MergePath,
    MergeStats,
    Pointer,
    VersionId,
)
from snapmerge.manifest import VersionManifest


@dataclass(frozen=True)
class BuiltVersion:
    """A merged snapshot on local disk, not yet published."""

    version: VersionId
    directory: Path
    manifest: VersionManifest
    stats: MergeStats
    base: Pointer | None
    base_manifest: VersionManifest | None = None  # as read when the build started

    def renamed(self, version: VersionId) -> BuiltVersion:
        """The same build under another id (the one drawn was already claimed)."""
        return replace(self, version=version, manifest=replace(self.manifest, version=version))


def make_result(
    request: FinalMergeRequest,
    built: BuiltVersion,
    path: MergePath,
    *,
    started: float,
    lease_stats: dict[str, Any],
) -> FinalMergeResult:
    """The common result shape; ``lease_stats`` holds the lock figures the path measured."""
    return FinalMergeResult(
        path=path,
        batch_id=request.batch_id,
        database=request.database,
        version=built.version,
        base_version=built.base.version if built.base else None,
        snapshot_key=Keys.version_prefix(request.database, built.version),
        total_embeddings=built.stats.final_count,
        processing_time_seconds=round(time.monotonic() - started, 3),
        chunk_count=len(request.intermediate_keys),
        delta_count=request.delta_count,
        records_merged=built.stats.records_merged,
        digest=built.manifest.digest,
        snapshot_format=built.manifest.format,
        format_upgraded=bool(built.manifest.format_upgraded_from),
        **lease_stats,
    )
