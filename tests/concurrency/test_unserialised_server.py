"""Negative control: the embedded server with its serialisation turned off loses a CAS update,
and the history checker catches it.

moto checks ``If-Match`` and then writes, not atomically (DESIGN §6); ``EmbeddedAWS`` serialises
request handling to close that gap (``serialise=True``, the default; this test starts a second
server with ``serialise=False``). To make the race certain rather than lucky, the test slows
moto's write of the pointer object by 0.3 s — between its condition check and its store — and two
two-phase workers on per-batch lock ids (so only the CAS keeps them apart) reach their pointer
writes together. Pointer writes are recorded without the harness's own ordering lock, so nothing
but the server decides. Serialised, one CAS is refused and rebased; unserialised, both land.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.s3.models import S3Backend

from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.domain import LockScope
from snapmerge.embedded import EmbeddedAWS
from tests.concurrency.generator import forced_race
from tests.concurrency.invariants import check
from tests.concurrency.runner import Variant, run_history
from tests.conftest import AwsEnv

RACE = Variant(race_step="after_upload", lock_scope=LockScope.PER_BATCH, ordered_record=False)


@pytest.fixture
def slow_pointer_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Widen moto's check-then-write window on the pointer object (both servers are in-process)."""
    original = S3Backend.put_object

    def put_object(self: S3Backend, bucket_name: str, key_name: str, *args: Any, **kw: Any) -> Any:
        if key_name.endswith("latest-pointer.txt"):
            time.sleep(0.3)
        return original(self, bucket_name, key_name, *args, **kw)

    monkeypatch.setattr(S3Backend, "put_object", put_object)


@pytest.fixture
def unserialised(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedAWS]:
    with EmbeddedAWS(serialise=False) as cloud:
        for key, value in cloud.env().items():
            monkeypatch.setenv(key, value)
        yield cloud


@pytest.mark.usefixtures("slow_pointer_store")
def test_serialised_server_refuses_the_second_cas(aws: AwsEnv, tmp_path: Path) -> None:
    plan = forced_race()
    history, final = run_history(plan, aws.cloud, MemoryIndex(), tmp_path, RACE)
    assert check(plan, history, final) == []
    assert sum(r.cas_failures for r in history.successes().values()) == 1  # the race happened


@pytest.mark.usefixtures("slow_pointer_store")
def test_unserialised_server_loses_a_cas_update_and_the_checker_sees_it(
    unserialised: EmbeddedAWS, tmp_path: Path
) -> None:
    plan = forced_race()
    history, final = run_history(plan, unserialised, MemoryIndex(), tmp_path, RACE)
    violations = check(plan, history, final)
    print("negative control caught:", *violations, sep="\n  ")
    bases = {history.manifests[p.version].base_version for p in history.publishes}
    assert len(history.publishes) == 2 and bases == {history.seed_version}  # both CASes landed
    details = [v.detail for v in violations]
    assert any("chain not linear" in d for d in details), violations
    assert any(" is lost" in d or "not its last write" in d for d in details), violations
