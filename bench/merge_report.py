"""How ``bench merge`` prints its figures: the legacy merge by step (each step's share of the
lock hold), and the engine against ChromaDB's own upsert with the lock hold by size."""

from __future__ import annotations

from typing import Any

from bench.merge_timing import DETAIL, STEPS


def render(out: dict[str, Any]) -> str:
    return "\n".join([*_breakdown_lines(out), "", *_hold_lines(out)])


def _breakdown_lines(out: dict[str, Any]) -> list[str]:
    cells = out["cells"]
    names = [f"{_k(c['size'])}/{c['chunks']}" for c in cells]
    lines = [
        f"legacy final merge by step: median ms (share of lock hold); columns are size/chunks; "
        f"dimension {out['dimension']}, {out['repeats']} repeats, "
        f"{out['records_per_chunk']} new records per chunk; every step runs under the lock",
        f"{'step':<14}" + "".join(f"{n:>14}" for n in names),
    ]
    for k in (*STEPS, *DETAIL):
        vals = "".join(
            f"{c['steps_ms'][k]:>8.0f} ({c['share_of_held'][k] * 100:>3.0f}%)" for c in cells
        )
        lines.append(f"{k:<14}{vals}")
    lines.append(f"{'lock held':<14}" + "".join(f"{c['held_p50_ms']:>8.0f} (100%)" for c in cells))
    lines.append(f"{'reported hold':<14}" + "".join(f"{c['hold_p50_ms']:>14.0f}" for c in cells))
    return lines


def _k(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _hold_lines(out: dict[str, Any]) -> list[str]:
    s = out["summary"]
    lines = [
        "engine merge vs ChromaDB's own upsert into a copy of the same base, same records "
        "(raw = read the sources + upsert; ups = the upsert alone; w = the engine's write "
        "phase), and legacy lock held",
        f"{'size':>6} {'chunks':>6} {'records':>7} | {'engine':>7} {'raw':>7} {'upsert':>7} ms | "
        f"{'engine':>6} {'raw':>6} {'upsert':>6} r/s | {'e/raw':>5} {'e/ups':>5} {'w/ups':>5} | "
        f"{'held p50':>8} {'max':>7} {'x first':>7}",
    ]
    for c in out["cells"]:
        lines.append(
            f"{c['size']:>6} {c['chunks']:>6} {c['records']:>7} | {c['engine_merge_ms']:>7.0f} "
            f"{c['raw_ms']:>7.0f} {c['raw_upsert_only_ms']:>7.0f}    | {c['engine_rps']:>6.0f} "
            f"{c['raw_rps']:>6.0f} {c['raw_upsert_only_rps']:>6.0f}     | "
            f"{c['engine_vs_raw']:>5.2f} {c['engine_vs_raw_upsert_only']:>5.2f} "
            f"{c['write_phase_vs_raw_upsert_only']:>5.2f} | "
            f"{c['held_p50_ms']:>8.0f} {c['held_max_ms']:>7.0f} {c['held_vs_smallest']:>6.1f}x"
        )
    lines.append(
        f"engine/raw median {s['engine_vs_raw_median']:.2f} (max {s['engine_vs_raw_max']:.2f}); "
        f"engine/upsert alone median {s['engine_vs_raw_upsert_only_median']:.2f} "
        f"(max {s['engine_vs_raw_upsert_only_max']:.2f}); target engine/raw <= "
        f"{s['target']:.2f}: {'met' if s['within_target'] else 'NOT met'}"
    )
    return lines
