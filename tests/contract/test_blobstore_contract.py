"""One BlobStore contract, run against the in-memory fake and the S3 adapter on embedded moto."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.s3_store import S3BlobStore
from snapmerge.errors import PointerConflictError, StoreError
from snapmerge.ports import BlobStore


@pytest.fixture(params=["memory", "s3"])
def blobs(request: pytest.FixtureRequest) -> BlobStore:
    if request.param == "memory":
        return MemoryBlobStore()
    aws = request.getfixturevalue("aws")
    return S3BlobStore(aws.bucket, page_size=7)  # small pages so list() must paginate


def test_get_missing_is_none(blobs: BlobStore) -> None:
    assert blobs.get("nope/key") is None


def test_put_then_get_round_trips_body_metadata_and_quoted_md5_etag(blobs: BlobStore) -> None:
    etag = blobs.put("a/b.txt", b"hello", metadata={"batch": "b1"})
    blob = blobs.get("a/b.txt")
    assert blob is not None
    assert blob.body == b"hello"
    assert blob.etag == etag == f'"{hashlib.md5(b"hello").hexdigest()}"'
    assert dict(blob.metadata) == {"batch": "b1"}


def test_if_none_match_creates_once(blobs: BlobStore) -> None:
    blobs.put("p", b"v1", if_none_match=True)
    with pytest.raises(PointerConflictError) as info:
        blobs.put("p", b"v2", if_none_match=True)
    assert info.value.expected == "*"
    assert info.value.key == "p"
    blob = blobs.get("p")
    assert blob is not None and blob.body == b"v1"


def test_if_match_swaps_only_from_the_etag_read(blobs: BlobStore) -> None:
    first = blobs.put("p", b"v1")
    second = blobs.put("p", b"v2", if_match=first)
    assert second != first
    with pytest.raises(PointerConflictError) as info:
        blobs.put("p", b"v3", if_match=first)  # stale token: someone swapped since
    assert info.value.expected == first
    blob = blobs.get("p")
    assert blob is not None and (blob.body, blob.etag) == (b"v2", second)


def test_if_match_on_a_missing_key_is_a_conflict(blobs: BlobStore) -> None:
    with pytest.raises(PointerConflictError):
        blobs.put("gone", b"v", if_match='"0123456789abcdef0123456789abcdef"')
    assert blobs.get("gone") is None


def test_list_is_sorted_complete_and_prefix_bound(blobs: BlobStore) -> None:
    keys = [f"dir/{i:03d}" for i in range(50)]
    for key in reversed(keys):
        blobs.put(key, b"x")
    blobs.put("dirt/other", b"x")
    blobs.put("elsewhere", b"x")
    assert blobs.list("dir/") == keys
    assert blobs.list("absent/") == []


def test_delete_removes_keys_and_ignores_missing(blobs: BlobStore) -> None:
    for key in ("d/1", "d/2", "d/3"):
        blobs.put(key, b"x")
    blobs.delete(["d/1", "d/3", "d/never"])
    assert blobs.list("d/") == ["d/2"]
    blobs.delete([])
    assert blobs.list("d/") == ["d/2"]


def test_upload_and_download_files(blobs: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00\x01" * 1000)
    blobs.upload_file("files/src.bin", src)
    dest = tmp_path / "deep" / "er" / "out.bin"
    blobs.download_file("files/src.bin", dest)
    assert dest.read_bytes() == src.read_bytes()


def test_download_of_missing_key_is_store_error(blobs: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="files/missing"):
        blobs.download_file("files/missing", tmp_path / "x")


# -- S3 adapter specifics ------------------------------------------------------------------------
def test_s3_other_failures_are_store_errors_naming_the_key(aws: Any) -> None:
    store = S3BlobStore(f"{aws.bucket}-does-not-exist")
    with pytest.raises(StoreError, match="some/key"):
        store.get("some/key")
    with pytest.raises(StoreError, match="some/key"):
        store.put("some/key", b"x", if_none_match=True)


class _RecordingClient:
    """Just enough of an S3 client to see how the adapter batches and translates."""

    def __init__(self, put_error: ClientError | None = None) -> None:
        self.delete_batches: list[int] = []
        self.put_error = put_error

    def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:
        self.delete_batches.append(len(Delete["Objects"]))
        return {}

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        if self.put_error is not None:
            raise self.put_error
        return {"ETag": '"e"'}


def _client_error(code: str, status: int) -> ClientError:
    reply: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(reply, "PutObject")


def test_s3_delete_batches_by_1000() -> None:
    client = _RecordingClient()
    S3BlobStore("b", client=client).delete([f"k{i}" for i in range(2500)])
    assert client.delete_batches == [1000, 1000, 500]


@pytest.mark.parametrize(
    ("code", "status"), [("PreconditionFailed", 412), ("ConditionalRequestConflict", 409)]
)
def test_s3_precondition_codes_become_pointer_conflicts(code: str, status: int) -> None:
    store = S3BlobStore("b", client=_RecordingClient(_client_error(code, status)))
    with pytest.raises(PointerConflictError) as info:
        store.put("ptr", b"v", if_match='"e1"')
    assert info.value.expected == '"e1"'
    with pytest.raises(PointerConflictError) as info:
        store.put("ptr", b"v", if_none_match=True)
    assert info.value.expected == "*"


def test_s3_unconditional_put_failure_is_store_error() -> None:
    store = S3BlobStore("b", client=_RecordingClient(_client_error("SlowDown", 503)))
    with pytest.raises(StoreError, match="ptr"):
        store.put("ptr", b"v")


# -- the fake's fault injection ------------------------------------------------------------------
def test_memory_fail_next_raises_count_times_then_recovers() -> None:
    store = MemoryBlobStore()
    store.fail_next("get", StoreError("injected"), count=2)
    for _ in range(2):
        with pytest.raises(StoreError, match="injected"):
            store.get("k")
    assert store.get("k") is None


def test_memory_fail_next_after_applies_the_write_then_loses_the_reply() -> None:
    store = MemoryBlobStore()
    store.fail_next("put", StoreError("reply lost"), after=True)
    with pytest.raises(StoreError, match="reply lost"):
        store.put("k", b"landed")
    blob = store.get("k")
    assert blob is not None and blob.body == b"landed"


def test_memory_before_put_runs_outside_the_lock_and_can_interleave_a_writer() -> None:
    store = MemoryBlobStore()
    etag = store.put("p", b"v1")
    calls: list[str] = []

    def rival(key: str) -> None:
        calls.append(key)
        if len(calls) == 1:
            store.put(key, b"rival")  # re-enters put: would deadlock if called under the lock

    store.before_put = rival
    with pytest.raises(PointerConflictError):
        store.put("p", b"v2", if_match=etag)
    blob = store.get("p")
    assert blob is not None and blob.body == b"rival"


def test_memory_fail_next_rejects_unknown_operations() -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        MemoryBlobStore().fail_next("head", StoreError("x"))
