"""The AppConfig adapter with botocore's Stubber (moto has no AppConfig data plane): the
session, an unchanged poll, and each error it translates."""

from __future__ import annotations

import io
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from snapmerge import aws
from snapmerge.adapters.appconfig import AppConfigProfile
from snapmerge.errors import MissingResourceError, StoreError
from tests.unit.adapters.faults import Unreachable

SESSION = {
    "ApplicationIdentifier": "snapmerge",
    "EnvironmentIdentifier": "prod",
    "ConfigurationProfileIdentifier": "flags",
}


def _config(body: bytes, token: str) -> dict[str, Any]:
    return {
        "NextPollConfigurationToken": token,
        "NextPollIntervalInSeconds": 60,
        "ContentType": "application/json",
        "Configuration": StreamingBody(io.BytesIO(body), len(body)),
    }


def _stubbed() -> tuple[Any, Stubber]:
    client = aws.client("appconfigdata")
    stub = Stubber(client)
    stub.add_response("start_configuration_session", {"InitialConfigurationToken": "t0"}, SESSION)
    return client, stub


def test_latest_content_and_an_unchanged_poll() -> None:
    client, stub = _stubbed()
    stub.add_response("get_latest_configuration", _config(b'{"a": 1}', "t1"),
                      {"ConfigurationToken": "t0"})  # fmt: skip
    stub.add_response("get_latest_configuration", _config(b"", "t2"),
                      {"ConfigurationToken": "t1"})  # fmt: skip
    with stub:
        profile = AppConfigProfile("snapmerge", "prod", "flags", client)
        assert profile.latest() == b'{"a": 1}'
        assert profile.latest() == b'{"a": 1}'  # empty body: AppConfig says "unchanged"
    stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("code", "status"),
    [("ThrottlingException", 429), ("BadRequestException", 400), ("AccessDeniedException", 403)],
)
def test_refusals_are_store_errors(code: str, status: int) -> None:
    client, stub = _stubbed()
    stub.add_client_error("get_latest_configuration", code, http_status_code=status)
    with stub, pytest.raises(StoreError) as info:
        AppConfigProfile("snapmerge", "prod", "flags", client).latest()
    stub.assert_no_pending_responses()
    assert info.value.code == code and not isinstance(info.value, MissingResourceError)


def test_a_missing_profile_is_missing_resource() -> None:
    client = aws.client("appconfigdata")
    stub = Stubber(client)
    stub.add_client_error("start_configuration_session", "ResourceNotFoundException", 404)
    with stub, pytest.raises(MissingResourceError) as info:
        AppConfigProfile("snapmerge", "prod", "flags", client).latest()
    assert info.value.code == "ResourceNotFoundException"


def test_no_connection_is_a_store_error() -> None:
    with pytest.raises(StoreError) as info:
        AppConfigProfile("snapmerge", "prod", "flags", Unreachable()).latest()
    assert info.value.code == "EndpointConnectionError"
