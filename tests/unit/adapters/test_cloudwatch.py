"""The CloudWatch dashboard/alarm adapter on the embedded server, and each error it translates."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.stub import Stubber

from snapmerge import aws as aws_clients
from snapmerge.adapters.cloudwatch import CloudWatchDashboards
from snapmerge.errors import StoreError
from tests.conftest import AwsEnv
from tests.unit.adapters.faults import Unreachable, refusing

BODY = {"widgets": [{"type": "text", "x": 0, "y": 0, "width": 6, "height": 2,
                     "properties": {"markdown": "hello"}}]}  # fmt: skip


def _alarm(name: str) -> dict[str, Any]:
    return {
        "AlarmName": name,
        "MetricName": "LockHoldTime",
        "Namespace": "ChromaCompaction",
        "Statistic": "Average",
        "Period": 60,
        "EvaluationPeriods": 1,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanThreshold",
    }


def test_puts_a_dashboard_and_an_alarm(aws: AwsEnv) -> None:
    cw = CloudWatchDashboards()
    cw.put_dashboard("adapter-test", json.dumps(BODY))
    cw.put_metric_alarm(_alarm("adapter-test-alarm"))
    raw = aws_clients.client("cloudwatch")
    assert json.loads(raw.get_dashboard(DashboardName="adapter-test")["DashboardBody"]) == BODY
    names = [
        a["AlarmName"] for a in raw.describe_alarms(AlarmNamePrefix="adapter-test")["MetricAlarms"]
    ]
    assert names == ["adapter-test-alarm"]


def test_validation_messages_in_an_accepted_reply_are_a_refusal(aws: AwsEnv) -> None:
    client = aws_clients.client("cloudwatch")
    stub = Stubber(client)
    messages = [{"DataPath": "/widgets/0", "Message": "Should have at most 1 items"}]
    stub.add_response("put_dashboard", {"DashboardValidationMessages": messages})
    with stub, pytest.raises(StoreError) as info:
        CloudWatchDashboards(client).put_dashboard("d", "{}")
    assert info.value.code == "DashboardValidation" and "at most 1 items" in str(info.value)


@pytest.mark.parametrize(
    ("operation", "code"),
    [
        ("put_dashboard", "InvalidParameterInput"),
        ("put_dashboard", "AccessDenied"),
        ("put_metric_alarm", "LimitExceeded"),
        ("put_metric_alarm", "Throttling"),
    ],
)
def test_refusals_are_store_errors(aws: AwsEnv, operation: str, code: str) -> None:
    with refusing("cloudwatch", operation, code) as client:
        cw = CloudWatchDashboards(client)
        with pytest.raises(StoreError) as info:
            if operation == "put_dashboard":
                cw.put_dashboard("d", "{}")
            else:
                cw.put_metric_alarm(_alarm("a"))
    assert info.value.code == code


def test_no_connection_is_a_store_error() -> None:
    with pytest.raises(StoreError) as info:
        CloudWatchDashboards(Unreachable()).put_dashboard("d", "{}")
    assert info.value.code == "EndpointConnectionError"
