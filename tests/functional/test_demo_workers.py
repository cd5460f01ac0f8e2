"""The demo's worker processes: started warm, one per concurrent execution, and gone when the
demo's process is killed (even with SIGKILL), not left waiting on their queue for ever."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flags.stores import DEFAULT_DOCUMENT

PARENT = """
import json, subprocess, sys, time
from pathlib import Path
from handlers.demo_worker import Executions, WorkerFiles
root = Path(sys.argv[1])
files = WorkerFiles(root / "chroma", root / "flags.json", root / "emf.jsonl", root / "reg", 0)
executions = Executions(files, 2)
orphan = subprocess.Popen(["sleep", "600"])  # the control: a child that does not watch
print(json.dumps({"workers": executions.pids, "orphan": orphan.pid}), flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    """The checker: the process exists and is not a zombie (PID 1 may never reap it here)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_workers_exit_when_the_demo_process_is_killed(tmp_path: Path) -> None:
    (tmp_path / "flags.json").write_text(DEFAULT_DOCUMENT.read_text())
    env = {
        **os.environ,
        "CHROMADB_BUCKET": "never-used",
        "DYNAMODB_TABLE_NAME": "never-used",
        "AWS_DEFAULT_REGION": "us-east-1",
        "ANONYMIZED_TELEMETRY": "False",
    }
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
    )
    started: dict[str, Any] = {}
    try:
        assert parent.stdout is not None
        started = json.loads(parent.stdout.readline())
        workers, orphan = list(started["workers"]), int(started["orphan"])
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
        assert sorted(p.name for p in (tmp_path / "chroma").iterdir()) == sorted(
            f"worker-{pid}" for pid in workers
        )  # each worker works in a directory of its own, as each Lambda has its own /tmp
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        deadline = time.monotonic() + 60
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in workers)
        # negative control: a child that does not watch its parent outlives it, and the checker
        # says so
        assert alive(orphan)
    finally:
        parent.kill()
        for pid in [*started.get("workers", []), started.get("orphan")]:
            if isinstance(pid, int) and alive(pid):
                os.kill(pid, signal.SIGKILL)


CRASHING = """
import json, os, signal, sys, time
from pathlib import Path
from handlers.demo_worker import Executions, WorkerFiles, execute

class Crashing(Executions):
    \"\"\"The event marked "crash" kills its worker (os._exit) the first ``crashes`` times.\"\"\"

    crashes = int(sys.argv[2])

    def submit(self, event):
        if event.get("crash") and Crashing.crashes > 0:
            Crashing.crashes -= 1
            return self._pool.submit(os._exit, 9)
        return self._pool.submit(execute, event)

if __name__ == "__main__":
    root = Path(sys.argv[1])
    files = WorkerFiles(root / "chroma", root / "flags.json", root / "emf.jsonl", root / "reg", 0)
    with Crashing(files, 2) as executions:
        first = list(executions.pids)
        waves = []
        for wave in range(3):
            if wave == 2:  # a worker killed while idle, between two waves
                os.kill(executions.pids[0], signal.SIGKILL)
                time.sleep(1)
            events = [{"wave": wave, "i": i, "crash": i == 1 and wave == 0} for i in range(4)]
            done = []
            executions.map_done(events, lambda i, e: done.append((i, e)))
            waves.append(sorted((i, (e or "").split(":")[0]) for i, e in done))
        print(json.dumps({"waves": waves, "restarts": executions.restarts, "first": first,
                          "last": executions.pids}), flush=True)
"""


def _crashing(tmp_path: Path, crashes: int) -> dict[str, Any]:
    tmp_path.mkdir()
    (tmp_path / "flags.json").write_text(DEFAULT_DOCUMENT.read_text())
    script = tmp_path / "crashing.py"  # spawn re-imports the main module: a file, not -c
    script.write_text(CRASHING)
    env = {
        **os.environ,
        "CHROMADB_BUCKET": "never-used",
        "DYNAMODB_TABLE_NAME": "never-used",
        "AWS_DEFAULT_REGION": "us-east-1",
        "ANONYMIZED_TELEMETRY": "False",
        "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(crashes)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_worker_that_dies_mid_wave_is_one_failed_execution_not_the_end_of_the_demo(
    tmp_path: Path,
) -> None:
    """A worker killed in an execution (OOM, a native crash) breaks a process pool for good:
    before, the wave raised BrokenProcessPool, no execution of it reached the ledger and the
    demo ended without its report. Now every execution the death took down is redriven once in
    fresh warm workers (the bogus events here fail on their own: InvalidEventError), and a
    second death of the same execution is its failure; the next wave runs, and so does a wave
    after a worker was killed while idle."""
    once = _crashing(tmp_path / "once", crashes=1)
    invalid = [[i, "InvalidEventError"] for i in range(4)]
    assert once["waves"] == [invalid, invalid, invalid]
    assert once["restarts"] == 2 and set(once["first"]).isdisjoint(once["last"])

    twice = _crashing(tmp_path / "twice", crashes=2)
    assert twice["waves"][0][1] == [1, "BrokenProcessPool"]  # its failure, recorded
    assert [w for i, w in enumerate(twice["waves"][0]) if i != 1] == [
        [i, "InvalidEventError"] for i in (0, 2, 3)
    ]
    assert twice["waves"][1:] == [invalid, invalid] and twice["restarts"] == 3
