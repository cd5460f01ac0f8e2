"""The change-set tar (snapmerge/change_set_tar.py): a whole tar reads back, a part never does."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from snapmerge.change_set_tar import END_NAME, pack, unpack


def sources(root: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        source = root / f"src{i}"
        (source / "seg").mkdir(parents=True)
        (source / "chroma.sqlite3").write_bytes(b"s" * (100 + i))
        (source / "seg" / "data.bin").write_bytes(b"d" * (50 * (i + 1)))
        out.append(source)
    return out


def rewrite(packed: Path, keep: int) -> None:
    """The tar with only its first ``keep`` members: still a readable tar."""
    with tarfile.open(packed) as tar:
        members = [(m, tar.extractfile(m)) for m in tar.getmembers()[:keep]]
        blobs = [(m, f.read() if f else b"") for m, f in members]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as out:
        for member, body in blobs:
            out.addfile(member, io.BytesIO(body))
    packed.write_bytes(buf.getvalue())


def test_a_packed_tar_unpacks_to_the_sources_in_apply_order(tmp_path: Path) -> None:
    given = sources(tmp_path / "in", 3)
    packed = tmp_path / "s.tar"
    pack(given, packed)
    got = unpack(packed, tmp_path / "out", 3, 10**6, "s.tar")
    assert got == [tmp_path / "out" / f"{i:04d}" for i in range(3)]
    for src, out in zip(given, got, strict=True):
        assert (out / "seg" / "data.bin").read_bytes() == (src / "seg" / "data.bin").read_bytes()
    assert not packed.exists()  # the tar is deleted once extracted


@pytest.mark.parametrize(
    ("keep", "count"),
    [
        (-1, 2),  # cut before the end list (a valid, shorter tar)
        (3, 2),  # cut inside the second source
        (None, 1),  # whole, but not the count the marker names
    ],
)
def test_a_tar_that_is_not_whole_applies_nothing(
    tmp_path: Path, keep: int | None, count: int
) -> None:
    packed = tmp_path / "s.tar"
    pack(sources(tmp_path / "in", 2), packed)
    if keep is not None:
        with tarfile.open(packed) as tar:
            names = tar.getnames()
        assert names[-1] == END_NAME
        rewrite(packed, keep if keep >= 0 else len(names) + keep)
    assert unpack(packed, tmp_path / "out", count, 10**6, "s.tar") is None


def test_a_source_listed_empty_is_not_whole(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    packed = tmp_path / "s.tar"
    pack([*sources(tmp_path / "in", 1), empty], packed)
    assert unpack(packed, tmp_path / "out", 2, 10**6, "s.tar") is None
