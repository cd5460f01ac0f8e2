"""Scratch directories under ``CHROMA_ROOT`` that say who owns them, and the sweep of dead ones.

A Lambda killed mid-step (a timeout, an out-of-memory kill) leaves its ``work/`` directory
behind; on a warm Lambda's ``/tmp`` (or a shared EFS mount) those pile up until the disk is
full. Every scratch name we create carries an *owner tag* ``{host}.{pid}``: the host is the
kernel's boot id (one per Lambda micro-VM, so two Lambdas sharing EFS never look alike), the pid
the creating process. A directory is **dead** when its owner process is gone (same host), or
when it is older than the longest lease (any host: no step outlives the 15-minute Lambda limit,
and the lease is longer). Names without a tag (another component's) are judged by age alone.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import cache
from pathlib import Path

_TAG = re.compile(r"-(?P<host>[0-9a-z]{1,12})\.(?P<pid>\d+)-")


@cache
def host_id() -> str:
    """This machine's boot id (12 hex digits), or a digest of its host name where there is none."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        boot = socket.gethostname().encode().hex()
    return (boot.lower() or "unknown")[:12]


def owner_tag() -> str:
    return f"{host_id()}.{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def owner_alive(name: str) -> bool | None:
    """Whether the process named in ``name``'s owner tag runs; None when it cannot be told
    (no tag, or another host)."""
    match = _TAG.search(name)
    if match is None or match["host"] != host_id():
        return None
    return _pid_alive(int(match["pid"]))


def is_dead(path: Path, max_age: timedelta, now: float | None = None) -> bool:
    """Dead: its owner process is gone, or it is older than ``max_age``."""
    try:
        age = (now or time.time()) - path.lstat().st_mtime
    except FileNotFoundError:
        return False  # already gone: nothing to do
    return age > max_age.total_seconds() or owner_alive(path.name) is False


@contextmanager
def owned_workdir(root: Path, prefix: str) -> Iterator[Path]:
    """A fresh ``{root}/{prefix}-{owner tag}-XXXX`` directory, removed on the way out."""
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-{owner_tag()}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_dead(root: Path, max_age: timedelta) -> list[Path]:
    """Remove the dead directories directly under ``root``; return what was removed."""
    if not root.is_dir():
        return []
    now, removed = time.time(), []
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink() and is_dead(child, max_age, now):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed
