"""What ``snapmerge demo`` is given: its options, the files it writes, its rollout plan."""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from flags.bucketing import threshold_for
from flags.keys import SWITCHBACK_FIELD, SWITCHBACK_WINDOW, FlagKey
from flags.stores import DEFAULT_DOCUMENT
from handlers.demo_workload import Sizes
from rollout.plan import RolloutPlan, parse_plan
from snapmerge.errors import InvalidEventError


@dataclass(frozen=True)
class Options:
    out: Path
    wave: int  # executions per wave (the controller judges between waves)
    concurrency: int
    sizes: Sizes
    stages: tuple[float, ...]
    min_samples: int
    regression_ms: int
    seed: int
    threads: bool = False  # executions as threads of the demo's process (the former way)
    switchback: int = 0  # seconds of a switchback window (docs/flags.md); 0: per execution
    waves_per_stage: int | None = None  # the most waves a stage runs; None: the act's own cap

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> Options:
        quick = bool(a.quick)

        def pick(value: int | None, quick_default: int, default: int) -> int:
            return (quick_default if quick else default) if value is None else value

        sizes = Sizes(
            snapshot_records=pick(a.snapshot_records, 400, 2000),
            deltas_per_batch=pick(a.deltas, 3, 6),
            records_per_delta=pick(a.records_per_delta, 8, 12),
            dimension=pick(a.dimension, 32, 256),
        )
        opts = cls(
            out=Path(a.out),
            wave=pick(a.executions, 6, 8),
            concurrency=pick(a.concurrency, 3, 4),
            sizes=sizes,
            stages=_stages(a.stages) if a.stages else DEFAULT_STAGES[quick],
            min_samples=pick(a.min_samples, 5, 6),
            regression_ms=pick(a.regression_ms, 800, 1000),
            seed=a.seed,
            threads=bool(getattr(a, "threads", False)),
            switchback=a.switchback or 0,
            waves_per_stage=a.waves_per_stage,
        )
        opts.validate()
        return opts

    def validate(self) -> None:
        """Impossible options are refused before anything starts."""
        s = self.sizes
        checks = [
            (self.wave >= 1, f"--executions must be at least 1 (got {self.wave})"),
            (self.concurrency >= 1, f"--concurrency must be at least 1 (got {self.concurrency})"),
            (s.snapshot_records >= 0, f"--snapshot-records must be >= 0 ({s.snapshot_records})"),
            (s.deltas_per_batch >= 1, f"--deltas must be at least 1 (got {s.deltas_per_batch})"),
            (s.records_per_delta >= 1, f"--records-per-delta must be >= 1 ({s.records_per_delta})"),
            (s.dimension >= 1, f"--dimension must be at least 1 (got {s.dimension})"),
            (self.min_samples >= 1, f"--min-samples must be at least 1 ({self.min_samples})"),
            (self.regression_ms >= 0, f"--regression-ms must be >= 0 ({self.regression_ms})"),
            (
                self.waves_per_stage is None or self.waves_per_stage >= 1,
                f"--waves-per-stage must be at least 1 (got {self.waves_per_stage})",
            ),
            (
                0 <= self.switchback <= MAX_DEMO_SWITCHBACK_S,
                f"--switchback must be 0..{MAX_DEMO_SWITCHBACK_S} s: each wave waits for the "
                f"next window to start ({self.switchback})",
            ),
            (not self.out.exists() or self.out.is_dir(), f"--out {self.out} is not a directory"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidEventError(message)


# Each wave sleeps to the next window boundary (handlers/demo_acts.py), up to 24 waves a stage:
# the flag's own limit (a day) would leave the demo waiting for days
MAX_DEMO_SWITCHBACK_S = 60
DEFAULT_STAGES = {True: (50.0, 100.0), False: (25.0, 50.0, 100.0)}  # by --quick


def _stages(text: str) -> tuple[float, ...]:
    """``--stages 50,100``: increasing percentages above 0, the last 100."""
    try:
        stages = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise InvalidEventError(f"--stages takes percentages like 50,100 (got {text!r})") from None
    rising = all(a < b for a, b in itertools.pairwise(stages))
    if not rising or stages[0] <= 0 or stages[-1] != 100:
        raise InvalidEventError(f"--stages must rise from above 0 to 100 (got {text!r})")
    for stage in stages:  # the plan refuses these too, but only after the demo has seeded
        try:
            threshold_for(stage)
        except ValueError as exc:
            raise InvalidEventError(f"--stages: {exc} (got {text!r})") from None
    return stages


class Files:
    """Everything the demo writes, under ``--out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.flags = out / "flags.json"
        self.emf = out / "emf.jsonl"
        self.audit = out / "audit.jsonl"
        self.state = out / "rollout-state.json"
        self.report = out / "report.html"
        self.dashboard = out / "dashboard.json"
        self.alarms = out / "alarms.json"
        self.chroma = out / "chroma"

    def reset(self, switchback: int = 0) -> None:
        """Empty ``--out`` and write the packaged flag document; with ``switchback`` seconds, its
        path flag randomized by collection and time window instead of by execution."""
        self.out.mkdir(parents=True, exist_ok=True)
        for path in (self.flags, self.emf, self.audit, self.state, self.report):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.chroma, ignore_errors=True)
        self.chroma.mkdir(parents=True)
        if not switchback:
            self.flags.write_text(DEFAULT_DOCUMENT.read_text())
            return
        doc = json.loads(DEFAULT_DOCUMENT.read_text())
        doc[FlagKey.FINAL_MERGE_PATH.value][SWITCHBACK_FIELD] = {SWITCHBACK_WINDOW: switchback}
        self.flags.write_text(json.dumps(doc, indent=2) + "\n")


def demo_plan(opts: Options, name: str) -> RolloutPlan:
    return parse_plan(
        {
            "name": name,
            "flag_store": {"kind": "env"},
            "defaults": {"bake_seconds": 1, "min_samples": opts.min_samples, "recheck_seconds": 1},
            # A demo stage sees a dozen executions, not hundreds: at the default rollout-wide
            # α = 0.05 (split over the stages, then Holm over the critical guardrails) no test
            # of 10-15 samples can reject, so the demo spends a larger α to show a rollback.
            "judge": {"alpha": 0.2},
            "stages": [{"percent": p} for p in opts.stages],
            "guardrails": [
                # Two-phase's own hold against a budget: legacy's hold is the whole merge, so a
                # same-window comparison cannot see a phase-3 hold that grew to under legacy's.
                # Embedded under the demo's contention a healthy phase hold is tens to a few
                # hundred ms; the injected regression adds --regression-ms to every publish.
                {"metric": "LockHoldTime", "kind": "latency", "worse": "higher",
                 "tolerance": 0, "critical": True, "against": "budget", "budget": 400},
                # The whole final merge against legacy's in the same window (the default plan's
                # guardrail): a two-phase path that holds the lock briefly but takes longer end
                # to end (every publish invalidating the builds in flight) must not promote.
                {"metric": "FinalMergeDuration", "kind": "latency", "worse": "higher",
                 "tolerance": 0.1, "critical": True, "against": "baseline", "margin": 0.3},
                {"metric": "MergeErrors", "kind": "rate", "worse": "higher",
                 "tolerance": 0.2, "critical": True, "against": "baseline", "margin": 0.2},
                {"metric": "CASFailures", "kind": "rate", "worse": "higher",
                 "tolerance": 0, "critical": True, "against": "budget", "budget": 0.5,
                 "margin": 0.3},
                {"metric": "ShadowMismatched", "kind": "rate", "worse": "higher",
                 "tolerance": 0, "critical": True, "against": "budget", "budget": 0},
                {"metric": "ChunkCount", "kind": "invariant", "worse": "higher",
                 "tolerance": 0, "critical": True},
            ],
        }
    )  # fmt: skip
