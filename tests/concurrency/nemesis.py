"""The nemesis: the faults a history injects into one victim worker's first batch, once.

Each fault is applied at one seam the production code really has:

* ``crash_<step>`` — the worker dies at a named step of the merge (a hook raises
  :class:`WorkerCrash`; ``except`` handlers still run, which a real kill would skip — a killed
  worker's orphan is left to retention, which is not what the checker judges).
* ``heartbeat_lost`` — every renew of the victim's lease fails (the heartbeat dies), and the
  victim dawdles at ``before_swap`` for a few heartbeats so the renews do happen on either path
  (a two-phase lock is otherwise held for milliseconds and never renewed); the merge must notice
  before it publishes.
* ``pause_past_lease`` — the victim freezes at ``before_swap`` for longer than its lease, with its
  heartbeat frozen too (a GC pause or a stopped VM stops every thread); others may take the lock.
* ``lost_reply`` — the victim's pointer write lands and then the caller sees a 412, the way an SDK
  retry of a write whose reply was lost sees it.
* ``throttle_s3`` / ``throttle_ddb`` — 503 SlowDown / ThrottlingException answers injected under
  botocore (``before-send``), once (the SDK retries it) or past the SDK's retries (the error
  surfaces as StoreError / LockError and the batch is retried, as Step Functions would).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders

from snapmerge.errors import (
    LeaseLostError,
    LockBusyError,
    LockError,
    PointerConflictError,
    StoreError,
)
from snapmerge.ports import BlobStore, DelegatingBlobStore, LeaseGrant, LeaseTable


class Fault(StrEnum):
    NONE = "none"
    CRASH_AFTER_FETCH = "crash_after_fetch"
    CRASH_AFTER_BUILD = "crash_after_build"
    CRASH_AFTER_UPLOAD = "crash_after_upload"
    CRASH_BEFORE_SWAP = "crash_before_swap"
    CRASH_AFTER_SWAP = "crash_after_swap"
    CRASH_AFTER_RECEIPT = "crash_after_receipt"
    HEARTBEAT_LOST = "heartbeat_lost"
    PAUSE_PAST_LEASE = "pause_past_lease"
    LOST_REPLY = "lost_reply"
    THROTTLE_S3_ONCE = "throttle_s3_once"
    THROTTLE_S3_PAST_RETRIES = "throttle_s3_past_retries"
    THROTTLE_DDB_ONCE = "throttle_ddb_once"
    THROTTLE_DDB_PAST_RETRIES = "throttle_ddb_past_retries"


CRASH_STEPS = {
    Fault.CRASH_AFTER_FETCH: "after_fetch",
    Fault.CRASH_AFTER_BUILD: "after_build",
    Fault.CRASH_AFTER_UPLOAD: "after_upload",
    Fault.CRASH_BEFORE_SWAP: "before_swap",
    Fault.CRASH_AFTER_SWAP: "after_swap",
    Fault.CRASH_AFTER_RECEIPT: "after_receipt",
}


class WorkerCrash(Exception):
    """The victim died at a step (the workflow sees a failed task and retries it)."""


ErrorTypes = tuple[type[BaseException], ...]

# What any worker may see in a loaded history and retry: the lock busy past its wait, a lease
# lost to a CPU-starved heartbeat, a CAS lost more often than the rebase bound.
CONTENTION_ERRORS: ErrorTypes = (LockBusyError, LeaseLostError, PointerConflictError)

# What the victim's injected fault may surface as, on top of contention. Anything else a worker
# sees (an AssertionError, a TypeError, a KeyError ...) is a bug that a retry only hid.
FAULT_ERRORS: dict[Fault, ErrorTypes] = {
    Fault.NONE: (),
    **{crash: (WorkerCrash,) for crash in CRASH_STEPS},
    Fault.HEARTBEAT_LOST: (LeaseLostError,),
    Fault.PAUSE_PAST_LEASE: (LeaseLostError,),
    Fault.LOST_REPLY: (),
    Fault.THROTTLE_S3_ONCE: (),
    Fault.THROTTLE_S3_PAST_RETRIES: (StoreError,),
    Fault.THROTTLE_DDB_ONCE: (),
    Fault.THROTTLE_DDB_PAST_RETRIES: (LockError,),
}


@dataclass
class Nemesis:
    """One worker's faults. ``armed`` is true during the victim's attempts of its first batch
    until the fault has fired (then never again)."""

    fault: Fault
    lease_duration: timedelta
    heartbeat: timedelta = timedelta(seconds=0.2)
    armed: bool = False
    fired: bool = False
    frozen: threading.Event | None = None

    def arm(self, on: bool) -> None:
        self.armed = on and self.fault is not Fault.NONE

    def hook(self, step: str) -> None:
        if not self.armed:
            return
        if CRASH_STEPS.get(self.fault) == step:
            self.fired = True
            raise WorkerCrash(f"worker crashed at {step}")
        if self.fault is Fault.HEARTBEAT_LOST and step == "before_swap":
            # long enough for 4 heartbeats: 2 failed renews lose the lease (max failures = 2)
            time.sleep(self.heartbeat.total_seconds() * 4)
        if self.fault is Fault.PAUSE_PAST_LEASE and step == "before_swap":
            self.fired = True
            self.armed = False
            self.frozen = threading.Event()  # the heartbeat blocks on it, as a frozen VM would
            time.sleep(self.lease_duration.total_seconds() * 1.6)
            self.frozen.set()

    # -- botocore-level throttling ---------------------------------------------------------------
    def install(self, s3_client: Any, ddb_client: Any) -> None:
        """Register the throttling faults on this worker's own boto3 clients."""
        if self.fault in (Fault.THROTTLE_S3_ONCE, Fault.THROTTLE_S3_PAST_RETRIES):
            count = 1 if self.fault is Fault.THROTTLE_S3_ONCE else 3
            s3_client.meta.events.register("before-send.s3.PutObject", self._injector(count, _s3))
        if self.fault in (Fault.THROTTLE_DDB_ONCE, Fault.THROTTLE_DDB_PAST_RETRIES):
            count = 1 if self.fault is Fault.THROTTLE_DDB_ONCE else 3
            ddb_client.meta.events.register(
                "before-send.dynamodb.UpdateItem", self._injector(count, _ddb)
            )

    def _injector(self, count: int, make: Any) -> Any:
        left = [count]
        lock = threading.Lock()

        def inject(request: Any, **_: Any) -> AWSResponse | None:
            with lock:
                if not self.armed or left[0] <= 0:
                    return None
                left[0] -= 1
                self.fired = True
            response: AWSResponse = make(request.url)
            return response

        return inject


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body


def _headers(content_type: str) -> HTTPHeaders:
    headers = HTTPHeaders()
    headers["Content-Type"] = content_type
    return headers


def _s3(url: str) -> AWSResponse:
    body = (
        b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    )
    return AWSResponse(url, 503, _headers("application/xml"), _Raw(body))


def _ddb(url: str) -> AWSResponse:
    body = (
        b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException",'
        b'"message":"Rate of requests exceeds the allowed throughput."}'
    )
    return AWSResponse(url, 400, _headers("application/x-amz-json-1.0"), _Raw(body))


class FaultyLeaseTable:
    """The victim's lease table: renews fail (heartbeat lost) or block (frozen) while armed."""

    def __init__(self, inner: LeaseTable, nemesis: Nemesis) -> None:
        self.inner = inner
        self.nemesis = nemesis

    def try_acquire(
        self, lock_id: str, collection: str, owner: str, duration: timedelta
    ) -> LeaseGrant:
        return self.inner.try_acquire(lock_id, collection, owner, duration)

    def renew(self, grant: LeaseGrant, duration: timedelta) -> LeaseGrant:
        frozen = self.nemesis.frozen
        if frozen is not None:
            frozen.wait()
        if self.nemesis.armed and self.nemesis.fault is Fault.HEARTBEAT_LOST:
            self.nemesis.fired = True
            raise LockError("injected: heartbeat renew failed")
        return self.inner.renew(grant, duration)

    def release(self, grant: LeaseGrant) -> None:
        self.inner.release(grant)

    def read(self, lock_id: str, collection: str | None = None) -> LeaseGrant | None:
        return self.inner.read(lock_id, collection)


class FaultyBlobStore(DelegatingBlobStore):
    """The victim's bucket: a lost reply to its pointer write; optionally UNCONDITIONAL writes.

    ``unconditional=True`` is the negative control: the pointer write drops ``If-Match`` and
    ``If-None-Match``, so a stale writer overwrites a newer publish. The checker must catch it.
    """

    def __init__(
        self, inner: BlobStore, nemesis: Nemesis, pointer_key: str, *, unconditional: bool = False
    ) -> None:
        super().__init__(inner)
        self.nemesis = nemesis
        self.pointer_key = pointer_key
        self.unconditional = unconditional

    def put(
        self,
        key: str,
        body: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        if key == self.pointer_key and self.unconditional:
            if_match, if_none_match = None, False
        etag = self.inner.put(
            key, body, if_match=if_match, if_none_match=if_none_match, metadata=metadata
        )
        lose = self.nemesis.armed and self.nemesis.fault is Fault.LOST_REPLY
        if key == self.pointer_key and lose and (if_match or if_none_match):
            self.nemesis.fired = True
            self.nemesis.armed = False
            # the SDK's retry of a write that landed: same condition, now refused (412)
            self.inner.put(key, body, if_match=if_match, if_none_match=if_none_match)
        return etag
