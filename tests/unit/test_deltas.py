"""Fetching deltas in both formats, and refusing every kind of unsafe tarball."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.deltas import fetch_delta, pack_directory, safe_extract
from snapmerge.errors import MergeInputError
from snapmerge.transfer import upload_directory

CAP = 1_000_000


def fake_chroma(root: Path) -> Path:
    (root / "seg").mkdir(parents=True)
    (root / "chroma.sqlite3").write_bytes(b"sqlite" * 50)
    (root / "seg" / "data_level0.bin").write_bytes(b"\x07" * 500)
    return root


def tarball(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    """A tarball built member by member, so each test can plant exactly one bad entry."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def regular(name: str, data: bytes = b"ok") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


BAD_MEMBERS: dict[str, Callable[[], tuple[tarfile.TarInfo, bytes | None]]] = {
    "absolute path": lambda: regular("/etc/evil"),
    "dot-dot": lambda: regular("seg/../../evil"),
    "symlink": lambda: special("seg/link", tarfile.SYMTYPE, "/etc/passwd"),
    "hardlink": lambda: special("seg/hard", tarfile.LNKTYPE, "chroma.sqlite3"),
    "char device": lambda: special("seg/tty", tarfile.CHRTYPE),
    "block device": lambda: special("seg/sda", tarfile.BLKTYPE),
    "fifo": lambda: special("seg/pipe", tarfile.FIFOTYPE),
}


@pytest.mark.parametrize("kind", sorted(BAD_MEMBERS))
def test_each_malicious_member_is_refused_and_nothing_is_extracted(
    kind: str, tmp_path: Path
) -> None:
    bad = BAD_MEMBERS[kind]()
    tar = tarball(tmp_path / "bad.tar.gz", regular("chroma.sqlite3"), bad)
    dest = tmp_path / "dest"
    with pytest.raises(MergeInputError) as info:
        safe_extract(tar, dest, CAP)
    assert repr(bad[0].name) in str(info.value)
    assert not dest.exists() or list(dest.iterdir()) == []  # the good member was not written


def test_a_symlinked_directory_cannot_smuggle_a_later_member_out(tmp_path: Path) -> None:
    tar = tarball(
        tmp_path / "t.tar.gz",
        special("escape", tarfile.SYMTYPE, str(tmp_path / "outside")),
        regular("escape/chroma.sqlite3"),
    )
    with pytest.raises(MergeInputError, match="'escape'"):
        safe_extract(tar, tmp_path / "dest", CAP)
    assert not (tmp_path / "outside").exists()


def test_total_size_over_the_cap_is_refused(tmp_path: Path) -> None:
    tar = tarball(
        tmp_path / "big.tar.gz",
        regular("chroma.sqlite3", b"a" * 600),
        regular("seg/x.bin", b"\0" * 600),  # compresses to nothing, still counts in full
    )
    with pytest.raises(MergeInputError, match=r"'seg/x\.bin'.*cap of 1000"):
        safe_extract(tar, tmp_path / "dest", max_bytes=1000)
    safe_extract(tar, tmp_path / "ok", max_bytes=1200)  # control: at the cap is fine
    assert (tmp_path / "ok" / "seg" / "x.bin").stat().st_size == 600


def test_an_unreadable_tarball_is_a_merge_input_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not a tarball at all")
    with pytest.raises(MergeInputError, match="unreadable"):
        safe_extract(junk, tmp_path / "dest", CAP)


@pytest.mark.parametrize(("name", "gzip"), [("delta.tar.gz", True), ("delta.tar", False)])
def test_tarball_delta_fetches(name: str, gzip: bool, tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    src = fake_chroma(tmp_path / "src")
    blobs.upload_file(f"words/delta/run1/{name}", pack_directory(src, tmp_path / name, gzip))
    got = fetch_delta(blobs, f"words/delta/run1/{name}", tmp_path / "dest", max_bytes=CAP)
    assert got == tmp_path / "dest"
    assert (got / "seg" / "data_level0.bin").read_bytes() == b"\x07" * 500


def test_tarball_with_one_top_level_folder_returns_that_folder(tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    fake_chroma(tmp_path / "src" / "delta")
    blobs.upload_file("d.tgz", pack_directory(tmp_path / "src", tmp_path / "d.tgz", gzip=True))
    got = fetch_delta(blobs, "d.tgz", tmp_path / "dest", max_bytes=CAP)
    assert got == tmp_path / "dest" / "delta"


def test_raw_directory_delta_fetches_with_or_without_slash(tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    upload_directory(blobs, fake_chroma(tmp_path / "src"), "lines/delta/abc123/")
    for i, key in enumerate(("lines/delta/abc123/", "lines/delta/abc123")):
        got = fetch_delta(blobs, key, tmp_path / f"dest{i}", max_bytes=CAP)
        assert (got / "chroma.sqlite3").read_bytes() == b"sqlite" * 50


def test_raw_directory_over_the_cap_is_refused(tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    upload_directory(blobs, fake_chroma(tmp_path / "src"), "lines/delta/big/")
    with pytest.raises(MergeInputError, match="cap"):
        fetch_delta(blobs, "lines/delta/big/", tmp_path / "dest", max_bytes=100)


def test_empty_prefix_is_a_merge_input_error(tmp_path: Path) -> None:
    with pytest.raises(MergeInputError, match="empty"):
        fetch_delta(MemoryBlobStore(), "words/delta/none/", tmp_path / "dest", max_bytes=CAP)


@pytest.mark.parametrize("as_tarball", [True, False])
def test_not_a_chroma_directory(as_tarball: bool, tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    src = tmp_path / "src"
    (src / "seg").mkdir(parents=True)
    (src / "seg" / "header.bin").write_bytes(b"h")
    if as_tarball:
        key = "words/delta/r/delta.tar.gz"
        blobs.upload_file(key, pack_directory(src, tmp_path / "t.tar.gz", gzip=True))
    else:
        key = "words/delta/r/"
        upload_directory(blobs, src, key)
    with pytest.raises(MergeInputError, match="is not a Chroma directory"):
        fetch_delta(blobs, key, tmp_path / "dest", max_bytes=CAP)


def test_an_object_name_escaping_the_prefix_is_refused(tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    blobs.put("words/delta/x/chroma.sqlite3", b"db")
    blobs.put("words/delta/x/../../../evil", b"boom")
    with pytest.raises(MergeInputError, match="outside"):
        fetch_delta(blobs, "words/delta/x/", tmp_path / "d" / "dest", max_bytes=CAP)
    assert not (tmp_path / "evil").exists()


# -- limits enforced while reading, and errors that name the S3 key ---------------------------


def test_a_directory_delta_over_the_cap_stops_downloading(tmp_path: Path) -> None:
    """Before: all 20 MiB were written, then the total was compared with the cap."""
    blobs = MemoryBlobStore()
    upload_directory(blobs, fake_chroma(tmp_path / "src"), "words/delta/huge/")
    for i in range(20):
        blobs.put(f"words/delta/huge/seg/part-{i:02d}.bin", b"\0" * 2**20)
    dest = tmp_path / "dest"
    with pytest.raises(MergeInputError, match=r"words/delta/huge/ is larger than the cap"):
        fetch_delta(blobs, "words/delta/huge/", dest, max_bytes=2**20)
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert written <= 2**20


def test_a_directory_delta_with_too_many_objects_is_refused_before_download(
    tmp_path: Path,
) -> None:
    blobs = MemoryBlobStore()
    upload_directory(blobs, fake_chroma(tmp_path / "src"), "words/delta/many/")
    for i in range(12):
        blobs.put(f"words/delta/many/seg/{i}", b"")
    dest = tmp_path / "dest"
    with pytest.raises(MergeInputError, match=r"words/delta/many/ holds 14 objects.*cap of 10"):
        fetch_delta(blobs, "words/delta/many/", dest, max_bytes=CAP, max_members=10)
    assert list(dest.rglob("*")) == []


def _many_members(path: Path, count: int, *, then_a_link: bool = False) -> Path:
    with tarfile.open(path, "w") as tar:
        for i in range(count):
            tar.addfile(tarfile.TarInfo(f"seg/{i:05d}"), io.BytesIO(b""))
        if then_a_link:  # a member that is refused whenever it is read
            link = tarfile.TarInfo("seg/link")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(link)
    return path


def test_a_tarball_with_too_many_members_is_refused(tmp_path: Path) -> None:
    """Before: 30,000 empty members were all read, checked and extracted (14 s)."""
    tar = _many_members(tmp_path / "many.tar", 11)
    dest = tmp_path / "dest"
    with pytest.raises(MergeInputError, match=r"words/delta/r/delta.tar has more than 10 members"):
        safe_extract(tar, dest, CAP, name="words/delta/r/delta.tar", max_members=10)
    assert not dest.exists() or list(dest.iterdir()) == []
    safe_extract(tar, tmp_path / "ok", CAP, max_members=11)  # control: at the cap is fine
    assert len(list((tmp_path / "ok" / "seg").iterdir())) == 11


def test_reading_stops_at_the_first_member_past_the_cap(tmp_path: Path) -> None:
    """Members after the cap are never read: the link after them goes unnoticed."""
    tar = _many_members(tmp_path / "g.tar", 11, then_a_link=True)
    with pytest.raises(MergeInputError, match="'seg/link' is a link"):
        safe_extract(tar, tmp_path / "control", CAP, max_members=100)  # reading on: it is seen
    with pytest.raises(MergeInputError, match="more than 10 members"):
        safe_extract(tar, tmp_path / "dest", CAP, max_members=10)


def test_a_compaction_run_prefix_is_read_as_its_tarball(tmp_path: Path) -> None:
    """The original's CompactionRun producer reports ``{db}/delta/{run}/`` and stores
    ``delta.tar.gz`` under it, packed from '.'."""
    blobs = MemoryBlobStore()
    src = fake_chroma(tmp_path / "src")
    with tarfile.open(tmp_path / "run.tar.gz", "w:gz") as tar:
        tar.add(src, arcname=".")
    blobs.upload_file("words/delta/run9/delta.tar.gz", tmp_path / "run.tar.gz")
    got = fetch_delta(blobs, "words/delta/run9/", tmp_path / "dest", max_bytes=CAP)
    assert (got / "seg" / "data_level0.bin").read_bytes() == b"\x07" * 500
    assert not (got / "delta.tar.gz").exists()


def test_a_tarball_over_the_cap_is_not_downloaded_whole(tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    blobs.put("words/delta/r/delta.tar.gz", b"\0" * 5000)
    with pytest.raises(MergeInputError, match=r"delta words/delta/r/delta.tar.gz is larger"):
        fetch_delta(blobs, "words/delta/r/delta.tar.gz", tmp_path / "dest", max_bytes=1000)


def test_tarball_errors_name_the_s3_key_not_the_scratch_file(tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    tar = tarball(tmp_path / "bad.tar.gz", regular("chroma.sqlite3"), regular("/etc/evil"))
    blobs.upload_file("lines/delta/run3/delta.tar.gz", tar)
    with pytest.raises(MergeInputError) as info:
        fetch_delta(blobs, "lines/delta/run3/delta.tar.gz", tmp_path / "dest", max_bytes=CAP)
    assert "tarball lines/delta/run3/delta.tar.gz: member '/etc/evil'" in str(info.value)
    assert str(tmp_path) not in str(info.value)
