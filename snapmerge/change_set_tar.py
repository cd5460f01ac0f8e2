"""The tar a change set's sources travel in, and its reading back whole or not at all.

    sources.tar   0000/<files of the first source>, 0001/…, in apply order, then ``end.json``:
                  {"sources": N, "files": [[name, size], …]} for every file before it

One plain tar: a Chroma directory is five or six files, and each request costs the writer (on the
embedded server, CPU in its own process); a file per object made ~11 PUTs of a demo publish, the
tar makes one. A tar cut at a member boundary reads as a valid shorter archive, so the reader
applies nothing unless the end list is there and every file it names came out whole.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from snapmerge.deltas import MAX_MEMBERS, safe_extract
from snapmerge.snapshots import SKIP
from snapmerge.transfer import local_files

END_NAME = "end.json"  # the tar's last member: every file before it, with its size


def pack(sources: list[Path], packed: Path) -> None:
    """Write ``sources`` (in apply order) into one tar at ``packed``, the end list last."""
    with tarfile.open(packed, "w") as tar:
        listed: list[tuple[str, int]] = []
        for i, source in enumerate(sources):
            for rel, path in local_files(source, SKIP):
                tar.add(path, arcname=f"{i:04d}/{rel}", recursive=False)
                listed.append((f"{i:04d}/{rel}", tar.getmembers()[-1].size))
        end = json.dumps({"sources": len(sources), "files": listed}).encode()
        info = tarfile.TarInfo(END_NAME)
        info.size = len(end)
        tar.addfile(info, io.BytesIO(end))


def unpack(packed: Path, target: Path, count: int, max_bytes: int, name: str) -> list[Path] | None:
    """Extract ``packed`` (named ``name`` in errors) into ``target`` and delete it; the
    ``count`` source directories in apply order, or None if the tar is not whole (cut short,
    or not one of ours). A tar that is unsafe or over ``max_bytes`` raises as
    :func:`~snapmerge.deltas.safe_extract` does."""
    safe_extract(
        packed,
        target,
        max_bytes,
        name=name,
        max_members=MAX_MEMBERS * max(1, count) + 1,  # and the end list
    )
    packed.unlink()
    if not _whole(target, count):
        return None
    out: list[Path] = []
    for i in range(count):
        source = target / f"{i:04d}"
        if not source.is_dir() or not any(source.iterdir()):
            return None
        out.append(source)
    return out


def _whole(extracted: Path, count: int) -> bool:
    """The tar's last member is there and every file it lists came out whole."""
    try:
        end = json.loads((extracted / END_NAME).read_bytes())
        if int(end["sources"]) != count:
            return False
        for name, size in end["files"]:
            path = extracted / str(name)
            if not path.is_file() or path.stat().st_size != int(size):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True
