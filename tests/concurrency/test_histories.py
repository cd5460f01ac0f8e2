"""Jepsen-style histories: concurrent legacy and two-phase final merges under a nemesis.

Run against the serialised embedded server (S3 + DynamoDB) with real adapters. The bulk runs on
MemoryIndex (the reference engine, fast); a smaller set runs on ChromaIndex (8-d vectors).
``SNAPMERGE_HISTORIES`` (default 12) and ``SNAPMERGE_CHROMA_HISTORIES`` (default 1) set the counts;
``SNAPMERGE_HISTORY_SEED`` shifts the seeds. A long run: ``SNAPMERGE_HISTORIES=500 pytest
tests/concurrency``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.embedded import EmbeddedAWS
from snapmerge.errors import LeaseLostError
from tests.concurrency.generator import FAULT_CYCLE, forced_race, generate, lone_pause
from tests.concurrency.invariants import Violation, check
from tests.concurrency.runner import Engine, Variant, run_history
from tests.conftest import AwsEnv

HISTORIES = int(os.environ.get("SNAPMERGE_HISTORIES", "12"))
CHROMA_HISTORIES = int(os.environ.get("SNAPMERGE_CHROMA_HISTORIES", "1"))
BASE_SEED = int(os.environ.get("SNAPMERGE_HISTORY_SEED", "0"))


def _run(count: int, engine: Engine, cloud: EmbeddedAWS, tmp: Path, offset: int = 0) -> None:
    failures: list[str] = []
    fired = 0
    for index in range(offset, offset + count):
        plan = generate(index, BASE_SEED)
        history, final = run_history(plan, cloud, engine, tmp / f"h{index}")
        violations = check(plan, history, final)
        fired += any(o.error is not None for o in history.outcomes)
        failures += [f"history {index} ({plan.fault}): {v}" for v in violations]
    print(
        f"checked {count} histories ({type(engine).__name__}), {len(failures)} violations;"
        f" {fired} with a failed attempt that was retried"
    )
    assert failures == [], "\n".join(failures[:20])


def test_histories_on_memory_index(aws: AwsEnv, tmp_path: Path) -> None:
    assert HISTORIES >= 1
    _run(HISTORIES, MemoryIndex(), aws.cloud, tmp_path)


def test_histories_on_chroma(aws: AwsEnv, tmp_path: Path) -> None:
    if CHROMA_HISTORIES < 1:
        pytest.fail("SNAPMERGE_CHROMA_HISTORIES must be at least 1 (skip nothing silently)")
    # offset so the Chroma set sees different faults than the first Memory histories
    _run(CHROMA_HISTORIES, ChromaIndex(), aws.cloud, tmp_path, offset=len(FAULT_CYCLE) // 2)


def test_forced_race_is_safe_with_the_conditional_write(aws: AwsEnv, tmp_path: Path) -> None:
    plan = forced_race()
    history, final = run_history(
        plan, aws.cloud, MemoryIndex(), tmp_path, Variant(race_step="after_upload")
    )
    assert check(plan, history, final) == []
    assert sum(r.cas_failures for r in history.successes().values()) == 1  # the race did happen


def test_negative_control_unconditional_pointer_write_is_caught(
    aws: AwsEnv, tmp_path: Path
) -> None:
    plan = forced_race()
    history, final = run_history(
        plan,
        aws.cloud,
        MemoryIndex(),
        tmp_path,
        Variant(unconditional_pointer=True, race_step="after_upload"),
    )
    violations = check(plan, history, final)
    kinds = {v.invariant for v in violations}
    print("negative control caught:", *violations, sep="\n  ")
    assert {"1", "2"} <= kinds, violations  # a lost batch and a non-linear chain


def test_a_holder_paused_past_its_lease_never_publishes(aws: AwsEnv, tmp_path: Path) -> None:
    plan = lone_pause()
    history, final = run_history(plan, aws.cloud, MemoryIndex(), tmp_path)
    assert check(plan, history, final) == []
    first = history.outcomes[0]
    assert isinstance(first.error, LeaseLostError)  # refused, then the retry landed


def test_negative_control_publish_without_fencing_is_caught(aws: AwsEnv, tmp_path: Path) -> None:
    plan = lone_pause()
    history, final = run_history(
        plan, aws.cloud, MemoryIndex(), tmp_path, Variant(skip_verify=True)
    )
    violations: list[Violation] = check(plan, history, final)
    print("negative control caught:", *violations, sep="\n  ")
    assert [v.invariant for v in violations] == ["3"], violations
