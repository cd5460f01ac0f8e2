"""The single-object S3 adapter on the embedded server: conditional reads and writes, and each
error it translates."""

from __future__ import annotations

import pytest

from snapmerge.adapters.s3_object import S3Object
from snapmerge.errors import MissingResourceError, PointerConflictError, StoreError
from tests.conftest import AwsEnv
from tests.unit.adapters.faults import Buggy, Unreachable, refusing


def test_create_read_and_conditional_rewrite(aws: AwsEnv) -> None:
    obj = S3Object(aws.bucket, "docs/a.json")
    assert obj.etag() is None  # nothing there: a HEAD's 404 is an answer, not an error
    first = obj.write(b"{}", content_type="application/json")  # If-None-Match: *
    blob = obj.read()
    assert (blob.body, blob.etag) == (b"{}", first) and obj.etag() == first
    assert obj.read_if_changed(first) is None  # a 304: unchanged, no body
    second = obj.write(b'{"a": 1}', if_match=first)
    changed = obj.read_if_changed(first)
    assert changed is not None and (changed.body, changed.etag) == (b'{"a": 1}', second)


def test_a_lost_condition_is_a_pointer_conflict(aws: AwsEnv) -> None:
    obj = S3Object(aws.bucket, "docs/b.json")
    first = obj.write(b"1")
    with pytest.raises(PointerConflictError):
        obj.write(b"2")  # create, but it exists
    obj.write(b"3", if_match=first)
    with pytest.raises(PointerConflictError) as info:
        obj.write(b"4", if_match=first)  # stale ETag
    assert info.value.expected == first
    assert obj.read().body == b"3"  # neither refused write landed


def test_a_missing_object_is_missing_resource(aws: AwsEnv) -> None:
    with pytest.raises(MissingResourceError) as info:
        S3Object(aws.bucket, "docs/none.json").read()
    assert info.value.code == "NoSuchKey"


def test_no_bucket_is_a_store_error(aws: AwsEnv) -> None:
    with pytest.raises(StoreError) as info:
        S3Object(f"{aws.bucket}-missing", "k").write(b"x")
    assert info.value.code == "NoSuchBucket"


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        ("get_object", lambda o: o.read()),
        ("put_object", lambda o: o.write(b"x", if_match='"e"')),
        ("head_object", lambda o: o.etag()),
    ],
)
@pytest.mark.parametrize(("code", "status"), [("AccessDenied", 403), ("SlowDown", 503)])
def test_access_denied_and_throttling_are_store_errors(
    aws: AwsEnv, operation: str, call: object, code: str, status: int
) -> None:
    with refusing("s3", operation, code, status) as client, pytest.raises(StoreError) as info:
        call(S3Object(aws.bucket, "k", client))  # type: ignore[operator]
    assert info.value.code == code
    assert not isinstance(info.value, (MissingResourceError, PointerConflictError))


def test_no_connection_is_a_store_error_and_a_bug_passes_through() -> None:
    with pytest.raises(StoreError) as info:
        S3Object("b", "k", Unreachable()).read()
    assert info.value.code == "EndpointConnectionError"
    with pytest.raises(KeyError):
        S3Object("b", "k", Buggy()).etag()
