"""One controller process for the process-race tests: the real ``snapmerge`` CLI, with a hook on
the local state file that forces an interleaving (files in ``sync/`` are the only signals).

* ``together`` — each process stops before its first state write until the other one has also
  reached its first write: both built their transition on the same state version.
* ``first`` / ``second`` — ``first`` stops right after its intent is written until ``second`` has
  read the state; ``second`` reads only once that intent is there: the second controller sees the
  first one's transition pending.
* ``lww`` (negative control, with ``together``) — state writes ignore the expected version and a
  pending transition is not seen: what the controller would do without conditional writes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from rollout.dynamo import DynamoStateStore
from rollout.state import BlobStateStore, FileStateStore, StateConflictError
from rollout.state_types import RolloutState

WAIT_SECONDS = 60.0


def _signal(sync: Path, name: str) -> None:
    (sync / name).touch()


def _await(sync: Path, *names: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not all((sync / n).exists() for n in names):
        if time.monotonic() > deadline:
            raise RuntimeError(f"race hook: {names} never signalled")
        time.sleep(0.01)


def _install(mode: str, me: str, other: str, sync: Path, lww: bool) -> None:
    """Hook every state store class (the CLI opens one of them, by the --state URL)."""
    seen = {"read": False, "write": False}
    for cls in (FileStateStore, BlobStateStore, DynamoStateStore):
        _hook(cls, seen, mode, me, other, sync, lww)


def _hook(
    cls: Any, seen: dict[str, bool], mode: str, me: str, other: str, sync: Path, lww: bool
) -> None:
    real_read, real_write = cls.read, cls.write

    def read(self: Any) -> Any:
        if mode == "second" and not seen["read"]:
            _await(sync, f"{other}-intent")
        answer = real_read(self)
        if lww and answer[0] is not None:
            answer = (answer[0].__class__(**{**answer[0].__dict__, "pending": None}), answer[1])
        if not seen["read"]:
            seen["read"] = True
            _signal(sync, f"{me}-read")
        return answer

    def write(self: Any, state: RolloutState, expected: str | None) -> str:
        first = not seen["write"]
        seen["write"] = True
        if first and mode == "together":
            _signal(sync, f"{me}-at-write")
            _await(sync, f"{other}-at-write")
        if lww:  # whatever the version is now: the check is gone
            while True:
                try:
                    version: str = real_write(self, state, real_read(self)[1])
                    break
                except StateConflictError:
                    continue
        else:
            version = real_write(self, state, expected)
        if first and mode == "first":
            _signal(sync, f"{me}-intent")
            _await(sync, f"{other}-read")
        return version

    cls.read = read
    cls.write = write


def noop() -> None:
    """Starts the forkserver."""


def child(
    workdir: str, argv: list[str], mode: str, me: str, other: str, lww: bool, env: dict[str, str]
) -> None:
    """Run ``snapmerge <argv>`` in ``workdir`` with ``env`` as actor ``me``; exit with its code."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(workdir)
    os.environ["SNAPMERGE_ACTOR"] = me
    sync = Path(workdir) / "sync"
    out = open(f"{me}.out", "w")  # noqa: SIM115 - kept open until the process exits
    err = open(f"{me}.err", "w")  # noqa: SIM115
    sys.stdout, sys.stderr = out, err
    if mode != "none":
        _install(mode, me, other, sync, lww)
    import rollout
    from snapmerge.cli import main

    print(f"code from {Path(rollout.__file__).parent}", file=err)

    code = 1
    try:
        code = main(argv)
    except BaseException as exc:  # anything else: report it, exit non-zero
        print(f"uncaught: {exc!r}", file=err)
        code = 3
    finally:
        with contextlib.suppress(Exception):
            out.flush()
            err.flush()
    sys.exit(code)
