"""The ``progress`` callback of ``download_file``: how a cap is enforced while downloading.

One contract for the in-memory fake and the S3 adapter on embedded moto: an exception from
``progress`` aborts the transfer, propagates unchanged and leaves no partial file behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.s3_store import S3BlobStore
from snapmerge.deltas import fetch_delta
from snapmerge.errors import MergeInputError
from snapmerge.ports import BlobStore

MIB = 2**20


@pytest.fixture(params=["memory", "s3"])
def blobs(request: pytest.FixtureRequest) -> BlobStore:
    if request.param == "memory":
        return MemoryBlobStore()
    aws = request.getfixturevalue("aws")
    return S3BlobStore(aws.bucket)


class Stop(Exception):
    pass


def test_progress_reports_every_byte(blobs: BlobStore, tmp_path: Path) -> None:
    blobs.put("f/body.bin", b"\x05" * (3 * MIB))
    seen: list[int] = []
    blobs.download_file("f/body.bin", tmp_path / "out", progress=seen.append)
    assert sum(seen) == 3 * MIB
    assert (tmp_path / "out").read_bytes() == b"\x05" * (3 * MIB)


def test_an_exception_from_progress_aborts_and_leaves_no_file(
    blobs: BlobStore, tmp_path: Path
) -> None:
    blobs.put("f/big.bin", b"\0" * (20 * MIB))
    seen: list[int] = []

    def cap(n: int) -> None:
        seen.append(n)
        if sum(seen) > MIB:
            raise Stop("over")

    with pytest.raises(Stop):
        blobs.download_file("f/big.bin", tmp_path / "out", progress=cap)
    assert list(tmp_path.iterdir()) == []  # no file, no partial temporary either


def test_a_20_mib_directory_delta_under_a_1_mib_cap_writes_little(
    blobs: BlobStore, tmp_path: Path
) -> None:
    """Before: the whole 20 MiB landed on disk, then the total was compared with the cap."""
    blobs.put("words/delta/big/chroma.sqlite3", b"db")
    for i in range(4):
        blobs.put(f"words/delta/big/seg/{i}.bin", b"\0" * (5 * MIB))
    dest = tmp_path / "dest"
    with pytest.raises(MergeInputError, match="words/delta/big/ is larger than the cap"):
        fetch_delta(blobs, "words/delta/big/", dest, max_bytes=MIB)
    written = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert written <= 2 * MIB, written
