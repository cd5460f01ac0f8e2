"""Metric sources: EMF JSON-lines files (strict and lenient) and CloudWatch Logs (embedded moto)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from rollout.metric_names import DEFAULT_NAMESPACE
from rollout.sources import (
    CloudWatchLogsSource,
    EmfFileSource,
    MalformedMetricsError,
    MetricRecord,
    parse_emf,
)
from snapmerge import aws as aws_clients
from snapmerge.domain import MergePath
from tests.conftest import AwsEnv


def emf(path: str, ts: int, hold: Any = 10.0, namespace: str = DEFAULT_NAMESPACE) -> str:
    blob = {
        "_aws": {
            "Timestamp": ts,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["MergePath", "Collection"]],
                    "Metrics": [
                        {"Name": "LockHoldTime", "Unit": "Milliseconds"},
                        {"Name": "CASFailures", "Unit": "Count"},
                    ],
                }
            ],
        },
        "MergePath": path,
        "Collection": "words",
        "execution_id": f"exec-{ts}",
        "LockHoldTime": hold,
        "CASFailures": [1.0, 1.0],
    }
    return json.dumps(blob)


def test_parse_emf_splits_values_and_metadata() -> None:
    record = parse_emf(json.loads(emf("two_phase", 1000)))
    assert record == MetricRecord(
        MergePath.TWO_PHASE,
        "words",
        1000,
        {"LockHoldTime": 10.0, "CASFailures": 2.0},  # a list is summed
        {"execution_id": "exec-1000"},
    )


def test_file_source_reads_a_window_in_time_order(tmp_path: Path) -> None:
    path = tmp_path / "emf.jsonl"
    lines = [emf("legacy", 3000), "", emf("two_phase", 1000), emf("two_phase", 2000)]
    path.write_text("\n".join(lines) + "\n")
    source = EmfFileSource(path)
    assert [r.timestamp_ms for r in source.records()] == [1000, 2000, 3000]
    assert [r.timestamp_ms for r in source.records(since_ms=2000)] == [2000, 3000]
    assert [r.timestamp_ms for r in source.records(1000, 3000)] == [1000, 2000]
    assert EmfFileSource(tmp_path / "missing.jsonl").records() == []


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ('{"_aws": {"Timestamp": 1', "Expecting"),  # truncated write
        ('{"level": "INFO", "message": "hi"}', "not an EMF object"),
        (emf("canary", 5), "MergePath"),
        (emf("legacy", 5, namespace="Other"), "namespace"),
        (emf("legacy", 5, hold="fast"), "non-numeric"),
    ],
)
def test_malformed_line_is_named_or_skipped_and_counted(
    tmp_path: Path, bad: str, problem: str
) -> None:
    path = tmp_path / "emf.jsonl"
    path.write_text("\n".join([emf("legacy", 1), bad, emf("two_phase", 2)]) + "\n")

    with pytest.raises(MalformedMetricsError, match=problem) as info:
        EmfFileSource(path).records()
    assert info.value.line == 2
    assert f"{path}:2:" in str(info.value)

    lenient = EmfFileSource(path, strict=False)
    assert [r.path for r in lenient.records()] == [MergePath.LEGACY, MergePath.TWO_PHASE]
    assert (lenient.skipped, lenient.skipped_lines) == (1, [2])


def put_events(group: str, messages: list[tuple[int, str]]) -> None:
    logs = aws_clients.client("logs")
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="2025/01/01/[$LATEST]abc")
    logs.put_log_events(
        logGroupName=group,
        logStreamName="2025/01/01/[$LATEST]abc",
        logEvents=[{"timestamp": ts, "message": m} for ts, m in messages],
    )


class CountingClient:
    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def filter_log_events(self, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner.filter_log_events(**kwargs)


def test_cloudwatch_logs_source_pages_and_keeps_only_our_emf(aws: AwsEnv) -> None:
    group = f"/aws/lambda/compaction-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    ours = [(now - 5000 + i * 1000, emf("two_phase" if i % 2 else "legacy", now - 5000 + i * 1000))
            for i in range(5)]  # fmt: skip
    noise = [
        (now - 4500, "START RequestId: 1 Version: $LATEST"),
        (now - 3500, '{"level":"INFO","message":"decision","variant":"legacy"}'),
        (now - 2500, emf("legacy", now - 2500, namespace="SomebodyElse")),
    ]
    put_events(group, sorted(ours + noise))

    client = CountingClient(aws_clients.client("logs"))
    source = CloudWatchLogsSource(group, client, page_size=2)
    records = source.records()
    assert client.calls >= 4  # 8 events, 2 a page: every page was read
    assert [r.timestamp_ms for r in records] == [ts for ts, _ in ours]
    assert [r.path for r in records][:2] == [MergePath.LEGACY, MergePath.TWO_PHASE]
    assert source.ignored == len(noise)

    window = source.records(since_ms=now - 4000, until_ms=now - 2000)
    assert [r.timestamp_ms for r in window] == [now - 4000, now - 3000]


def test_cloudwatch_logs_source_missing_group_is_empty(aws: AwsEnv) -> None:
    assert CloudWatchLogsSource(f"/aws/lambda/none-{uuid.uuid4().hex[:8]}").records() == []
