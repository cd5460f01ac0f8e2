"""The audit log is append-only: no API changes an entry, a taken S3 slot cannot be written
again, an edited or removed JSONL line is detected, and appends are idempotent per transition."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from rollout.audit import JsonlAuditLog, S3AuditLog
from rollout.audit_entry import AuditEntry, AuditIntegrityError, AuditSlotTakenError
from snapmerge.adapters.memory import MemoryBlobStore


def entry(n: int, **kw: Any) -> AuditEntry:
    base: dict[str, Any] = {
        "transition_id": f"t{n}",
        "action": "advance",
        "from_percent": float(n),
        "to_percent": float(n + 1),
        "from_status": "running",
        "to_status": "running",
        "reason": f"step {n}",
        "who": "tester@host",
        "evidence": {"verdict": {"p_value": 0.5, "n": n}},
    }
    base.update(kw)
    return AuditEntry(**base)


@pytest.fixture(params=["jsonl", "s3"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "jsonl":
        return JsonlAuditLog(tmp_path / "audit.jsonl")
    return S3AuditLog(MemoryBlobStore("audit"), "rollout/audit/")


def test_history_is_in_order_with_who_when_and_evidence(log: Any) -> None:
    for n in range(5):
        log.append(entry(n))
    history = log.history()
    assert [e.seq for e in history] == list(range(5))
    assert [e.reason for e in history] == [f"step {n}" for n in range(5)]
    assert history[3].evidence == {"verdict": {"p_value": 0.5, "n": 3}}
    assert history[0].who == "tester@host" and history[0].at.endswith("+00:00")


def test_append_is_idempotent_per_transition(log: Any) -> None:
    first = log.append(entry(0))
    again = log.append(entry(0, reason="a retry after a crash"))
    assert again == first and len(log.history()) == 1


def test_there_is_no_api_to_change_an_entry(log: Any) -> None:
    public = {name for name in dir(log) if not name.startswith("_")}
    assert not public & {"update", "delete", "remove", "put", "edit", "clear", "truncate", "set"}
    with pytest.raises(AttributeError):  # frozen entries
        log.append(entry(0)).reason = "rewritten"  # type: ignore[misc]


def test_an_edited_jsonl_line_is_detected(tmp_path: Path) -> None:
    log = JsonlAuditLog(tmp_path / "audit.jsonl")
    for n in range(3):
        log.append(entry(n))
    lines = log.path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["reason"] = "nothing to see here"
    log.path.write_text("\n".join([lines[0], json.dumps(edited), lines[2]]) + "\n")
    with pytest.raises(AuditIntegrityError, match="entry 1 was modified"):
        log.history()
    log.path.write_text("\n".join([lines[0], lines[2]]) + "\n")  # a removed line
    with pytest.raises(AuditIntegrityError, match="out of sequence"):
        log.history()


def test_a_second_write_to_an_s3_slot_fails() -> None:
    log = S3AuditLog(MemoryBlobStore("audit"), "a/")
    written = log.append(entry(0))
    with pytest.raises(AuditSlotTakenError, match="0000000000"):
        log.write_slot(entry(9, reason="forged").sealed(0, written.prev_digest))
    assert log.history() == [written]


def test_two_s3_writers_never_share_a_slot() -> None:
    blobs = MemoryBlobStore("audit")
    barrier = threading.Barrier(4)

    def writer(k: int) -> None:
        barrier.wait(timeout=10)
        for n in range(5):
            S3AuditLog(blobs, "a/").append(entry(100 * k + n))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    history = S3AuditLog(blobs, "a/").history()
    assert len(history) == 20 and len({e.transition_id for e in history}) == 20


class OverwritingBlobs(MemoryBlobStore):
    """Negative control: a bucket that ignores If-None-Match."""

    def put(self, key: str, body: bytes, **kwargs: Any) -> str:
        kwargs.pop("if_none_match", None)
        return super().put(key, body, **kwargs)


def test_negative_control_without_if_none_match_a_slot_is_overwritten() -> None:
    log = S3AuditLog(OverwritingBlobs("audit"), "a/")
    written = log.append(entry(0))
    log.write_slot(entry(9, reason="forged").sealed(0, written.prev_digest))  # no error...
    assert log.history()[0].reason == "forged"  # ...and the original entry is gone


def test_s3_audit_log_on_the_embedded_server(aws: Any) -> None:
    from snapmerge.adapters.s3_store import S3BlobStore

    log = S3AuditLog(S3BlobStore(aws.bucket), "rollout/audit/")
    first = log.append(entry(0))
    log.append(entry(1))
    assert [e.transition_id for e in log.history()] == ["t0", "t1"]
    with pytest.raises(AuditSlotTakenError):
        log.write_slot(entry(7).sealed(0, first.prev_digest))
    assert log.slot_key(1) == "rollout/audit/0000000001.json"
