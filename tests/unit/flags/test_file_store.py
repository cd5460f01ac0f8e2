"""The local file store: change detection, conditional saves, bad input, concurrent writers."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from flags.document import FlagDocumentError
from flags.stores import FileStore
from snapmerge.errors import FlagDocumentConflictError, StoreError
from tests.unit.flags.helpers import kill, make_doc


def write(path: Path, doc: object) -> None:
    path.write_text(json.dumps(doc))


def test_load_and_version_is_the_content_hash(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "flags.json"
    write(path, make_doc())
    doc, version = FileStore(path).load()
    assert doc == make_doc()
    assert version == hashlib.sha256(path.read_bytes()).hexdigest()


def test_rereads_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write(path, make_doc())
    store = FileStore(path)
    _, v1 = store.load()
    write(path, make_doc(final_merge_kill_switch=kill(True)))
    doc, v2 = store.load()
    assert v2 != v1 and doc["final-merge-kill-switch"]["default"] is True


def test_same_size_rewrite_within_one_mtime_tick_is_seen(tmp_path: Path) -> None:
    """stat cannot see this change (same size, mtime forced back); the racy-window re-read can."""
    path = tmp_path / "flags.json"
    write(path, make_doc(final_merge_kill_switch=kill(False)))
    store = FileStore(path)
    store.load()
    st = os.stat(path)
    body = path.read_text().replace('"default": false', '"default": true ', 1)
    assert len(body) == st.st_size
    path.write_text(body)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.load()[0]["final-merge-kill-switch"]["default"] is True


def test_settled_unchanged_file_is_not_reread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "flags.json"
    write(path, make_doc())
    old = os.stat(path).st_mtime_ns - 10 * 10**9
    os.utime(path, ns=(old, old))
    store = FileStore(path)
    reads: list[Path] = []
    real = Path.read_bytes

    def counting(self: Path) -> bytes:
        reads.append(self)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    _, version = store.load()
    assert store.load()[1] == version
    assert len(reads) == 1  # the second load was answered from stat alone
    write(path, make_doc(final_merge_kill_switch=kill(True)))
    assert store.load()[1] != version


def test_missing_file_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot be read"):
        FileStore(tmp_path / "absent.json").load()


def test_malformed_file_is_a_document_error_with_its_version(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text("{ not json")
    with pytest.raises(FlagDocumentError) as info:
        FileStore(path).load()
    assert info.value.version is not None


def test_loaded_documents_are_the_callers_own(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write(path, make_doc())
    store = FileStore(path)
    doc, _ = store.load()
    doc["group-size"]["default"] = 999
    assert store.load()[0]["group-size"]["default"] == 20


def test_conditional_save(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    store = FileStore(path)
    v1 = store.save(make_doc(), None)  # create
    with pytest.raises(FlagDocumentConflictError):
        store.save(make_doc(), None)  # exists now
    v2 = store.save(make_doc(final_merge_kill_switch=kill(True)), v1)
    assert store.load() == (make_doc(final_merge_kill_switch=kill(True)), v2)
    with pytest.raises(FlagDocumentConflictError) as info:
        store.save(make_doc(), v1)  # stale
    assert info.value.current == v2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_save_refuses_an_invalid_document(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "flags.json")
    with pytest.raises(FlagDocumentError):
        store.save({"final-merge-path": {"default": "warp", "boolean_type": False}}, None)
    assert not (tmp_path / "flags.json").exists()


def _increment(store: FileStore, rounds: int) -> None:
    for _ in range(rounds):
        while True:
            doc, version = store.load()
            doc["group-size"]["default"] += 1
            try:
                store.save(doc, version)
                break
            except FlagDocumentConflictError:
                continue


def test_concurrent_read_modify_write_loses_nothing(tmp_path: Path) -> None:
    """Checker: after W writers x R increments the counter is exactly 20 + W*R."""
    path = tmp_path / "flags.json"
    stores = [FileStore(path, racy_seconds=3600) for _ in range(4)]
    stores[0].save(make_doc(), None)
    threads = [threading.Thread(target=_increment, args=(s, 25)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert FileStore(path).load()[0]["group-size"]["default"] == 20 + 4 * 25


@pytest.mark.parametrize("conditional", [True, False])
def test_interleaved_writers(tmp_path: Path, conditional: bool) -> None:
    """Two writers read the same version, then both write. The conditional save refuses the
    second; the negative control (a save that ignores what it read) silently loses the first."""
    path = tmp_path / "flags.json"
    a, b = FileStore(path), FileStore(path)
    a.save(make_doc(), None)
    doc_a, version_a = a.load()
    doc_b, version_b = b.load()
    doc_a["group-size"]["default"] += 1
    doc_b["group-size"]["default"] += 1
    a.save(doc_a, version_a)
    if conditional:
        with pytest.raises(FlagDocumentConflictError):
            b.save(doc_b, version_b)
        doc_b, version_b = b.load()
        doc_b["group-size"]["default"] += 1
        b.save(doc_b, version_b)
        assert FileStore(path).load()[0]["group-size"]["default"] == 22
    else:
        b.save(doc_b, b.current_version())
        assert FileStore(path).load()[0]["group-size"]["default"] == 21  # one update lost
