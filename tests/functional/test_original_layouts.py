"""Beside the original pipeline's writer and layouts, on both paths (issue 9, parts 2, 3 and 7).

The original writer (``Rig.original_publish``, written from its documented behaviour) downloads
a whole version, adds records, uploads every file to a new ``YYYYMMDD_HHMMSS`` prefix with a
fresh ``.snapshot_hash``, and writes the pointer without a condition. Its verifier recomputes the
hash of a downloaded version; :func:`original_verifier` does the same here, independently.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path

import pytest

from snapmerge import synth
from snapmerge.domain import LATEST_DIRECT, Keys
from snapmerge.errors import SnapshotError
from snapmerge.snapshots import MANIFEST_NAME
from snapmerge.transfer import upload_directory
from tests.conftest import AwsEnv
from tests.functional.merge_rig import DB, PATHS, Crash, Rig, crash_at, make_rig, rows


@pytest.fixture
def rig(aws: AwsEnv, tmp_path: Path) -> Rig:
    return make_rig(aws.bucket, aws.table, tmp_path)


def original_verifier(directory: Path) -> dict[str, object]:
    """Recompute a downloaded version's hash the way the original verifier does: walk the tree,
    skip ``*.tmp``, ``*.log`` and ``.snapshot_hash`` by relative path, sort by relative path,
    md5 each file, md5 the ``"<md5>  <path>\\n"`` lines."""
    found = []
    for top, _, names in os.walk(directory):
        for name in names:
            full = os.path.join(top, name)
            rel = os.path.relpath(full, directory)
            if any(fnmatch.fnmatch(rel, p) for p in ("*.tmp", "*.log", ".snapshot_hash")):
                continue
            found.append((rel, full))
    found.sort()
    total = hashlib.md5(usedforsecurity=False)
    size = 0
    for rel, full in found:
        with open(full, "rb") as handle:
            total.update(
                f"{hashlib.md5(handle.read(), usedforsecurity=False).hexdigest()}  {rel}\n".encode()
            )
        size += os.path.getsize(full)
    return {
        "directory_hash": total.hexdigest(),
        "algorithm": "md5",
        "file_count": len(found),
        "total_size_bytes": size,
    }


def stored_hash(directory: Path) -> dict[str, object]:
    raw = json.loads((directory / ".snapshot_hash").read_text())
    return {k: raw[k] for k in ("directory_hash", "algorithm", "file_count", "total_size_bytes")}


# -- part 2: a manifest copied forward by the original writer --------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_original_version_on_top_of_ours_with_a_copied_manifest_is_original_format(
    rig: Rig, path: str
) -> None:
    base = rows(1, 10)
    rig.seed(base)
    ours = rows(2, 4, start=100)
    mine = rig.merger(path).run(rig.batch("a", [ours]))
    # a manifest inside our prefix (as snapmerge wrote them before the commit log) that the
    # original writer's copy carries forward into its own version
    manifest = rig.store.manifest(mine.version)
    assert manifest is not None
    rig.blobs.put(
        Keys.version_prefix(DB, mine.version) + MANIFEST_NAME, manifest.to_json().encode()
    )
    theirs = rows(3, 6, start=200)
    original = rig.original_publish(theirs)
    assert rig.blobs.get(Keys.version_prefix(DB, original) + MANIFEST_NAME) is not None
    assert rig.store.manifest(original) is None  # it names another version: ignored

    later = rows(4, 3, start=300)
    result = rig.merger(path).run(rig.batch("b", [later]))

    assert result.base_version == original
    assert result.total_embeddings == len(base) + 4 + 6 + 3
    assert rig.snapshot() == synth.expected_state([base, ours, theirs, later])
    published = rig.store.manifest(result.version)
    assert published is not None and published.root == original and published.height == 1


# -- part 3: no pointer, only the original latest/ layout ---------------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_latest_layout_is_the_base_when_there_is_no_pointer(rig: Rig, path: str) -> None:
    old = rows(1, 12)
    local = rig.root / "latest"
    synth.write_index(rig.engine, local, old, DB.value)
    upload_directory(rig.blobs, local, Keys.legacy_latest_prefix(DB))
    fresh = rows(2, 4, start=100)
    puts: list[tuple[str, object, bool]] = []
    put = rig.blobs.put

    def spy(key: str, body: bytes, **kwargs: object) -> str:
        if key == Keys.pointer(DB):
            puts.append((key, kwargs.get("if_match"), bool(kwargs.get("if_none_match"))))
        return put(key, body, **kwargs)  # type: ignore[arg-type]

    rig.blobs.put = spy  # type: ignore[method-assign]
    result = rig.merger(path).run(rig.batch("a", [fresh]))

    assert result.base_version == LATEST_DIRECT
    assert puts == [(Keys.pointer(DB), None, True)]  # the first publish: If-None-Match
    assert rig.snapshot() == synth.expected_state([old, fresh])
    assert rig.blobs.list(Keys.legacy_latest_prefix(DB))  # nobody writes or deletes latest/


# -- part 7: the .snapshot_hash describes the version it sits in ----------------------------------
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("base_kind", ["original", "snapmerge"])
def test_snapshot_hash_of_a_published_version_passes_the_original_verifier(
    rig: Rig, path: str, base_kind: str
) -> None:
    rig.seed(rows(1, 10))
    if base_kind == "original":  # a base whose own hash the merge must not carry forward
        rig.original_publish(rows(2, 3, start=50))
    result = rig.merger(path).run(rig.batch("a", [rows(3, 4, start=100)]))

    downloaded = rig.download(Keys.version_prefix(DB, result.version))
    assert stored_hash(downloaded) == original_verifier(downloaded)


def test_the_verifier_rejects_a_hash_copied_from_another_version(rig: Rig) -> None:
    """Negative control: the recomputation really tells versions apart."""
    rig.seed(rows(1, 10))
    first = rig.merger("legacy").run(rig.batch("a", [rows(2, 4, start=100)]))
    second = rig.merger("legacy").run(rig.batch("b", [rows(3, 4, start=200)]))
    old = rig.download(Keys.version_prefix(DB, first.version))
    new = rig.download(Keys.version_prefix(DB, second.version))
    (new / ".snapshot_hash").write_bytes((old / ".snapshot_hash").read_bytes())
    assert stored_hash(new) != original_verifier(new)


@pytest.mark.parametrize("path", PATHS)
def test_retry_whose_publish_lies_under_an_original_version_stops_undecided(
    rig: Rig, path: str
) -> None:
    """The original writer records no base: whether a's publish is under its version cannot be
    told, so the retry neither re-applies (could revert) nor skips (could lose) — it stops."""
    rig.seed(rows(1, 10))
    request = rig.batch("a", [rows(2, 4, start=100)])
    with pytest.raises(Crash):
        rig.merger(path, crash_at("after_swap")).run(request)
    original = rig.original_publish(rows(3, 2, start=200))

    with pytest.raises(
        SnapshotError, match=rf"below {original} reaches a version with no manifest"
    ):
        rig.merger(path).run(request)
    pointer = rig.store.read_pointer()
    assert pointer is not None and pointer.version == original
    assert rig.blobs.list("intermediate/a/")
