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
    MetricsUnavailableError,
    incomplete_read,
    parse_emf,
)
from snapmerge import aws as aws_clients
from snapmerge.domain import MergePath
from snapmerge.errors import StoreError
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


# -- reading everything: empty pages that carry a nextToken, and saying when a read is short ----
class PagedLogsClient:
    """``filter_log_events`` over ``events`` in pages of ``page_size``, with ``empty_runs`` empty
    pages (each carrying a nextToken) before every full page — as the service returns while it
    scans stretches of the group with nothing matching."""

    def __init__(self, events: list[dict[str, Any]], page_size: int, empty_runs: int) -> None:
        self.events, self.page_size, self.empty_runs = events, page_size, empty_runs
        self.calls = 0
        self.empty_pages_served = 0

    def filter_log_events(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        step = int(kwargs.get("nextToken", "0"))
        position, phase = divmod(step, self.empty_runs + 1)
        start = position * self.page_size
        if start >= len(self.events):
            return {"events": []}  # no token: the end
        if phase < self.empty_runs:
            self.empty_pages_served += 1
            return {"events": [], "nextToken": str(step + 1)}
        page = self.events[start : start + self.page_size]
        more = start + self.page_size < len(self.events)
        return {"events": page, **({"nextToken": str(step + 1)} if more else {})}


def _events(n: int) -> list[dict[str, Any]]:
    path = ("legacy", "two_phase")
    return [{"message": emf(path[i % 2], 1_000 + i), "timestamp": 1_000 + i} for i in range(n)]


@pytest.mark.parametrize("empty_runs", [0, 1, 3])
def test_logs_are_read_to_the_end_through_empty_pages(empty_runs: int) -> None:
    client = PagedLogsClient(_events(300), page_size=50, empty_runs=empty_runs)
    source = CloudWatchLogsSource("/aws/lambda/x", client, page_size=50)
    records = source.records()
    assert len(records) == 300
    assert client.empty_pages_served == 6 * empty_runs  # the empty pages were really served
    assert source.last_read.complete and incomplete_read(source) is None


def test_a_read_stopped_early_says_it_is_incomplete() -> None:
    client = PagedLogsClient(_events(300), page_size=50, empty_runs=1)
    source = CloudWatchLogsSource("/aws/lambda/x", client, page_size=50, max_pages=4)
    records = source.records()
    assert len(records) == 100
    problem = incomplete_read(source)
    assert problem is not None and "saw 100 record(s) but the source holds more" in problem


def test_skipped_malformed_lines_make_the_read_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "emf.jsonl"
    path.write_text(emf("legacy", 1) + "\n{broken\n" + emf("two_phase", 2) + "\n")
    source = EmfFileSource(path, strict=False)
    assert len(source.records()) == 2
    problem = incomplete_read(source)
    assert problem is not None and "1 malformed record(s) skipped" in problem


def test_a_missing_emf_file_is_a_clear_error_for_the_controller(tmp_path: Path) -> None:
    with pytest.raises(MetricsUnavailableError, match=r"no EMF metrics file at .*nope.jsonl"):
        EmfFileSource(tmp_path / "nope.jsonl", must_exist=True).records()
    assert EmfFileSource(tmp_path / "nope.jsonl").records() == []  # the report: nothing yet


# -- AWS failures come back as the project's errors (the adapter translates them) -------------
class RefusingLogsClient:
    """A logs client whose FilterLogEvents fails as CloudWatch Logs does (a ClientError)."""

    def __init__(self, code: str) -> None:
        self.code, self.calls = code, 0

    def filter_log_events(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        self.calls += 1
        error = {"Error": {"Code": self.code}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        raise ClientError(error, "FilterLogEvents")  # type: ignore[arg-type]


@pytest.mark.parametrize("code", ["ThrottlingException", "AccessDeniedException"])
def test_a_refused_read_is_a_store_error_with_the_aws_code(code: str) -> None:
    client = RefusingLogsClient(code)
    with pytest.raises(StoreError) as info:
        CloudWatchLogsSource("/aws/lambda/compaction", client).records()
    assert client.calls == 1 and info.value.code == code
    assert "/aws/lambda/compaction" in str(info.value)


def test_a_missing_group_is_no_records_but_only_that() -> None:
    """The one AWS error read as "no executions yet" (negative control: throttling above)."""
    client = RefusingLogsClient("ResourceNotFoundException")
    source = CloudWatchLogsSource("/aws/lambda/compaction", client)
    assert source.records() == [] and client.calls == 1
    assert source.last_read.complete and source.last_read.pages == 1
