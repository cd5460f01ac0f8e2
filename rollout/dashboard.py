"""The A/B CloudWatch dashboard and the two-phase guardrail alarms.

:func:`render` lays out one graph per metric and collection, legacy against two_phase (the
``MergePath`` dimension): p50/p95/p99 for times, ``Sum`` for event counts, ``Average`` and
``Maximum`` for chunk counts and batches per publish; and per collection, wasted builds per
publish (metric math over ``WastedBuilds`` and ``BatchesPerPublish``). The rollout percentage is
a **text widget** listing the plan's stages and how to read the live value (``snapmerge rollout
status``/``history``): the controller runs outside Lambda and its changes are rare, discrete
events kept in the audit log, while every EMF record of the namespace is read by the judge as a
per-execution sample — a ``RolloutPercentage`` metric there would be mistaken for one.

:func:`alarms` turns each latency/rate guardrail of a plan into one ``PutMetricAlarm`` request per
collection, always on the ``two_phase`` series (the candidate; the baseline is never alarmed on):

* ``alarm_threshold`` set on the guardrail → the two_phase p95 (latency) or per-execution mean
  (rate) above that absolute value;
* otherwise relative to legacy with metric math, as the judge is: latency
  ``p95(two_phase) / p95(legacy) - 1 > tolerance``, rate ``mean(two_phase) - mean(legacy) >
  tolerance`` (legacy filled with 0 where it reports nothing, e.g. shadow mismatches).

Invariant guardrails (chunk counts of one batch through both paths) need per-batch pairing, which
CloudWatch statistics cannot express: the judge checks them, no alarm does. The alarm ARNs can be
given to an AppConfig environment as rollback monitors. :func:`deploy` puts the dashboard and the
alarms through :class:`snapmerge.adapters.cloudwatch.CloudWatchDashboards`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from rollout.metric_names import DEFAULT_NAMESPACE, Dimension, MetricName
from rollout.plan import RolloutPlan, alarm_threshold
from snapmerge.adapters.cloudwatch import CloudWatchDashboards
from snapmerge.domain import MergePath

PATHS: Final = (MergePath.LEGACY, MergePath.TWO_PHASE)
COLLECTIONS: Final = ("words", "lines")
PERCENTILES: Final = ("p50", "p95", "p99")
LATENCY: Final = (
    MetricName.LOCK_HOLD_TIME,
    MetricName.LOCK_WAIT_TIME,
    MetricName.FINAL_MERGE_DURATION,
)
SUMS: Final = (
    MetricName.CAS_FAILURES,
    MetricName.CAS_RETRIES,
    MetricName.FALLBACK_TO_LEGACY,
    MetricName.MERGE_ERRORS,
    MetricName.LOCK_CONTENTION,
    MetricName.SHADOW_MATCHED,
    MetricName.SHADOW_MISMATCHED,
    MetricName.WASTED_BUILDS,
    MetricName.COALESCED_BATCHES,
)
CHUNKS: Final = (MetricName.CHUNK_COUNT, MetricName.BATCHES_PER_PUBLISH)
DASHBOARD_METRICS: Final[dict[MetricName, tuple[str, ...]]] = {
    **{m: PERCENTILES for m in LATENCY},
    **{m: ("Sum",) for m in SUMS},
    **{m: ("Average", "Maximum") for m in CHUNKS},
}
"""Every metric the dashboard shows, with the statistics drawn for each path."""

PERIOD: Final = 300
_WIDTH, _HEIGHT = 12, 6
_COLOURS: Final = {MergePath.LEGACY: "#1f77b4", MergePath.TWO_PHASE: "#ff7f0e"}


def _metric_line(
    namespace: str, metric: MetricName, path: MergePath, collection: str, stat: str
) -> list[Any]:
    return [
        namespace,
        metric.value,
        Dimension.MERGE_PATH.value,
        path.value,
        Dimension.COLLECTION.value,
        collection,
        {"stat": stat, "label": f"{path.value} {stat}", "color": _COLOURS[path]},
    ]


def _graph(namespace: str, metric: MetricName, collection: str, region: str) -> dict[str, Any]:
    lines = [
        _metric_line(namespace, metric, path, collection, stat)
        for path in PATHS
        for stat in DASHBOARD_METRICS[metric]
    ]
    props: dict[str, Any] = {
        "title": f"{metric.value} — {collection} (legacy vs two_phase)",
        "view": "timeSeries",
        "region": region,
        "period": PERIOD,
        "stacked": False,
        "metrics": lines,
    }
    if metric in LATENCY:
        props["yAxis"] = {"left": {"label": "ms", "showUnits": False}}
    return {"type": "metric", "properties": props}


def _waste_graph(namespace: str, collection: str, region: str) -> dict[str, Any]:
    """Wasted builds per publish (issue 12's target: at most 1), one expression per path.

    Only the publishing execution emits ``BatchesPerPublish``, so its ``SampleCount`` is the
    number of publishes; ``WastedBuilds`` is emitted by every execution.
    """
    lines: list[list[Any]] = []
    for i, path in enumerate(PATHS):
        wasted = _metric_line(namespace, MetricName.WASTED_BUILDS, path, collection, "Sum")
        publishes = _metric_line(
            namespace, MetricName.BATCHES_PER_PUBLISH, path, collection, "SampleCount"
        )
        wasted[-1] = {"stat": "Sum", "id": f"wasted{i}", "visible": False}
        publishes[-1] = {"stat": "SampleCount", "id": f"publishes{i}", "visible": False}
        expression = {
            "expression": f"wasted{i} / publishes{i}",
            "label": f"{path.value} wasted builds per publish",
            "id": f"perpublish{i}",
            "color": _COLOURS[path],
        }
        lines += [wasted, publishes, [expression]]
    props: dict[str, Any] = {
        "title": f"Wasted builds per publish — {collection} (target ≤ 1)",
        "view": "timeSeries",
        "region": region,
        "period": PERIOD,
        "stacked": False,
        "metrics": lines,
        "annotations": {"horizontal": [{"label": "target", "value": 1}]},
    }
    return {"type": "metric", "properties": props}


def _rollout_text(plan: RolloutPlan | None) -> dict[str, Any]:
    stages = " → ".join(f"{s.percent:g} %" for s in plan.stages) if plan else "see the plan"
    body = (
        "## Rollout of the two-phase final merge\n"
        f"Stages: {stages}. The live percentage and every verdict: "
        "`snapmerge rollout status` / `snapmerge rollout history` (the audit log). "
        "Orange lines are two_phase, blue legacy. Roll back by hand: "
        "`snapmerge rollout rollback --reason ...` (docs/runbook.md)."
    )
    return {"type": "text", "properties": {"markdown": body}}


def render(
    namespace: str = DEFAULT_NAMESPACE,
    collections: Sequence[str] = COLLECTIONS,
    region: str = "us-east-1",
    plan: RolloutPlan | None = None,
) -> dict[str, Any]:
    """A CloudWatch dashboard body (the dict ``PutDashboard`` takes as JSON)."""
    widgets = [{**_rollout_text(plan), "x": 0, "y": 0, "width": 24, "height": 3}]
    graphs = [_graph(namespace, m, c, region) for m in DASHBOARD_METRICS for c in collections]
    graphs += [_waste_graph(namespace, c, region) for c in collections]
    for index, graph in enumerate(graphs):
        col, row = index % 2, index // 2
        widgets.append(
            {**graph, "x": col * _WIDTH, "y": 3 + row * _HEIGHT, "width": _WIDTH, "height": _HEIGHT}
        )
    return {"start": "-PT6H", "periodOverride": "inherit", "widgets": widgets}


# -- alarms -----------------------------------------------------------------------------------
def _stat(
    ident: str, namespace: str, metric: str, path: MergePath, collection: str, stat: str
) -> dict[str, Any]:
    dims = [
        {"Name": Dimension.MERGE_PATH.value, "Value": path.value},
        {"Name": Dimension.COLLECTION.value, "Value": collection},
    ]
    return {
        "Id": ident,
        "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": metric, "Dimensions": dims},
            "Period": PERIOD,
            "Stat": stat,
        },
        "ReturnData": False,
    }


def _queries(namespace: str, metric: str, kind: str, collection: str, absolute: bool) -> list[Any]:
    stat = "p95" if kind == "latency" else "Average"
    cand = _stat("cand", namespace, metric, MergePath.TWO_PHASE, collection, stat)
    if absolute:
        return [{**cand, "ReturnData": True}]
    base = _stat("base", namespace, metric, MergePath.LEGACY, collection, stat)
    if kind == "latency":
        expr, label = "cand / base - 1", "two_phase p95 relative to legacy"
    else:
        expr, label = "cand - FILL(base, 0)", "two_phase rate minus legacy rate"
    return [cand, base, {"Id": "worse", "Expression": expr, "Label": label, "ReturnData": True}]


def alarms(
    plan: RolloutPlan,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    collections: Sequence[str] = COLLECTIONS,
    prefix: str = "snapmerge",
) -> list[dict[str, Any]]:
    """``PutMetricAlarm`` requests on the plan's two_phase guardrails (see module docstring)."""
    out: list[dict[str, Any]] = []
    for g in plan.guardrails:
        if g.kind == "invariant":
            continue
        threshold = alarm_threshold(plan, g)
        absolute = threshold is not None
        lower = g.worse == "lower"
        for collection in collections:
            out.append(
                {
                    "AlarmName": f"{prefix}-{plan.name}-{collection}-two_phase-{g.metric}",
                    "AlarmDescription": (
                        f"two_phase {g.metric} ({g.kind}, "
                        f"{'critical' if g.critical else 'non-critical'}) on {collection}: "
                        f"guardrail of rollout plan {plan.name} (tolerance {g.tolerance:g})"
                    ),
                    "ActionsEnabled": True,
                    "Metrics": _queries(namespace, g.metric, g.kind, collection, absolute),
                    "EvaluationPeriods": 3,
                    "DatapointsToAlarm": 2,
                    "Threshold": threshold
                    if absolute
                    else (-g.tolerance if lower else g.tolerance),
                    "ComparisonOperator": "LessThanThreshold" if lower else "GreaterThanThreshold",
                    "TreatMissingData": "notBreaching",
                }
            )
    return out


def deploy(
    body: dict[str, Any], alarm_requests: Sequence[dict[str, Any]], name: str, client: Any = None
) -> dict[str, Any]:
    """Put the dashboard and every alarm; return what was put.

    A refusal or any other CloudWatch failure is :class:`~snapmerge.errors.StoreError`; alarms
    put before it stay put (each ``PutMetricAlarm`` replaces its alarm, so deploying again is safe).
    """
    cw = CloudWatchDashboards(client)
    cw.put_dashboard(name, json.dumps(body))
    for request in alarm_requests:
        cw.put_metric_alarm(request)
    return {"dashboard": name, "alarms": [a["AlarmName"] for a in alarm_requests]}
