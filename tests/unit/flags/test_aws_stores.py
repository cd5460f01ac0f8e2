"""S3 and SSM stores against the embedded (moto) server; AppConfig with botocore's Stubber.
Every AWS failure reaches the caller as a project error (StoreError and its subclasses)."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from flags.document import FlagDocumentError
from flags.store_aws import AppConfigFlagStore, ReadOnlyStoreError, S3Store, SSMStore
from flags.stores import FileStore
from snapmerge import aws
from snapmerge.errors import FlagDocumentConflictError, MissingResourceError, StoreError
from tests.conftest import AwsEnv
from tests.unit.flags.helpers import kill, make_doc


class Recording:
    """A client proxy that records each get_object's outcome (body or 304)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.outcomes: list[str] = []
        self.exceptions = client.exceptions

    def get_object(self, **kwargs: Any) -> Any:
        try:
            response = self._client.get_object(**kwargs)
        except Exception as exc:
            self.outcomes.append(str(getattr(exc, "response", {}).get("Error", {}).get("Code")))
            raise
        self.outcomes.append("body")
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_s3_conditional_get_and_put(aws: AwsEnv) -> None:
    client = Recording(aws_client("s3"))
    store = S3Store(aws.bucket, "flags/flags.json", client)
    with pytest.raises(StoreError):
        store.load()  # nothing there yet
    etag = store.save(make_doc(), None)  # If-None-Match: *
    doc, version = store.load()
    assert (doc, version) == (make_doc(), etag)
    assert store.load()[1] == etag
    assert client.outcomes[-2:] == ["body", "304"]  # the second read was a 304, no body
    with pytest.raises(FlagDocumentConflictError):
        store.save(make_doc(group_size={"default": 3, "boolean_type": False}), None)  # exists
    newer = store.save(make_doc(final_merge_kill_switch=kill(True)), etag)  # If-Match
    with pytest.raises(FlagDocumentConflictError):
        store.save(make_doc(final_merge_kill_switch=kill(False)), etag)  # stale ETag
    assert store.load() == (make_doc(final_merge_kill_switch=kill(True)), newer)
    assert client.outcomes[-1] == "body"


def test_s3_retried_put_that_already_landed_is_not_a_conflict(aws: AwsEnv) -> None:
    store = S3Store(aws.bucket, "flags/retry.json")
    first = store.save(make_doc(), None)
    # what a retried PUT sees: its own bytes are already there, so If-None-Match fails
    assert store.save(make_doc(), None) == first


def test_s3_malformed_object_is_a_document_error(aws: AwsEnv) -> None:
    aws_client("s3").put_object(Bucket=aws.bucket, Key="flags/bad.json", Body=b"[1, 2]")
    with pytest.raises(FlagDocumentError):
        S3Store(aws.bucket, "flags/bad.json").load()


def aws_client(service: str) -> Any:
    return aws.client(service)


def test_ssm_versions_and_conditional_save(aws: AwsEnv) -> None:
    name = f"/snapmerge/flags-{uuid.uuid4().hex[:8]}"
    store = SSMStore(name)
    with pytest.raises(StoreError):
        store.load()
    v1 = store.save(make_doc(), None)
    assert v1 == "1"
    assert store.load() == (make_doc(), "1")
    with pytest.raises(FlagDocumentConflictError):
        store.save(make_doc(), None)
    assert store.save(make_doc(final_merge_kill_switch=kill(True)), "1") == "2"
    with pytest.raises(FlagDocumentConflictError) as info:
        store.save(make_doc(), "1")
    assert info.value.current == "2"
    assert store.load()[0]["final-merge-kill-switch"]["default"] is True


def test_ssm_race_between_check_and_put_is_detected(aws: AwsEnv) -> None:
    """SSM has no CAS: a write landing between our version check and our put is caught after
    the fact by the version the put returns (negative control: the interloper's write itself)."""
    name = f"/snapmerge/flags-{uuid.uuid4().hex[:8]}"
    SSMStore(name).save(make_doc(), None)
    raw = aws_client("ssm")

    class Interloper:
        exceptions = raw.exceptions

        def get_parameter(self, **kwargs: Any) -> Any:
            response = raw.get_parameter(**kwargs)  # we read version 1 ...
            raw.put_parameter(
                Name=name, Value=json.dumps(make_doc()), Type="String", Overwrite=True
            )
            return response  # ... and someone writes version 2 before our put

        def put_parameter(self, **kwargs: Any) -> Any:
            return raw.put_parameter(**kwargs)

    with pytest.raises(FlagDocumentConflictError) as info:
        SSMStore(name, Interloper()).save(make_doc(final_merge_kill_switch=kill(True)), "1")
    assert info.value.current == "3"


def appconfig_client() -> Any:
    return aws.client("appconfigdata")


def _config_response(body: bytes, token: str) -> dict[str, Any]:
    return {
        "NextPollConfigurationToken": token,
        "NextPollIntervalInSeconds": 60,
        "ContentType": "application/json",
        "Configuration": StreamingBody(io.BytesIO(body), len(body)),
    }


def test_appconfig_through_powertools_with_stubber() -> None:
    client = appconfig_client()
    stub = Stubber(client)
    session = {
        "ApplicationIdentifier": "snapmerge",
        "EnvironmentIdentifier": "prod",
        "ConfigurationProfileIdentifier": "flags",
    }
    stub.add_response("start_configuration_session", {"InitialConfigurationToken": "t0"}, session)
    first = json.dumps(make_doc()).encode()
    stub.add_response(
        "get_latest_configuration", _config_response(first, "t1"), {"ConfigurationToken": "t0"}
    )
    # unchanged: AppConfig answers with an empty body, Powertools serves its last value
    stub.add_response(
        "get_latest_configuration", _config_response(b"", "t2"), {"ConfigurationToken": "t1"}
    )
    second = json.dumps(make_doc(final_merge_kill_switch=kill(True))).encode()
    stub.add_response(
        "get_latest_configuration", _config_response(second, "t3"), {"ConfigurationToken": "t2"}
    )
    stub.add_client_error("get_latest_configuration", "ThrottlingException", http_status_code=429)
    with stub:
        store = AppConfigFlagStore("snapmerge", "prod", "flags", client=client)
        doc, v1 = store.load()
        assert doc == make_doc()
        assert store.load()[1] == v1
        doc, v3 = store.load()
        assert v3 != v1 and doc["final-merge-kill-switch"]["default"] is True
        with pytest.raises(StoreError):
            store.load()
    stub.assert_no_pending_responses()


def test_appconfig_is_read_only() -> None:
    store = AppConfigFlagStore("snapmerge", "prod", "flags", client=appconfig_client())
    with pytest.raises(ReadOnlyStoreError, match="AppConfig deployment"):
        store.save(make_doc(), None)


# -- AWS failures come back as the project's errors, through the adapters ---------------------
class Refusing:
    """The embedded client, except that ``operation`` fails as AWS does (a ClientError)."""

    def __init__(self, inner: Any, operation: str, code: str, status: int = 400) -> None:
        self.inner, self.operation, self.code, self.status = inner, operation, code, status
        self.refused = 0
        self.exceptions = inner.exceptions

    def __getattr__(self, name: str) -> Any:
        if name != self.operation:
            return getattr(self.inner, name)

        def refuse(**kwargs: Any) -> Any:
            from botocore.exceptions import ClientError

            self.refused += 1
            reply = {
                "Error": {"Code": self.code},
                "ResponseMetadata": {"HTTPStatusCode": self.status},
            }
            raise ClientError(reply, name)  # type: ignore[arg-type]

        return refuse


@pytest.mark.parametrize(
    ("operation", "code", "status"),
    [("get_object", "AccessDenied", 403), ("put_object", "SlowDown", 503)],
)
def test_s3_store_refusals_are_store_errors(
    aws: AwsEnv, operation: str, code: str, status: int
) -> None:
    S3Store(aws.bucket, "flags/refused.json").save(make_doc(), None)
    client = Refusing(aws_client("s3"), operation, code, status)
    store = S3Store(aws.bucket, "flags/refused.json", client)
    with pytest.raises(StoreError) as info:
        if operation == "get_object":
            store.load()
        else:
            store.save(make_doc(final_merge_kill_switch=kill(True)), None)
    assert client.refused == 1 and info.value.code == code
    assert not isinstance(info.value, (MissingResourceError, FlagDocumentConflictError))


def test_s3_store_missing_document_is_missing_resource(aws: AwsEnv) -> None:
    with pytest.raises(MissingResourceError, match="cannot read flag document: NoSuchKey"):
        S3Store(aws.bucket, "flags/none.json").load()


@pytest.mark.parametrize("operation", ["get_parameter", "put_parameter"])
def test_ssm_store_throttling_is_a_store_error(aws: AwsEnv, operation: str) -> None:
    name = f"/snapmerge/flags-{uuid.uuid4().hex[:8]}"
    SSMStore(name).save(make_doc(), None)
    client = Refusing(aws_client("ssm"), operation, "ThrottlingException")
    with pytest.raises(StoreError) as info:
        SSMStore(name, client).save(make_doc(final_merge_kill_switch=kill(True)), "1")
    assert client.refused == 1 and info.value.code == "ThrottlingException"
    assert SSMStore(name).load()[1] == "1"  # nothing written


def _appconfig_store(body: bytes, envelope: str = "") -> tuple[AppConfigFlagStore, Stubber]:
    client = appconfig_client()
    stub = Stubber(client)
    stub.add_response("start_configuration_session", {"InitialConfigurationToken": "t0"})
    stub.add_response("get_latest_configuration", _config_response(body, "t1"))
    store = AppConfigFlagStore("snapmerge", "prod", "flags", client=client, envelope=envelope)
    return store, stub


@pytest.mark.parametrize(
    ("body", "problem"), [(b"{not json", "not JSON"), (b"[1, 2]", "not an object")]
)
def test_appconfig_content_that_is_no_document_is_a_document_error(
    body: bytes, problem: str
) -> None:
    store, stub = _appconfig_store(body)
    with stub, pytest.raises(FlagDocumentError, match=problem):
        store.load()
    stub.assert_no_pending_responses()


def test_appconfig_envelope_selects_the_document() -> None:
    store, stub = _appconfig_store(json.dumps({"features": make_doc(), "other": 1}).encode(),
                                   envelope="features")  # fmt: skip
    with stub:
        doc, version = store.load()
    assert doc == make_doc() and len(version) == 64


def test_file_store_write_failure_is_a_store_error(tmp_path: Path) -> None:
    """No space, no permission, a path through a file: a StoreError (was the raw OSError)."""
    (tmp_path / "not-a-dir").write_text("x")
    store = FileStore(tmp_path / "not-a-dir" / "flags.json")
    with pytest.raises(StoreError, match="cannot be written"):
        store.save(make_doc(), None)
