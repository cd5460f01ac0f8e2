"""The composition root: the one place that builds adapters from the environment.

Handlers call :func:`app` (cached per process, so a warm Lambda reuses clients, the snapshot
cache and the flag provider); nothing but cheap setup happens at import time. Building the app
(once per process: a cold start) first sweeps what dead runs left under ``CHROMA_ROOT``.
"""

from __future__ import annotations

import gc
import os
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from aws_lambda_powertools import Tracer

from flags.client import FlagClient
from flags.client import bootstrap as flags_bootstrap
from legacy.final_merge import LegacyFinalMerge
from legacy.merge_under_lease import merge_under_lease
from rollout.metrics import MergeMetrics
from rollout.router import Router
from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.adapters.s3_store import S3BlobStore
from snapmerge.cache import sweep_cache
from snapmerge.config import Settings
from snapmerge.domain import MergePath
from snapmerge.merging import Hook, MergeKit, Span
from snapmerge.ports import BlobStore, IndexEngine, LeaseTable
from snapmerge.scratch import sweep_dead
from snapmerge.two_phase import TwoPhaseFinalMerge
from snapmerge.workflow import WorkflowContext


@dataclass
class App:
    settings: Settings
    blobs: BlobStore
    engine: IndexEngine
    leases: LeaseTable
    kit: MergeKit
    workflow: WorkflowContext
    legacy: LegacyFinalMerge
    two_phase: TwoPhaseFinalMerge
    router: Router
    metrics: MergeMetrics
    flags: FlagClient


def build(
    settings: Settings,
    *,
    blobs: BlobStore | None = None,
    engine: IndexEngine | None = None,
    leases: LeaseTable | None = None,
    flags: FlagClient | None = None,
    metrics: MergeMetrics | None = None,
    two_phase_hooks: Hook | None = None,
) -> App:
    """Wire an :class:`App`; tests pass in-memory adapters, production gets the real ones."""
    blobs = blobs or S3BlobStore(settings.bucket)
    engine = engine or ChromaIndex()
    leases = leases or DynamoLeaseTable(settings.table)
    span = _xray_span()
    kit = MergeKit(blobs, engine, leases, settings, span=span)
    workflow = WorkflowContext(blobs, engine, settings, settings.chroma_root / "work")
    # The two-phase path may get its own hooks (fault injection in the demo and tests); it
    # shares every adapter with legacy, so both still take the same lock and the same pointer.
    two_phase_kit = kit
    if two_phase_hooks is not None:
        two_phase_kit = MergeKit(blobs, engine, leases, settings, hooks=two_phase_hooks, span=span)
    legacy, two_phase = (
        LegacyFinalMerge(kit),
        TwoPhaseFinalMerge(two_phase_kit, fallback=merge_under_lease),
    )
    metrics = metrics or MergeMetrics()
    router = Router(
        {MergePath.LEGACY: legacy, MergePath.TWO_PHASE: two_phase},
        two_phase,
        metrics,
        cleanup=kit.delete_intermediates,
    )
    flags = flags or flags_bootstrap()
    return App(
        settings, blobs, engine, leases, kit, workflow, legacy, two_phase, router, metrics, flags
    )


def _xray_span() -> Span:
    """Each phase as an X-Ray subsegment (a no-op outside Lambda, where the Tracer is off)."""
    tracer = Tracer(service="snapmerge")

    def span(name: str) -> AbstractContextManager[object]:
        return cast(AbstractContextManager[object], tracer.provider.in_subsegment(f"## {name}"))

    return span


_installed: App | None = None
_guard = threading.Lock()


def app() -> App:
    """The process's app: the installed one, else built once from the environment."""
    global _installed
    with _guard:
        if _installed is None:
            os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
            settings = Settings.from_env()
            Path(settings.chroma_root).mkdir(parents=True, exist_ok=True)
            sweep_scratch(settings)
            _installed = build(settings)
            freeze_startup_heap()
        return _installed


def sweep_scratch(settings: Settings) -> list[str]:
    """Remove what dead runs left under ``CHROMA_ROOT``: ``work/`` directories whose owner
    process is gone or that are older than the lease, and the cache's dead staging directories
    and pins. Returns the names removed (logged by the caller if it wants)."""
    root = Path(settings.chroma_root)
    removed = [p.name for p in sweep_dead(root / "work", settings.lock_duration)]
    return removed + sweep_cache(root / "cache", settings.lock_duration)


def freeze_startup_heap() -> None:
    """Exclude everything alive after start-up from garbage collection.

    The Chroma adapter collects after closing a client (its last SQLite handle sits in a
    reference cycle); a full collection walks every object of the process — in the embedded mode
    that includes moto's and every library's — and took ~0.2 s a call. Objects alive after
    start-up (modules, clients, caches) are never garbage, so freezing them halves an execution.
    """
    gc.freeze()


def install(instance: App | None) -> None:
    """Use ``instance`` for every following invocation (tests, the demo); None forgets it."""
    global _installed
    with _guard:
        _installed = instance
