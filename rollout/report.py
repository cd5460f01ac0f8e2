"""One self-contained HTML page from the EMF records and the audit log (``snapmerge report``).

Everything is inline — plots are base64 PNGs drawn by matplotlib's Agg backend, styles are in
the page — so the file opens from disk, is attached to a ticket, and needs no server or network.
Sections: an A/B summary table (p50/p95/max per path, two_phase/legacy ratio), distributions of
lock hold time per path, CAS failures and retries over time, chunk counts per path, and the
stage timeline (percentage over time, one marker per controller action and verdict), followed
by the audit entries themselves.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np

from rollout.audit import AuditLog
from rollout.audit_entry import AuditEntry
from rollout.metric_names import MetricName
from rollout.sources import MetricRecord, MetricSource
from snapmerge.domain import MergePath

PATHS: Final = (MergePath.LEGACY, MergePath.TWO_PHASE)
COLOURS: Final = {MergePath.LEGACY: "#1f77b4", MergePath.TWO_PHASE: "#ff7f0e"}
SUMMARY_METRICS: Final = (
    MetricName.LOCK_HOLD_TIME,
    MetricName.LOCK_WAIT_TIME,
    MetricName.FINAL_MERGE_DURATION,
    MetricName.CHUNK_COUNT,
)
ACTION_COLOURS: Final = {
    "init": "#7f7f7f",
    "advance": "#2ca02c",
    "promote": "#2ca02c",
    "complete": "#17becf",
    "hold": "#ffbf00",
    "rollback": "#d62728",
    "pause": "#9467bd",
    "resume": "#8c564b",
}
_CSS: Final = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee}.muted{color:#777}
"""


def _values(records: Sequence[MetricRecord], path: MergePath, metric: str) -> np.ndarray[Any, Any]:
    vals = [r.values[metric] for r in records if r.path == path and metric in r.values]
    return np.asarray(vals, dtype=np.float64)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _hist(records: Sequence[MetricRecord], metric: str, title: str, log: bool) -> str:
    fig, ax = plt.subplots(figsize=(9, 3.6))
    series = [(p, _values(records, p, metric)) for p in PATHS]
    series = [(p, v[v > 0] if log else v) for p, v in series]
    series = [(p, v) for p, v in series if len(v)]
    if series:
        every = np.concatenate([v for _, v in series])
        if log:  # two-phase holds sit orders of magnitude below legacy: log bins show both
            bins: Any = np.logspace(np.log10(every.min()), np.log10(every.max() * 1.0001), 40)
            ax.set_xscale("log")
        else:  # counts: one bar per integer value, the paths side by side
            bins = np.arange(np.floor(every.min()) - 0.5, np.ceil(every.max()) + 1.5)
        ax.hist(
            [v for _, v in series],
            bins=bins,
            alpha=0.7 if log else 0.9,
            histtype="stepfilled" if log else "bar",
            color=[COLOURS[p] for p, _ in series],
            label=[f"{p} (n={len(v)})" for p, v in series],
        )
        ax.legend()
    ax.set_title(title)
    ax.set_xlabel(metric + (" (ms, log scale)" if log else ""))
    return _png(fig)


def _dates(ax: Any) -> None:
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]


def _times(ms: Sequence[float]) -> np.ndarray[Any, Any]:
    return np.asarray([int(m) for m in ms], dtype="datetime64[ms]")


def _cas_over_time(records: Sequence[MetricRecord]) -> str:
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for metric, style in ((MetricName.CAS_FAILURES, "-"), (MetricName.CAS_RETRIES, "--")):
        for path in PATHS:
            rows = [r for r in records if r.path == path and metric in r.values]
            if not rows:
                continue
            times = _times([r.timestamp_ms for r in rows])
            totals = np.cumsum([r.values[metric] for r in rows])
            ax.step(
                times, totals, style, where="post", color=COLOURS[path], label=f"{path} {metric}"
            )
    ax.set_title("CAS failures and retries over time (cumulative)")
    if ax.lines:
        ax.legend()
        _dates(ax)
    return _png(fig)


def _timeline(entries: Sequence[AuditEntry]) -> str:
    fig, ax = plt.subplots(figsize=(9, 3.2))
    if entries:
        times = _times([datetime.fromisoformat(e.at).timestamp() * 1000 for e in entries])
        ax.step(times, [e.to_percent for e in entries], where="post", color="#444")
        for when, entry in zip(times, entries, strict=True):
            colour = ACTION_COLOURS.get(entry.action, "#000")
            ax.scatter(np.asarray([when]), [entry.to_percent], color=colour, zorder=3, s=40)
            ax.annotate(
                entry.action,
                (when, entry.to_percent),
                fontsize=7,
                rotation=30,
                xytext=(3, 6),
                textcoords="offset points",
            )
    ax.set_ylim(-5, 105)
    ax.set_ylabel("two_phase %")
    ax.set_title("Stage timeline: percentage and each action / verdict")
    if entries:
        _dates(ax)
    return _png(fig)


def _fmt(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:,.4g}"


def summary_rows(records: Sequence[MetricRecord]) -> list[dict[str, Any]]:
    """p50/p95/max per path and metric, and the two_phase/legacy ratio of each."""
    rows = []
    for metric in SUMMARY_METRICS:
        row: dict[str, Any] = {"metric": metric.value}
        for path in PATHS:
            vals = _values(records, path, metric)
            row[path.value] = {
                "n": len(vals),
                "p50": float(np.percentile(vals, 50)) if len(vals) else None,
                "p95": float(np.percentile(vals, 95)) if len(vals) else None,
                "max": float(vals.max()) if len(vals) else None,
            }
        for stat in ("p50", "p95", "max"):
            legacy, cand = row["legacy"][stat], row["two_phase"][stat]
            row[f"ratio_{stat}"] = cand / legacy if legacy and cand is not None else None
        rows.append(row)
    return rows


def _summary_table(records: Sequence[MetricRecord]) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in ("metric", "path", "n", "p50", "p95", "max", "ratio p50", "ratio p95", "ratio max")
    )
    body = []
    for row in summary_rows(records):
        for index, path in enumerate(PATHS):
            stats = row[path.value]
            cells = [f"<td>{row['metric'] if index == 0 else ''}</td>", f"<td>{path}</td>"]
            cells += [f'<td class="n">{_fmt(stats[k])}</td>' for k in ("n", "p50", "p95", "max")]
            ratios = [row[f"ratio_{k}"] for k in ("p50", "p95", "max")] if index else []
            cells += [f'<td class="n">{_fmt(r)}</td>' for r in ratios] or ["<td></td>"] * 3
            body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _audit_table(entries: Sequence[AuditEntry]) -> str:
    if not entries:
        return '<p class="muted">No audit entries.</p>'
    rows = []
    for e in entries:
        cells = (
            e.seq,
            e.at,
            e.who,
            e.action,
            f"{e.from_percent:g} → {e.to_percent:g}",
            f"{e.from_status} → {e.to_status}",
            e.reason,
        )
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("#", "when", "who", "action", "%", "status", "reason"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def render_html(records: Sequence[MetricRecord], entries: Sequence[AuditEntry], title: str) -> str:
    counts = ", ".join(f"{p}: {sum(r.path == p for r in records)}" for p in PATHS)
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">Generated {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC from '
        f"{len(records)} EMF records ({counts}) and {len(entries)} audit entries.</p>",
        "<h2>A/B summary</h2>",
        _summary_table(records),
        "<h2>Lock hold time per path</h2>",
        _hist(records, MetricName.LOCK_HOLD_TIME, "LockHoldTime distribution", log=True),
        "<h2>CAS failures and retries</h2>",
        _cas_over_time(records),
        "<h2>Chunk counts</h2>",
        _hist(records, MetricName.CHUNK_COUNT, "ChunkCount per final merge", log=False),
        "<h2>Stage timeline</h2>",
        _timeline(entries),
        "<h2>Audit log</h2>",
        _audit_table(entries),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )


def build_report(
    emf_source: MetricSource, audit: AuditLog, out: Path, *, title: str = "snapmerge rollout report"
) -> Path:
    """Write the report to ``out`` (parents created) and return its path."""
    html_text = render_html(emf_source.records(), audit.history(), title)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_text, encoding="utf-8")
    return out
