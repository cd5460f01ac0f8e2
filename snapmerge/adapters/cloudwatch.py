"""Putting CloudWatch dashboards and metric alarms.

Errors: a dashboard body that CloudWatch refuses (``InvalidParameterInput``, or validation
messages in the reply) and any other SDK failure (throttled, access denied, a limit exceeded) are
:class:`~snapmerge.errors.StoreError` with the AWS code (``DashboardValidation`` for messages in
an accepted reply).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from snapmerge import aws
from snapmerge.adapters.aws_errors import SDK_ERRORS, translate
from snapmerge.errors import StoreError


class CloudWatchDashboards:
    def __init__(self, client: Any | None = None) -> None:
        self._client = client if client is not None else aws.client("cloudwatch")

    def put_dashboard(self, name: str, body: str) -> None:
        try:
            reply = self._client.put_dashboard(DashboardName=name, DashboardBody=body)
        except SDK_ERRORS as exc:
            raise translate(exc, f"PutDashboard {name!r}") from exc
        problems = reply.get("DashboardValidationMessages") or []
        if problems:
            raise StoreError(f"dashboard {name} refused: {problems}", code="DashboardValidation")

    def put_metric_alarm(self, request: Mapping[str, Any]) -> None:
        try:
            self._client.put_metric_alarm(**request)
        except SDK_ERRORS as exc:
            raise translate(exc, f"PutMetricAlarm {request.get('AlarmName')!r}") from exc
