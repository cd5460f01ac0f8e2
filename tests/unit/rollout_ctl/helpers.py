"""Fakes shared by the controller tests: a manual clock, a list metric source, scripted verdicts,
flag stores that count or refuse writes, and synthetic per-execution records."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from flags.stores import DEFAULT_DOCUMENT, FileStore, MemoryStore
from rollout.judge import Verdict
from rollout.metric_names import MetricName
from rollout.sources import MetricRecord
from snapmerge.domain import MergePath
from snapmerge.errors import StoreError

START = 1_700_000_000.0


class ManualClock:
    def __init__(self, now: float = START) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        """The loop's sleep: time passes only when the controller waits."""
        self.sleeps.append(seconds)
        self.now += seconds


class ListSource:
    """A :class:`~rollout.sources.MetricSource` over records held in memory."""

    def __init__(self, records: Iterable[MetricRecord] = ()) -> None:
        self.items = list(records)

    def records(
        self, since_ms: int | None = None, until_ms: int | None = None
    ) -> list[MetricRecord]:
        return sorted(
            (
                r
                for r in self.items
                if (since_ms is None or r.timestamp_ms >= since_ms)
                and (until_ms is None or r.timestamp_ms < until_ms)
            ),
            key=lambda r: r.timestamp_ms,
        )


class ScriptedJudge:
    """Returns the scripted decisions in order (the last one repeats) and records its calls."""

    def __init__(self, *decisions: str) -> None:
        self.decisions = list(decisions)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, records: Any, guardrails: Any, **kwargs: Any) -> Verdict:
        self.calls.append({"records": list(records), **kwargs})
        decision = self.decisions.pop(0) if len(self.decisions) > 1 else self.decisions[0]
        return Verdict(decision, [f"scripted {decision}"], {"scripted": decision})  # type: ignore[arg-type]


def default_doc() -> dict[str, Any]:
    return FileStore(DEFAULT_DOCUMENT).load()[0]


class CountingStore(MemoryStore):
    """A memory flag store that counts saves and can be told to refuse them."""

    def __init__(self, doc: object | None = None) -> None:
        super().__init__(default_doc() if doc is None else doc)
        self.saves = 0
        self.refuse: Exception | None = None

    def save(self, doc: dict[str, Any], expected_version: str | None) -> str:
        if self.refuse is not None:
            raise self.refuse
        self.saves += 1
        return super().save(doc, expected_version)


def refusal() -> StoreError:
    return StoreError("AccessDenied: not allowed to write the flag document")


def synthetic(
    rng: random.Random,
    start_ms: int,
    n: int,
    path: MergePath,
    *,
    hold_ms: float,
    cas_rate: float = 0.0,
    spacing_ms: int = 1000,
) -> list[MetricRecord]:
    """``n`` executions of one path with lognormal lock holds around ``hold_ms``."""
    out = []
    for i in range(n):
        cas = 1.0 if rng.random() < cas_rate else 0.0
        hold = hold_ms * rng.lognormvariate(0, 0.3)
        values = {
            MetricName.LOCK_HOLD_TIME.value: hold,
            MetricName.LOCK_WAIT_TIME.value: 5 * rng.lognormvariate(0, 0.3),
            MetricName.FINAL_MERGE_DURATION.value: 2000 * rng.lognormvariate(0, 0.2),
            MetricName.CAS_FAILURES.value: cas,
            MetricName.CAS_RETRIES.value: cas,
            MetricName.MERGE_ERRORS.value: 0.0,
            MetricName.FALLBACK_TO_LEGACY.value: 0.0,
            MetricName.CHUNK_COUNT.value: 4.0,
        }
        meta = {"batch_id": f"{path}-{start_ms}-{i}"}
        out.append(MetricRecord(path, "words", start_ms + i * spacing_ms, values, meta))
    return out
