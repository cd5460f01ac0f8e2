"""The CloudWatch Logs adapter on the embedded server: pages, and each error it translates."""

from __future__ import annotations

import time
import uuid

import pytest

from snapmerge import aws as aws_clients
from snapmerge.adapters.cloudwatch_logs import CloudWatchLogs
from snapmerge.errors import MissingResourceError, StoreError
from tests.conftest import AwsEnv
from tests.unit.adapters.faults import Buggy, Unreachable, refusing


def _group_with(messages: list[str]) -> str:
    group = f"/aws/lambda/adapter-{uuid.uuid4().hex[:8]}"
    logs = aws_clients.client("logs")
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    now = int(time.time() * 1000)
    events = [{"timestamp": now + i, "message": m} for i, m in enumerate(messages)]
    logs.put_log_events(logGroupName=group, logStreamName="s", logEvents=events)
    return group


def test_pages_through_a_group_to_the_last_token(aws: AwsEnv) -> None:
    messages = [f"line {i}" for i in range(5)]
    group = _group_with(messages)
    logs = CloudWatchLogs()
    seen, token, pages = [], None, 0
    while True:
        page = logs.filter_page(group, limit=2, token=token)
        seen.extend(page.messages)
        pages += 1
        if page.next_token is None:
            break
        token = page.next_token
    assert seen == messages and pages == 3


def test_a_missing_group_is_missing_resource(aws: AwsEnv) -> None:
    with pytest.raises(MissingResourceError) as info:
        CloudWatchLogs().filter_page(f"/aws/lambda/none-{uuid.uuid4().hex[:8]}")
    assert info.value.code == "ResourceNotFoundException"


@pytest.mark.parametrize(
    ("code", "status"), [("ThrottlingException", 400), ("AccessDeniedException", 400)]
)
def test_throttling_and_access_denied_are_store_errors(aws: AwsEnv, code: str, status: int) -> None:
    with (
        refusing("logs", "filter_log_events", code, status) as client,
        pytest.raises(StoreError) as info,
    ):
        CloudWatchLogs(client).filter_page("/aws/lambda/x")
    assert info.value.code == code and not isinstance(info.value, MissingResourceError)
    assert "/aws/lambda/x" in str(info.value)


def test_no_connection_is_a_store_error() -> None:
    client = Unreachable()
    with pytest.raises(StoreError) as info:
        CloudWatchLogs(client).filter_page("/aws/lambda/x")
    assert info.value.code == "EndpointConnectionError" and client.calls == 1


def test_an_exception_that_is_not_the_sdks_passes_through() -> None:
    with pytest.raises(KeyError):
        CloudWatchLogs(Buggy()).filter_page("/aws/lambda/x")
