"""The demo's acts: waves of concurrent executions through the real handler, judged between
waves by the rollout controller, with the injected regression of act 2."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from flags.client import bootstrap as flags_bootstrap
from flags.client import reset as flags_reset
from flags.stores import FileStore
from handlers import bootstrap
from handlers.demo_options import Files, Options
from handlers.demo_workload import Batch, Workload
from handlers.local import run_execution
from handlers.rollout_flags import DocumentFlagWriter
from rollout.audit import JsonlAuditLog
from rollout.controller import RolloutController, Timing
from rollout.judge import Verdict
from rollout.metrics import MergeMetrics
from rollout.plan import RolloutPlan
from rollout.sources import EmfFileSource
from rollout.state import FileStateStore
from rollout.state_types import Status
from snapmerge.config import Settings

MAX_WAVES_PER_STAGE = 12


@dataclass(frozen=True)
class Act:
    """How an act ended: the lines it tells, the rollout's status, the controller's last verdict."""

    log: list[str]
    status: Status
    verdict: Verdict | None


class Demo:
    def __init__(self, opts: Options, files: Files) -> None:
        self.opts, self.files = opts, files
        self.regressed = threading.Event()
        self.windows: list[tuple[int, int]] = []  # (start, end) ms of each act
        settings = Settings.from_env()
        flags_reset()
        self.app = bootstrap.build(
            settings,
            flags=flags_bootstrap(FileStore(files.flags)),
            metrics=MergeMetrics(emf_file=files.emf, stdout=False),
            two_phase_hooks=self._regression_hook,
        )
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

    def _regression_hook(self, step: str) -> None:
        """The injected bug: two-phase holds its phase-3 lock far longer than it should."""
        if step == "before_swap" and self.regressed.is_set():
            time.sleep(self.opts.regression_ms / 1000)

    def wave(self, label: str, bar: Any) -> None:
        batches = [self.workload.next_batch(label) for _ in range(self.opts.wave)]
        with ThreadPoolExecutor(self.opts.concurrency) as pool:
            futures = {pool.submit(self._execute, b): b for b in batches}
            for future in as_completed(futures):
                future.result()
                bar.update(1)

    def _execute(self, batch: Batch) -> None:
        for attempt in range(2):  # a failed execution is redriven once, as an operator would
            try:
                run_execution(dict(batch.event), parallel=2)
                self.workload.ledger.succeeded(batch)
                return
            except Exception as exc:
                if attempt == 1:
                    self.workload.ledger.failure(batch, exc)

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
                if state.status is not Status.RUNNING or waves >= MAX_WAVES_PER_STAGE:
                    break
                if inject_at_stage is not None and state.stage_index >= inject_at_stage:
                    self.regressed.set()
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
            if self.regressed.is_set():  # after the rollback, the next executions go to legacy
                self.wave("after-rollback", bar)
        finally:
            bar.close()
            self.regressed.clear()
        final = self.controller.status()
        log.append(f"  ended: {final.status} at {final.percent:g} % two_phase")
        self.windows[-1] = (self.windows[-1][0], int(time.time() * 1000) + 1)
        return Act(log, final.status, last_verdict)
