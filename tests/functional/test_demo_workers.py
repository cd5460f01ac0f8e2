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
