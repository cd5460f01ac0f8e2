"""Reading a CloudWatch Logs group, one ``FilterLogEvents`` page at a time.

Errors: a missing log group is :class:`~snapmerge.errors.MissingResourceError` (a Lambda's group
appears with its first invocation, so the caller may read that as "nothing yet"); anything else
the SDK raises (throttled past its retries, access denied, no connection) is
:class:`~snapmerge.errors.StoreError` with the AWS code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snapmerge import aws
from snapmerge.adapters.aws_errors import SDK_ERRORS, translate


@dataclass(frozen=True)
class LogPage:
    """The messages of one page and the token of the next (None: this was the last page).

    A page may be empty and still carry a token: the service scanned a stretch of the group and
    found nothing there.
    """

    messages: list[str]
    next_token: str | None


class CloudWatchLogs:
    def __init__(self, client: Any | None = None) -> None:
        self._client = client if client is not None else aws.client("logs")

    def filter_page(
        self,
        log_group: str,
        *,
        pattern: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
        token: str | None = None,
    ) -> LogPage:
        kwargs: dict[str, Any] = {"logGroupName": log_group}
        optional = {
            "filterPattern": pattern,
            "startTime": start_ms,
            "endTime": end_ms,
            "limit": limit,
            "nextToken": token,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        try:
            page = self._client.filter_log_events(**kwargs)
        except SDK_ERRORS as exc:
            raise translate(exc, f"FilterLogEvents on {log_group!r}") from exc
        messages = [str(event.get("message", "")) for event in page.get("events", [])]
        return LogPage(messages, page.get("nextToken") or None)
