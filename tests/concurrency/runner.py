"""Run one planned history on the serialised embedded server; collect what the checker needs.

Each worker is a thread with its own MergeKit, cache directory and (for the victim) its own boto3
clients, wrapped as: kit → FaultyBlobStore → RecordingBlobStore → S3BlobStore (and the same for
the lease table). A failed attempt is retried, as Step Functions retries a failed task; only an
attempt whose ``run`` returned counts as "reported successful". A :class:`Script` (optional)
imposes an exact interleaving on the workers (the issue-10 scenarios).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.config import Config

from legacy.final_merge import LegacyFinalMerge
from legacy.merge_under_lease import merge_under_lease
from snapmerge import synth
from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.adapters.s3_store import S3BlobStore
from snapmerge.backoff import Backoff
from snapmerge.built import BuiltVersion
from snapmerge.config import Settings
from snapmerge.domain import Database, FinalMergeRequest, Keys, LockScope, MergePath
from snapmerge.embedded import EmbeddedAWS
from snapmerge.lock import LeaseLock
from snapmerge.merging import MergeKit
from snapmerge.ports import IndexEngine
from snapmerge.seeding import seed_snapshot
from snapmerge.snapshots import SnapshotStore
from snapmerge.transfer import upload_directory
from snapmerge.two_phase import TwoPhaseFinalMerge
from tests.concurrency.choreography import Script, signal, wait
from tests.concurrency.generator import BatchPlan, HistoryPlan, WorkerPlan, victim_path
from tests.concurrency.history import History, RecordingBlobStore, RecordingLeaseTable
from tests.concurrency.invariants import FinalState
from tests.concurrency.nemesis import Fault, FaultyBlobStore, FaultyLeaseTable, Nemesis

DB = Database.WORDS
# Short enough that a pause past the lease costs a couple of seconds; long enough (10 heartbeats)
# that a heartbeat thread starved of CPU by Chroma merges on a loaded 2-core machine does not lose
# a healthy holder's lease every attempt (at 1 s, one 100-history run saw a batch fail 6 times).
LEASE = timedelta(seconds=2.0)
HEARTBEAT = timedelta(seconds=0.2)
MAX_ATTEMPTS = 8
# One retry by the SDK: a single injected fault is absorbed, two surface (and the task retries).
_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 2}, max_pool_connections=32)
_SESSION = boto3.session.Session()  # loads the service models once, not per client


def _client(service: str) -> Any:
    """A client on the environment's endpoint (the embedded server), from the shared session."""
    region = os.environ.get("AWS_REGION", "us-east-1")
    return _SESSION.client(service, region_name=region, config=_CLIENT_CONFIG)  # type: ignore[call-overload]


class Engine(IndexEngine, synth.IndexWriter, Protocol):
    """MemoryIndex or ChromaIndex: merges, and writes the inputs."""


@dataclass(frozen=True)
class Variant:
    """How the system under test is (mis)built: the correct one, or a negative control."""

    unconditional_pointer: bool = False  # strip If-Match: the checker must catch it
    skip_verify: bool = False  # publish without lease.verify: fencing check must catch it
    race_step: str | None = None  # all two-phase workers meet here before any swaps
    lock_scope: LockScope = LockScope.COLLECTION  # PER_BATCH: only the CAS keeps writers apart
    ordered_record: bool = True  # False: record pointer writes without the history-wide lock
    max_rebases: int = 3  # two-phase's lost CASes before its fallback (0: the first loss)
    enqueue_by_listing: bool = False  # group commit enqueues before fetching (ADR 0013)


class UnverifiedKit(MergeKit):
    """Negative control: publishes without confirming the lease (no fencing at all)."""

    def publish(self, db: Database, built: BuiltVersion, lease: Any) -> Any:
        return super().publish(db, built, None)


def run_history(
    plan: HistoryPlan,
    cloud: EmbeddedAWS,
    engine: Engine,
    workdir: Path,
    variant: Variant = Variant(),
    script: Script | None = None,
) -> tuple[History, FinalState]:
    bucket, table = f"h-{uuid.uuid4().hex[:12]}", f"h-{uuid.uuid4().hex[:12]}"
    cloud.create_bucket(bucket)
    cloud.create_table(table)
    shared = (_client("s3"), _client("dynamodb"))
    raw = S3BlobStore(bucket, shared[0])
    seed = seed_snapshot(raw, engine, DB, list(plan.seed_rows), workdir=_mk(workdir / "seed"))
    uploads = _Uploads(raw, engine, workdir)
    for worker in plan.workers:
        for n, batch in enumerate(worker.batches):
            if not batch.late_upload:
                uploads.request(worker.worker, n, batch)
    history = History(seed.version)
    if script is None:
        script = Script()
        if variant.race_step is None:
            _victim_builds_first(plan, script)
    script.blobs = raw
    two_phase = sum(b.path is MergePath.TWO_PHASE for b in plan.batches)
    barrier = threading.Barrier(two_phase) if variant.race_step else None
    threads, victims = [], []
    for worker in plan.workers:
        fault = plan.fault if worker.worker == plan.victim else Fault.NONE
        clients = shared if fault is Fault.NONE else (_client("s3"), _client("dynamodb"))
        nemesis = Nemesis(fault, LEASE, HEARTBEAT)
        victims += [nemesis] if worker.worker == plan.victim else []
        ctx = _Worker(plan, worker, history, nemesis, barrier, variant, script)
        kit = ctx.kit(bucket, table, clients, engine, workdir / f"w{worker.worker}")
        threads.append(threading.Thread(target=ctx.run, args=(kit, uploads), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    script.release_all()
    history.fault_fired = any(n.fired for n in victims)
    return history, _final_state(raw, engine, workdir / "final")


def _victim_builds_first(plan: HistoryPlan, script: Script) -> None:
    """Group commit: a two-phase victim takes the builder marker before the others start.

    Left to the scheduler, the victim's batch is often published by another worker's build and
    the victim never reaches the step its fault is at (the fault never fires: the history tests
    nothing). Ordered, the others enqueue while the victim builds and wait for it: a builder
    that crashes, loses its lease, stalls or loses its reply while others wait.
    """
    if plan.fault is Fault.NONE or victim_path(plan) is not MergePath.TWO_PHASE:
        return
    script.at(plan.victim, "builder", signal("victim-building"))
    script.at(plan.victim, "done", signal("victim-building"))
    for worker in plan.workers:
        if worker.worker != plan.victim:
            script.at(worker.worker, "start", wait("victim-building"))


class _Uploads:
    """Each batch's inputs on S3 and its request; uploaded up front, or late (reused ids)."""

    def __init__(self, raw: S3BlobStore, engine: Engine, workdir: Path) -> None:
        self.raw, self.engine, self.workdir = raw, engine, workdir
        self._requests: dict[tuple[int, int], FinalMergeRequest] = {}

    def request(self, worker: int, n: int, batch: BatchPlan) -> FinalMergeRequest:
        if (worker, n) not in self._requests:
            where = self.workdir / "inputs" / f"w{worker}-{n}"
            self._requests[(worker, n)] = _upload_batch(self.raw, self.engine, batch, where)
        return self._requests[(worker, n)]


class _Worker:
    def __init__(
        self,
        plan: HistoryPlan,
        worker: WorkerPlan,
        history: History,
        nemesis: Nemesis,
        barrier: threading.Barrier | None,
        variant: Variant,
        script: Script,
    ) -> None:
        self.plan, self.worker, self.history = plan, worker, history
        self.nemesis, self.barrier, self.variant = nemesis, barrier, variant
        self.script = script
        self.rng = random.Random(plan.seed * 31 + worker.worker)
        self.raced = False

    def hook(self, step: str) -> None:
        if self.barrier is not None and step == self.variant.race_step and not self.raced:
            self.raced = True
            self.barrier.wait(timeout=60)
        self.script.step(self.worker.worker, step)
        self.nemesis.hook(step)

    def kit(
        self, bucket: str, table: str, clients: tuple[Any, Any], engine: Engine, root: Path
    ) -> MergeKit:
        self.nemesis.install(*clients)
        leases = RecordingLeaseTable(
            FaultyLeaseTable(DynamoLeaseTable(table, clients[1]), self.nemesis),
            on_acquire=lambda: self.script.step(self.worker.worker, "acquire"),
        )
        pointer = Keys.pointer(DB)
        recorded = RecordingBlobStore(
            S3BlobStore(bucket, clients[0]),
            self.history,
            self.worker.worker,
            leases,
            pointer,
            ordered=self.variant.ordered_record,
        )
        blobs = FaultyBlobStore(
            recorded, self.nemesis, pointer, unconditional=self.variant.unconditional_pointer
        )
        settings = Settings(
            bucket=bucket,
            table=table,
            lock_duration=LEASE,
            phase_lease=LEASE,  # the pause-past-lease fault outlasts the short phase locks too
            heartbeat_interval=HEARTBEAT,
            max_heartbeat_failures=2,
            chroma_root=root,
            lock_wait_timeout=timedelta(seconds=120),
            lock_scope=self.variant.lock_scope,
            # a forced race needs two builders on one base: group commit allows one at a time
            group_commit=self.variant.race_step is None,
            enqueue_by_listing=self.variant.enqueue_by_listing,
        )
        lock = LeaseLock(
            leases,
            duration=LEASE,
            heartbeat_interval=HEARTBEAT,
            max_heartbeat_failures=2,
            rng=self.rng,
            backoff=Backoff(
                base=timedelta(milliseconds=20), cap=timedelta(milliseconds=300), error_attempts=2
            ),
        )
        cls = UnverifiedKit if self.variant.skip_verify else MergeKit
        return cls(
            blobs,
            engine,
            leases,
            settings,
            lock=lock,
            hooks=self.hook,
            verify_margin=timedelta(milliseconds=100),
        )

    def run(self, kit: MergeKit, uploads: _Uploads) -> None:
        me = self.worker.worker
        self.script.step(me, "start")
        for n, batch in enumerate(self.worker.batches):
            merger = self._merger(kit, batch)
            request = uploads.request(me, n, batch)
            for attempt in range(MAX_ATTEMPTS):
                if attempt == 1:
                    self.script.step(me, "retry")
                # the victim's first batch, until the fault fires: an attempt that failed
                # before reaching the fault's step (a starved heartbeat) does not use it up
                self.nemesis.arm(me == self.plan.victim and n == 0 and not self.nemesis.fired)
                try:
                    result = merger.run(request)
                except Exception as exc:  # the workflow sees it, and retries the task
                    self.history.add_outcome(self.worker.worker, batch.batch_id, attempt, None, exc)
                    time.sleep(0.02 * (attempt + 1))
                    continue
                finally:
                    self.nemesis.arm(False)
                self.history.add_outcome(self.worker.worker, batch.batch_id, attempt, result, None)
                break
        self.script.step(me, "done")

    def _merger(self, kit: MergeKit, batch: BatchPlan) -> LegacyFinalMerge | TwoPhaseFinalMerge:
        if batch.path is MergePath.LEGACY:
            return LegacyFinalMerge(kit)
        return TwoPhaseFinalMerge(
            kit,
            fallback=merge_under_lease,
            max_rebases=self.variant.max_rebases,
            rng=self.rng,
            backoff_base_s=0.02,
            backoff_cap_s=0.2,
        )


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _upload_batch(
    raw: S3BlobStore, engine: Engine, batch: BatchPlan, where: Path
) -> FinalMergeRequest:
    keys = []
    for i, rows in enumerate(batch.chunks):
        local = where / f"chunk-{i}"
        synth.write_index(engine, local, list(rows), batch.collection or f"receipt_{DB.value}")
        prefix = Keys.intermediate_prefix(batch.batch_id, i)
        upload_directory(raw, local, prefix)
        keys.append(prefix)
    return FinalMergeRequest(batch_id=batch.batch_id, database=DB, intermediate_keys=tuple(keys))


def _final_state(raw: S3BlobStore, engine: Engine, dest: Path) -> FinalState:
    store = SnapshotStore(raw, DB)
    pointer = store.read_pointer()
    if pointer is None:
        return FinalState(None, False, {})
    try:
        manifest = store.download_version(pointer.version, dest)
        records = {r.id: r for page in engine.read_records(dest) for r in page}
    except Exception:  # anything unreadable is a violation of invariant 2, reported by the checker
        return FinalState(pointer.version, False, {})
    complete = manifest is not None and manifest.record_count == len(records)
    return FinalState(pointer.version, complete, records)
