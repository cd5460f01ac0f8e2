"""``snapmerge bench merge`` runs end to end through the CLI and reports every step and ratio.

A smoke test at tiny sizes: it checks the shape of the figures, never their values (timings
belong to the benchmark, not to a test).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.merge_timing import STEPS
from bench.recording import Fingerprints
from snapmerge import synth
from snapmerge.cli import main
from snapmerge.domain import Record

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


CROWD = ["--levels", "1", "2", "--dimension", "8", "--base", "30", "--records", "10"]


def test_bench_contention_runs_both_paths_per_level_and_checks_conservation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "contention", *CROWD, "--overlap", "4", "--repeats", "1", "--json"]) == 0
    out = _figures(capsys.readouterr().out)

    assert [row["executions"] for row in out["levels"]] == [1, 2]
    assert sorted((r["executions"], r["path"]) for r in out["runs"]) == [
        (1, "legacy"),
        (1, "two_phase"),
        (2, "legacy"),
        (2, "two_phase"),
    ]
    for run in out["runs"]:
        assert run["errors"] == []
        assert run["conservation"]["ok"], run["conservation"]
        assert run["conservation"]["records"] == 30 + run["executions"] * (10 - 4)
        # every batch in exactly one publish (today one per version; group commit: several),
        # and every upload either published or wasted
        assert run["batches_per_publish"] * run["publishes"] == run["executions"]
        assert run["coalesced"] == run["executions"] - run["publishes"]
        assert run["builds_uploaded"] == run["publishes"] + run["wasted_builds"]
        assert run["grants"] >= run["executions"] and run["hold_p99_ms"] >= run["hold_p50_ms"]
    for row in out["levels"]:
        assert row["makespan_ratio"] == pytest.approx(
            row["two_phase"]["makespan_s"] / row["legacy"]["makespan_s"], abs=0.01
        )


def test_contention_checker_catches_a_batch_applied_again_after_a_later_one() -> None:
    """Negative control: ``Fingerprints`` (the bench's conservation check) sees the revert."""
    base = synth.records(1, 5, 4, id_prefix="base-")
    first, second = (
        [Record("base-00000000", r.embedding, r.document, r.metadata) for r in rows]
        for rows in (synth.records(2, 1, 4), synth.records(3, 1, 4))
    )
    expected = Fingerprints.of(base)
    for write in (first, second):
        expected.apply(write)
    reverted = Fingerprints.of(base)
    for write in (first, second, first):  # ``first`` re-applied after ``second``
        reverted.apply(write)
    assert expected.compare(reverted) == {"missing": 0, "unexpected": 0, "wrong_content": 1}
    skipped = Fingerprints.of(base)
    skipped.apply(first)  # ``second`` never applied
    assert expected.compare(skipped)["wrong_content"] == 1
    assert expected.compare(Fingerprints.of(base[1:]))["missing"] == 1
    assert expected.compare(expected) == {"missing": 0, "unexpected": 0, "wrong_content": 0}


def test_contention_requests_takes_the_size_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--requests`` ran the quick sizes whatever ``--dimension`` and the rest said."""
    import bench.contention as contention

    seen: list[dict[str, int]] = []

    def counts(**sizes: int) -> dict[str, Any]:
        seen.append(sizes)
        return {}

    monkeypatch.setattr(contention, "request_counts", counts)
    assert contention.main(["--requests", "--dimension", "32", "--base", "400"]) == 0
    assert contention.main(["--requests"]) == 0
    assert seen == [{"dimension": 32, "base": 400}, {}]
