"""Raw per-execution metric records, read back from EMF (issue 5 item 2).

The judge works on raw records, one per (invocation, path), never on CloudWatch statistics:
percentiles are not available from moto, and raw records are what a rank test needs anyway.
Two sources return the same :class:`MetricRecord`:

* :class:`EmfFileSource` — the JSON-lines file :class:`rollout.metrics.MergeMetrics` appends to in
  the embedded mode. A malformed line raises :class:`MalformedMetricsError` naming the file and
  line; with ``strict=False`` it is skipped and counted in :attr:`EmfFileSource.skipped`.
  With ``must_exist`` (what the controller uses) a missing file is
  :class:`MetricsUnavailableError`: a wrong ``--emf`` path must not read as "no executions yet"
  and hold forever. Without it (the report) a missing file is no records.
* :class:`CloudWatchLogsSource` — the Lambda's log group, through ``FilterLogEvents``, to the last
  page: a page may be empty and still carry a ``nextToken`` (the service scanned a stretch of the
  group and found nothing), so only a page *without* a token ends the read. Log groups hold other
  lines too (Logger output, platform reports): only EMF blobs of our namespace with a
  ``MergePath`` dimension count; everything else is ignored, not an error. ``max_pages`` bounds
  a read; a read stopped by it is marked incomplete.

After each read a source says how it went in ``last_read`` (:class:`ReadStats`); a read that kept
fewer records than the source holds (lines skipped as malformed, pages left unread) is
*incomplete*, and :func:`incomplete_read` says so in words the controller adds to its verdict.

An EMF value may be a list (Powertools writes ``[v]``); the record holds its sum, which is what a
count or a total time means when one invocation recorded the same name twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rollout.metric_names import DEFAULT_NAMESPACE, Dimension
from snapmerge.adapters.cloudwatch_logs import CloudWatchLogs, LogPage
from snapmerge.domain import MergePath
from snapmerge.errors import InvalidEventError, MissingResourceError, StoreError

EMF_FILTER_PATTERN = '{ $._aws.CloudWatchMetrics[0].Namespace = "%s" }'


class MetricsUnavailableError(InvalidEventError):
    """The metric source named does not exist (a wrong path or log group)."""


@dataclass
class ReadStats:
    """How the last ``records`` call went: what was scanned, kept and left out."""

    scanned: int = 0  # lines / events looked at
    kept: int = 0  # records parsed (before the time window)
    skipped: int = 0  # records of ours that could not be used (malformed)
    pages: int = 0
    complete: bool = True  # False: the source holds more than was read

    def problem(self) -> str | None:
        if self.complete and not self.skipped:
            return None
        parts = []
        if self.skipped:
            parts.append(f"{self.skipped} malformed record(s) skipped")
        if not self.complete:
            parts.append(f"stopped after {self.pages} page(s) with more to read")
        return (
            f"incomplete read: the judge saw {self.kept} record(s) but the source holds more "
            f"({'; '.join(parts)}); not promoting on a partial read"
        )


def incomplete_read(source: object) -> str | None:
    """Why the source's last read was incomplete, or None (also for sources that do not say)."""
    stats = getattr(source, "last_read", None)
    return stats.problem() if isinstance(stats, ReadStats) else None


class MalformedMetricsError(InvalidEventError):
    """A metrics line that is not a usable EMF record of ours."""

    def __init__(self, where: str, line: int, problem: str) -> None:
        self.where = where
        self.line = line
        self.problem = problem
        super().__init__(f"{where}:{line}: {problem}")


@dataclass(frozen=True)
class MetricRecord:
    """One EMF blob: one path's numbers for one invocation on one collection."""

    path: MergePath
    collection: str
    timestamp_ms: int
    values: dict[str, float]
    metadata: dict[str, Any] = field(default_factory=dict)


class MetricSource(Protocol):
    """Where the judge reads the merge metrics back: an EMF file or a CloudWatch Logs group."""

    def records(
        self, since_ms: int | None = None, until_ms: int | None = None
    ) -> list[MetricRecord]:
        """Records with ``since_ms <= timestamp_ms < until_ms`` (either bound optional), by time."""
        ...


def parse_emf(blob: Any, namespace: str | None = DEFAULT_NAMESPACE) -> MetricRecord:
    """Turn one decoded EMF object into a record; raise ``ValueError`` saying what is wrong.

    ``namespace=None`` accepts any namespace.
    """
    if not isinstance(blob, dict):
        raise ValueError(f"expected a JSON object, got {type(blob).__name__}")
    directives = (blob.get("_aws") or {}).get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        raise ValueError("not an EMF object (no _aws.CloudWatchMetrics)")
    ns = directives[0].get("Namespace")
    if namespace is not None and ns != namespace:
        raise ValueError(f"namespace {ns!r} is not {namespace!r}")
    try:
        path = MergePath(str(blob[Dimension.MERGE_PATH.value]))
        collection = str(blob[Dimension.COLLECTION.value])
        timestamp = int(blob["_aws"]["Timestamp"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"missing or invalid MergePath/Collection/Timestamp: {exc}") from None
    names = [m["Name"] for d in directives for m in d.get("Metrics", [])]
    values = {name: _number(name, blob.get(name)) for name in names}
    reserved = {"_aws", Dimension.MERGE_PATH.value, Dimension.COLLECTION.value, *names}
    metadata = {k: v for k, v in blob.items() if k not in reserved}
    return MetricRecord(path, collection, timestamp, values, metadata)


def _number(name: str, raw: Any) -> float:
    items = raw if isinstance(raw, list) else [raw]
    try:
        total = math.fsum(float(v) for v in items)
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r} has a non-numeric value {raw!r}") from None
    if not math.isfinite(total):
        raise ValueError(f"metric {name!r} is not finite: {raw!r}")
    return total


def _window(
    records: Iterable[MetricRecord], since_ms: int | None, until_ms: int | None
) -> list[MetricRecord]:
    kept = [
        r
        for r in records
        if (since_ms is None or r.timestamp_ms >= since_ms)
        and (until_ms is None or r.timestamp_ms < until_ms)
    ]
    return sorted(kept, key=lambda r: r.timestamp_ms)


class EmfFileSource:
    """EMF blobs, one JSON object per line (blank lines are ignored)."""

    def __init__(
        self,
        path: Path | str,
        *,
        strict: bool = True,
        namespace: str | None = DEFAULT_NAMESPACE,
        must_exist: bool = False,
    ) -> None:
        self.path = Path(path)
        self.must_exist = must_exist
        self.strict = strict
        self.namespace = namespace
        self.skipped = 0
        self.skipped_lines: list[int] = []
        self.last_read = ReadStats()

    def records(
        self, since_ms: int | None = None, until_ms: int | None = None
    ) -> list[MetricRecord]:
        self.skipped, self.skipped_lines = 0, []
        self.last_read = ReadStats()
        if not self.path.exists():
            if not self.must_exist:
                return []
            raise MetricsUnavailableError(
                f"no EMF metrics file at {self.path}: nothing to judge. Point --emf (or "
                "SNAPMERGE_EMF_FILE) at the file the handlers write, or use --log-group"
            )
        out: list[MetricRecord] = []
        with self.path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                self.last_read.scanned += 1
                try:
                    out.append(parse_emf(json.loads(line), self.namespace))
                except ValueError as exc:  # json.JSONDecodeError is a ValueError
                    if self.strict:
                        raise MalformedMetricsError(str(self.path), number, str(exc)) from None
                    self.skipped += 1
                    self.skipped_lines.append(number)
        self.last_read.kept, self.last_read.skipped = len(out), self.skipped
        return _window(out, since_ms, until_ms)


class CloudWatchLogsSource:
    """EMF lines of a log group (the Lambda's), read with ``FilterLogEvents`` page by page.

    The filter pattern narrows the scan on AWS; every event is still parsed here, so a backend
    that ignores the pattern (moto) gives the same answer. ``page_size`` exists for tests.
    """

    def __init__(
        self,
        log_group: str,
        client: Any = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        page_size: int | None = None,
        max_pages: int = 10_000,
    ) -> None:
        self.log_group = log_group
        self.namespace = namespace
        self.page_size = page_size
        self.max_pages = max_pages
        self._logs = CloudWatchLogs(client)
        self.ignored = 0
        self.last_read = ReadStats()

    def records(
        self, since_ms: int | None = None, until_ms: int | None = None
    ) -> list[MetricRecord]:
        self.ignored = 0
        self.last_read = ReadStats()
        out: list[MetricRecord] = []
        for message in self._messages(since_ms, until_ms):
            self.last_read.scanned += 1
            record = self._parse(message)
            if record is None:
                self.ignored += 1
            else:
                out.append(record)
        self.last_read.kept = len(out)
        return _window(out, since_ms, until_ms)

    def _messages(self, since_ms: int | None, until_ms: int | None) -> Iterable[str]:
        token: str | None = None
        while True:
            if self.last_read.pages >= self.max_pages:
                self.last_read.complete = False
                return
            page = self._page(since_ms, until_ms, token)
            self.last_read.pages += 1
            yield from page.messages
            if not page.next_token:  # an empty page with a token is not the end
                return
            if page.next_token == token:
                raise StoreError(
                    f"FilterLogEvents on {self.log_group!r} returned the same nextToken twice"
                )
            token = page.next_token

    def _page(self, since_ms: int | None, until_ms: int | None, token: str | None) -> LogPage:
        """One page; a missing log group (no invocation yet) is an empty last page. Any other
        failure is the adapter's :class:`~snapmerge.errors.StoreError`."""
        try:
            return self._logs.filter_page(
                self.log_group,
                pattern=EMF_FILTER_PATTERN % self.namespace,
                start_ms=since_ms,
                end_ms=until_ms,
                limit=self.page_size,
                token=token,
            )
        except MissingResourceError:
            return LogPage([], None)

    def _parse(self, message: str) -> MetricRecord | None:
        start = message.find("{")
        if start < 0:
            return None
        try:
            return parse_emf(json.loads(message[start:]), self.namespace)
        except ValueError:
            return None
