"""The demo's acts: waves of concurrent executions through the real handler, judged between
waves by the rollout controller, with the injected regression of act 2."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from flags.stores import FileStore
from handlers import bootstrap
from handlers.demo_options import Files, Options
from handlers.demo_worker import Executions, Regression, WorkerFiles, build_app
from handlers.demo_workload import Workload
from handlers.rollout_flags import DocumentFlagWriter
from rollout.audit import JsonlAuditLog
from rollout.controller import RolloutController, Timing
from rollout.judge import Verdict
from rollout.plan import RolloutPlan
from rollout.sources import EmfFileSource
from rollout.state import FileStateStore
from rollout.state_types import Status

MAX_WAVES_PER_STAGE = 12
# Act 2 must catch its regression. At the full demo's first stage (25 %) a wave carries about two
# two-phase executions, and one carried by another's publish holds no phase-3 lock, so the
# always-valid sign test on LockHoldTime needs about 16 of them (14 beyond the budget at
# α ≈ 0.017): 12 waves were not always enough (a full run ended act 2 at 11 of 13).
MAX_WAVES_REGRESSED_STAGE = 24
# A wave under --switchback starts this long after a window's boundary, so that every execution
# the wave starts at once decides in the same window (the clocks are this machine's)
SWITCHBACK_START_S = 0.05


@dataclass(frozen=True)
class Act:
    """How an act ended: the lines it tells, the rollout's status, the controller's last verdict."""

    log: list[str]
    status: Status
    verdict: Verdict | None


class Demo:
    def __init__(self, opts: Options, files: Files) -> None:
        self.opts, self.files = opts, files
        self.windows: list[tuple[int, int]] = []  # (start, end) ms of each act
        worker_files = WorkerFiles(
            files.chroma, files.flags, files.emf, files.out / "regression", opts.regression_ms
        )
        self.regression = Regression(worker_files.regression, opts.regression_ms)
        self.regression.off()
        # This process's app seeds the snapshots, uploads the deltas and checks conservation;
        # with threads=True it also runs the executions (the former way, for comparison).
        self.app = build_app(worker_files, files.chroma)
        bootstrap.install(self.app)
        self.workload = Workload(
            self.app.blobs, self.app.engine, opts.sizes, files.chroma, opts.seed
        )
        self.controller = RolloutController(
            FileStateStore(files.state),
            DocumentFlagWriter(FileStore(files.flags)),
            JsonlAuditLog(files.audit),
            EmfFileSource(files.emf),
            timing=Timing(bake_seconds=0),
            actor="snapmerge-demo",
        )
        self._worker_files = worker_files
        self.executions: Executions | None = None

    def start_executions(self) -> None:
        """Start the workers (after seeding: a spawned worker copies nothing of this process)."""
        self.executions = Executions(
            self._worker_files, self.opts.concurrency, threads=self.opts.threads
        )

    def close(self) -> None:
        if self.executions is not None:
            self.executions.close()
        self.regression.off()

    def wave(self, label: str, bar: Any) -> None:
        assert self.executions is not None, "start_executions() first"
        batches = [self.workload.next_batch(label) for _ in range(self.opts.wave)]
        if self.opts.switchback:  # start the wave at the next window: it is its own unit
            window = self.opts.switchback
            time.sleep(window - time.time() % window + SWITCHBACK_START_S)

        def done(index: int, error: str | None) -> None:
            if error is None:
                self.workload.ledger.succeeded(batches[index])
            else:
                self.workload.ledger.failure(batches[index], error)
            bar.update(1)

        self.executions.map_done([dict(b.event) for b in batches], done)

    def act(self, title: str, plan: RolloutPlan, inject_at_stage: int | None) -> Act:
        """Run waves and let the controller judge between them until the rollout ends."""
        self.windows.append((int(time.time() * 1000), 0))
        last_verdict: Verdict | None = None
        self.controller.init(plan, force=True, clear_kill_switch=True)
        log: list[str] = [f"{title}: stages {' → '.join(f'{p:g} %' for p in self.opts.stages)}"]
        bar = tqdm(desc=title, unit="exec", leave=False, dynamic_ncols=True)
        try:
            waves = 0
            while True:
                state = self.controller.status()
                # under --switchback a wave is two units (one a collection), not eight executions
                long = inject_at_stage is not None or self.opts.switchback
                cap = MAX_WAVES_REGRESSED_STAGE if long else MAX_WAVES_PER_STAGE
                cap = self.opts.waves_per_stage or cap  # the judge's tests are anytime-valid
                if state.status is not Status.RUNNING or waves >= cap:
                    break
                if inject_at_stage is not None and state.stage_index >= inject_at_stage:
                    self.regression.on()
                bar.set_postfix_str(f"two_phase {state.percent:g} %")
                self.wave(f"{title.split(':')[0].lower().replace(' ', '')}", bar)
                waves += 1
                tick = self.controller.tick()
                if tick.action in ("promote", "complete", "rollback"):
                    waves = 0
                if tick.verdict is not None:
                    last_verdict = tick.verdict
                    reasons = "; ".join(tick.verdict.reasons)[:160]
                    log.append(f"  stage {state.percent:>5g} %: {tick.action:<8} ({reasons})")
            if self.regression.is_on():  # after the rollback, the next executions go to legacy
                self.wave("after-rollback", bar)
        finally:
            bar.close()
            self.regression.off()
        final = self.controller.status()
        log.append(f"  ended: {final.status} at {final.percent:g} % two_phase")
        self.windows[-1] = (self.windows[-1][0], int(time.time() * 1000) + 1)
        return Act(log, final.status, last_verdict)
