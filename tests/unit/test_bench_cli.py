"""``snapmerge bench merge`` runs end to end through the CLI and reports every step and ratio.

A smoke test at tiny sizes: it checks the shape of the figures, never their values (timings
belong to the benchmark, not to a test).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.merge import STEPS
from snapmerge.cli import main

ARGS = ["--quick", "--json", "--sizes", "200", "--chunks", "1", "--dimension", "8"]


def _figures(text: str) -> dict[str, Any]:
    """The JSON document after the ``== snapmerge bench merge ==`` header line."""
    start = text.index("{")
    out: dict[str, Any] = json.loads(text[start:])
    return out


def test_bench_merge_json_has_every_step_and_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "merge", *ARGS, "--repeats", "1"]) == 0
    out = _figures(capsys.readouterr().out)

    assert set(STEPS) == {"download", "read", "upsert", "upload", "pointer_swap"}
    assert out["dimension"] == 8 and out["repeats"] == 1
    (cell,) = out["cells"]
    assert (cell["size"], cell["chunks"]) == (200, 1)
    assert cell["records"] == out["records_per_chunk"]  # one chunk of new records, all merged
    for step in (*STEPS, *out["steps"]):
        assert step in cell["steps_ms"] and cell["steps_ms"][step] >= 0
        assert step in cell["share_of_held"]
    for ratio in ("engine_vs_raw", "engine_vs_raw_upsert_only", "held_vs_smallest"):
        assert cell[ratio] > 0
    assert cell["held_p50_ms"] >= cell["hold_p50_ms"] > 0
    assert out["summary"]["engine_vs_raw_median"] == cell["engine_vs_raw"]
    assert isinstance(out["summary"]["within_target"], bool)


def test_bench_merge_rejects_an_unknown_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "merge", "--no-such-option"])
    assert exc.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err
