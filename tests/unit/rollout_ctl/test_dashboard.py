"""The A/B dashboard shows every declared metric for both paths; alarms watch two_phase only;
deploy puts both on the embedded CloudWatch and they read back unchanged; a refusal is a
StoreError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.stub import Stubber

from rollout import dashboard
from rollout.dashboard import DASHBOARD_METRICS, LATENCY, PATHS
from rollout.metric_names import MetricName
from rollout.plan import RolloutPlan, load_plan
from snapmerge import aws as aws_clients
from snapmerge.domain import MergePath
from snapmerge.errors import StoreError


def _lines(body: dict[str, Any]) -> list[list[Any]]:
    """Every metric line (a metric-math expression line is a one-element list: not one)."""
    return [
        line
        for w in body["widgets"]
        if w["type"] == "metric"
        for line in w["properties"]["metrics"]
        if len(line) > 1
    ]


def test_every_declared_metric_for_both_paths_and_every_collection() -> None:
    body = dashboard.render("NS", ["words", "lines"], "eu-west-1")
    seen = {(line[1], line[3], line[5], line[6]["stat"]) for line in _lines(body)}
    for metric, stats in DASHBOARD_METRICS.items():
        for path in PATHS:
            for collection in ("words", "lines"):
                for stat in stats:
                    assert (metric.value, path.value, collection, stat) in seen
    assert all(
        line[0] == "NS" and line[2] == "MergePath" and line[4] == "Collection"
        for line in _lines(body)
    )
    for metric in LATENCY:
        assert DASHBOARD_METRICS[metric] == ("p50", "p95", "p99")
    for metric in (
        "CASFailures",
        "CASRetries",
        "FallbackToLegacy",
        "MergeErrors",
        "LockContention",
        "ShadowMatched",
        "ShadowMismatched",
        "ChunkCount",
        "BatchesPerPublish",
        "CoalescedBatches",
        "WastedBuilds",
    ):
        assert MetricName(metric) in DASHBOARD_METRICS
    assert all(
        w["properties"]["region"] == "eu-west-1" for w in body["widgets"] if w["type"] == "metric"
    )


def test_wasted_builds_per_publish_divides_each_paths_own_series() -> None:
    body = dashboard.render("NS", ["words", "lines"], "eu-west-1")
    widgets = [
        w["properties"]
        for w in body["widgets"]
        if w["type"] == "metric" and w["properties"]["title"].startswith("Wasted builds per")
    ]
    assert [w["title"].split("— ")[1].split(" ")[0] for w in widgets] == ["words", "lines"]
    for widget, collection in zip(widgets, ["words", "lines"], strict=True):
        inputs = {line[-1]["id"]: line for line in widget["metrics"] if len(line) > 1}
        expressions = [line[0] for line in widget["metrics"] if len(line) == 1]
        assert [e["label"] for e in expressions] == [
            f"{p.value} wasted builds per publish" for p in PATHS
        ]
        for expression, path in zip(expressions, PATHS, strict=True):
            wasted, publishes = expression["expression"].split(" / ")
            assert inputs[wasted][1] == "WastedBuilds" and inputs[wasted][-1]["stat"] == "Sum"
            assert inputs[publishes][1] == "BatchesPerPublish"
            assert inputs[publishes][-1]["stat"] == "SampleCount"  # one sample per publish
            for line in (inputs[wasted], inputs[publishes]):
                assert (line[3], line[5]) == (path.value, collection)
                assert line[-1]["visible"] is False
        assert widget["annotations"]["horizontal"][0]["value"] == 1


def test_widgets_do_not_overlap_and_the_rollout_text_names_the_stages() -> None:
    body = dashboard.render(plan=load_plan())
    cells = set()
    for w in body["widgets"]:
        for x in range(w["x"], w["x"] + w["width"]):
            for y in range(w["y"], w["y"] + w["height"]):
                assert (x, y) not in cells
                cells.add((x, y))
        assert w["x"] + w["width"] <= 24
    text = body["widgets"][0]["properties"]["markdown"]
    assert "5 % → 25 % → 50 % → 100 %" in text and "1 %" not in text
    assert "snapmerge rollout status" in text
    json.dumps(body)  # serialisable as PutDashboard needs


def _returned(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    return [q for q in alarm["Metrics"] if q["ReturnData"]]


def _path_of(query: dict[str, Any]) -> str:
    dims = {d["Name"]: d["Value"] for d in query["MetricStat"]["Metric"]["Dimensions"]}
    return dims["MergePath"]


def test_alarms_only_on_two_phase_guardrails() -> None:
    plan = load_plan()
    alarms = dashboard.alarms(plan, collections=["words"])
    expected = {g.metric for g in plan.guardrails if g.kind != "invariant"}
    assert {a["Metrics"][0]["MetricStat"]["Metric"]["MetricName"] for a in alarms} == expected
    for alarm in alarms:
        assert "two_phase" in alarm["AlarmName"]
        stats = [q for q in alarm["Metrics"] if "MetricStat" in q]
        candidate = [q for q in stats if _path_of(q) == MergePath.TWO_PHASE.value]
        assert len(candidate) == 1, alarm  # every alarm watches the two_phase series
        for q in stats:  # legacy only ever appears as the comparison, never as the alarm
            if _path_of(q) == MergePath.LEGACY.value:
                assert not q["ReturnData"]
        [out] = _returned(alarm)
        assert out is candidate[0] or "cand" in out["Expression"]


def test_absolute_and_relative_thresholds(plan: RolloutPlan) -> None:
    alarms = {
        a["Metrics"][0]["MetricStat"]["Metric"]["MetricName"]: a
        for a in dashboard.alarms(load_plan(), collections=["words"])
    }
    hold = alarms["LockHoldTime"]  # alarm_threshold 1000 ms in the packaged plan
    assert hold["Threshold"] == 1000 and len(hold["Metrics"]) == 1
    assert hold["Metrics"][0]["MetricStat"]["Stat"] == "p95"
    cas = alarms["CASFailures"]
    assert cas["Threshold"] == 0.02 and len(cas["Metrics"]) == 1  # its budget: absolute
    assert "ChunkCount" not in alarms  # invariants need per-batch pairs: the judge checks them


def test_deploy_against_the_embedded_cloudwatch(aws: Any) -> None:
    plan = load_plan()
    body = dashboard.render("ChromaCompaction", ["words"], "us-east-1", plan)
    alarms = dashboard.alarms(plan, collections=["words"], prefix="t")
    result = dashboard.deploy(body, alarms, "snapmerge-test")
    assert result["dashboard"] == "snapmerge-test" and len(result["alarms"]) == len(alarms)
    cw = aws_clients.client("cloudwatch")
    back = json.loads(cw.get_dashboard(DashboardName="snapmerge-test")["DashboardBody"])
    assert back == body
    found = cw.describe_alarms(AlarmNamePrefix="t-")["MetricAlarms"]
    assert {a["AlarmName"] for a in found} == set(result["alarms"])
    by_name = {a["AlarmName"]: a for a in found}
    for request in alarms:
        stored = by_name[request["AlarmName"]]
        assert stored["Threshold"] == request["Threshold"]
        assert stored["ComparisonOperator"] == request["ComparisonOperator"]
        assert [m["Id"] for m in stored["Metrics"]] == [m["Id"] for m in request["Metrics"]]


def test_a_refused_deploy_is_a_store_error_with_the_aws_code(aws: Any) -> None:
    plan = load_plan()
    body = dashboard.render("ChromaCompaction", ["words"], "us-east-1", plan)
    alarms = dashboard.alarms(plan, collections=["words"], prefix="t")
    cw = aws_clients.client("cloudwatch")
    stub = Stubber(cw)
    stub.add_response("put_dashboard", {"DashboardValidationMessages": []})
    stub.add_client_error("put_metric_alarm", "LimitExceeded", http_status_code=400)
    with stub, pytest.raises(StoreError) as info:
        dashboard.deploy(body, alarms, "snapmerge-test", client=cw)
    stub.assert_no_pending_responses()  # the dashboard went in, the first alarm was refused
    assert info.value.code == "LimitExceeded" and alarms[0]["AlarmName"] in str(info.value)

    stub = Stubber(cw)
    problem = [{"DataPath": "/widgets", "Message": "too many widgets"}]
    stub.add_response("put_dashboard", {"DashboardValidationMessages": problem})
    with stub, pytest.raises(StoreError, match="too many widgets"):
        dashboard.deploy(body, alarms, "snapmerge-test", client=cw)
    stub.assert_no_pending_responses()  # refused: no alarm was put after it
