"""Jepsen-style histories: concurrent legacy and two-phase final merges under a nemesis.

Run against the serialised embedded server (S3 + DynamoDB) with real adapters. The bulk runs on
MemoryIndex (the reference engine, fast); a smaller set runs on ChromaIndex (8-d vectors).

The first ``len(COVERAGE)`` (26) histories of a run inject every fault into a victim on each
path, so the default run covers fault × path deterministically; a history whose fault did not
fire, or in which any attempt failed with an undeclared error type, is a violation.

Environment: ``SNAPMERGE_HISTORIES`` (default 26: the coverage set), ``SNAPMERGE_CHROMA_HISTORIES``
(default 2: one fault on each path), ``SNAPMERGE_HISTORY_OFFSET`` (first index, for shards),
``SNAPMERGE_MAX_WORKERS`` (default 3), ``SNAPMERGE_HISTORY_SEED`` (shifts the seeds). The long run
is ``make test-long``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest

from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.embedded import EmbeddedAWS
from snapmerge.errors import LeaseLostError
from tests.concurrency.generator import COVERAGE, forced_race, generate, lone_pause, victim_path
from tests.concurrency.invariants import Violation, check
from tests.concurrency.runner import Engine, Variant, run_history
from tests.conftest import AwsEnv

HISTORIES = int(os.environ.get("SNAPMERGE_HISTORIES", str(len(COVERAGE))))
CHROMA_HISTORIES = int(os.environ.get("SNAPMERGE_CHROMA_HISTORIES", "2"))
OFFSET = int(os.environ.get("SNAPMERGE_HISTORY_OFFSET", "0"))
MAX_WORKERS = int(os.environ.get("SNAPMERGE_MAX_WORKERS", "3"))
BASE_SEED = int(os.environ.get("SNAPMERGE_HISTORY_SEED", "0"))


def _run(
    indices: range, engine: Engine, cloud: EmbeddedAWS, tmp: Path, variant: Variant = Variant()
) -> Counter[str]:
    failures: list[str] = []
    fired: Counter[str] = Counter()
    started = time.monotonic()
    for index in indices:
        plan = generate(index, BASE_SEED, max_workers=MAX_WORKERS)
        history, final = run_history(plan, cloud, engine, tmp / f"h{index}", variant)
        violations = check(plan, history, final)
        if history.fault_fired:
            fired[f"{plan.fault}@{victim_path(plan)}"] += 1
        failures += [f"history {index} ({plan.fault}@{victim_path(plan)}): {v}" for v in violations]
    elapsed = time.monotonic() - started
    print(
        f"\nchecked {len(indices)} histories ({type(engine).__name__}, indices {indices.start}"
        f"–{indices.stop - 1}) in {elapsed:.0f} s ({elapsed / max(1, len(indices)):.2f} s each),"
        f" violations: {len(failures)}; faults fired:"
    )
    for kind, n in sorted(fired.items()):
        print(f"  {kind}: {n}")
    assert failures == [], "\n".join(failures[:20])
    return fired


def test_histories_on_memory_index(aws: AwsEnv, tmp_path: Path) -> None:
    assert HISTORIES >= 1
    indices = range(OFFSET, OFFSET + HISTORIES)
    fired = _run(indices, MemoryIndex(), aws.cloud, tmp_path)
    covered = {(f, p) for f, p in COVERAGE if f"{f}@{p}" in fired}
    if indices.start == 0 and len(indices) >= len(COVERAGE):
        assert covered == set(COVERAGE), sorted(set(COVERAGE) - covered)


def test_histories_enqueued_by_listing(aws: AwsEnv, tmp_path: Path) -> None:
    """The coverage set again, every group-commit execution enqueuing before it fetches."""
    assert HISTORIES >= 1
    indices = range(OFFSET, OFFSET + HISTORIES)
    variant = Variant(enqueue_by_listing=True)
    fired = _run(indices, MemoryIndex(), aws.cloud, tmp_path, variant)
    covered = {(f, p) for f, p in COVERAGE if f"{f}@{p}" in fired}
    if indices.start == 0 and len(indices) >= len(COVERAGE):
        assert covered == set(COVERAGE), sorted(set(COVERAGE) - covered)


def test_histories_on_chroma(aws: AwsEnv, tmp_path: Path) -> None:
    if CHROMA_HISTORIES < 1:
        pytest.fail("SNAPMERGE_CHROMA_HISTORIES must be at least 1 (skip nothing silently)")
    # from the middle of the coverage set: a crash fault on each path, not the Memory run's first
    start = OFFSET + len(COVERAGE) // 2 - 1
    _run(range(start, start + CHROMA_HISTORIES), ChromaIndex(), aws.cloud, tmp_path)


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
