"""Flag benchmark: evaluation cost against OpenFeature's InMemoryProvider, kill-switch latency.

``python -m bench.flags`` prints the figures; ``run(n)`` returns them. Not a test: numbers vary
with the machine, so nothing here asserts; the targets (≤ 2x InMemoryProvider per evaluation,
kill switch < 1 s on the local file) are reported next to the measurements.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flags import client as flag_client
from flags.baseline import in_memory_path_provider
from flags.provider import DocumentProvider
from flags.stores import CacheSettings, FileStore
from snapmerge.domain import MergePath

PATH = "final-merge-path"
CONTEXT = flag_client.evaluation_context("batch-0001", "words", "batch-0001")


def _document(kill_switch: bool, *, targeted: bool = False) -> dict[str, Any]:
    path: dict[str, Any] = {
        "default": "two_phase" if not targeted else "legacy",
        "boolean_type": False,
    }
    if targeted:
        path["rules"] = {
            "lines first": {
                "when_match": "two_phase",
                "conditions": [{"action": "EQUALS", "key": "collection", "value": "words"}],
            }
        }
    return {"final-merge-kill-switch": {"default": kill_switch}, PATH: path}


def _write(path: Path, doc: dict[str, Any]) -> None:
    """Write like an operator's tool would: a temporary file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def _per_call_ns(call: Callable[[], object], n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        call()
    return (time.perf_counter_ns() - start) / n


def _best_of(call: Callable[[], object], n: int, rounds: int = 5) -> float:
    return min(_per_call_ns(call, n) for _ in range(rounds))


def _compare(directory: Path, label: str, targeted: bool, n: int) -> dict[str, float]:
    """One flag, served by our provider (from a file) and by InMemoryProvider, measured alike."""
    file = directory / f"{label}.json"
    _write(file, _document(False, targeted=targeted))
    ours = DocumentProvider(FileStore(file), CacheSettings(1.0, 0.25))
    theirs = in_memory_path_provider(targeted=targeted)
    c_ours = flag_client.open_domain(ours, f"bench-ours-{label}")
    c_theirs = flag_client.open_domain(theirs, f"bench-inmemory-{label}")
    assert c_ours.get_string_value(PATH, "legacy", CONTEXT) == "two_phase"
    assert c_theirs.get_string_value(PATH, "legacy", CONTEXT) == "two_phase"
    out = {
        "client_ours_ns": _best_of(lambda: c_ours.get_string_details(PATH, "legacy", CONTEXT), n),
        "client_inmemory_ns": _best_of(
            lambda: c_theirs.get_string_details(PATH, "legacy", CONTEXT), n
        ),
        "provider_ours_ns": _best_of(
            lambda: ours.resolve_string_details(PATH, "legacy", CONTEXT), n
        ),
        "provider_inmemory_ns": _best_of(
            lambda: theirs.resolve_string_details(PATH, "legacy", CONTEXT), n
        ),
    }
    out["client_ratio"] = out["client_ours_ns"] / out["client_inmemory_ns"]
    out["provider_ratio"] = out["provider_ours_ns"] / out["provider_inmemory_ns"]
    return {f"{label}_{k}": v for k, v in out.items()}


def evaluation_cost(directory: Path, n: int) -> dict[str, float]:
    """ns per evaluation through the OpenFeature client and per raw provider call.

    ``static``: a flag without rules; ``targeted``: one rule on ``collection`` (InMemoryProvider
    gets an equivalent ``context_evaluator``). Best of 5 rounds of ``n`` calls each.
    """
    return {**_compare(directory, "static", False, n), **_compare(directory, "targeted", True, n)}


def _wait_for(client: flag_client.FlagClient, want: MergePath, deadline_s: float = 10.0) -> float:
    start = time.perf_counter()
    while True:
        decision = client.decide_path(targeting_key="batch-0001", collection="words", batch_id="b")
        now = time.perf_counter()
        if decision.path is want:
            return now - start
        if now - start > deadline_s:
            return float("inf")
        time.sleep(0.001)


def kill_switch_latency(directory: Path, flips: int = 7) -> dict[str, float]:
    """Seconds from writing the file to ``decide_path`` answering legacy (and back)."""
    file = directory / "kill.json"
    _write(file, _document(False))
    store = FileStore(file)
    cache = CacheSettings.for_store(store)
    client = flag_client.bootstrap(store)
    on, off = [], []
    rng = random.Random(7)
    for _ in range(flips):
        assert _wait_for(client, MergePath.TWO_PHASE) < 10
        time.sleep(rng.uniform(0, cache.kill_switch_ttl_seconds + 0.05))  # a random TTL phase
        start = time.perf_counter()
        _write(file, _document(True))
        on.append(time.perf_counter() - start + _wait_for(client, MergePath.LEGACY))
        time.sleep(rng.uniform(0, cache.ttl_seconds))
        start = time.perf_counter()
        _write(file, _document(False))
        off.append(time.perf_counter() - start + _wait_for(client, MergePath.TWO_PHASE))
    return {
        "kill_switch_ttl_s": cache.kill_switch_ttl_seconds,
        "kill_switch_on_median_s": statistics.median(on),
        "kill_switch_on_max_s": max(on),
        "kill_switch_off_median_s": statistics.median(off),
        "decide_path_ns": _best_of(
            lambda: client.decide_path(
                targeting_key="batch-0001", collection="words", batch_id="b"
            ),
            2000,
        ),
    }


def run(n: int = 20000) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            results = evaluation_cost(Path(tmp), n)
            results.update(kill_switch_latency(Path(tmp)))
        finally:
            flag_client.clear_domains()
    results["evaluations_per_measurement"] = n
    return results


def main(argv: list[str] | None = None) -> int:
    """``--json`` prints the figures as JSON; ``-n N`` sets the evaluations per measurement."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="snapmerge bench flags")
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.n)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(
            f"{key:<{width}}  {value:,.3f}"
            if isinstance(value, float)
            else f"{key:<{width}}  {value}"
        )
    print(
        f"\ntarget: evaluation <= 2x InMemoryProvider (client, static: "
        f"{results['static_client_ratio']:.2f}x; targeted: {results['targeted_client_ratio']:.2f}x)"
    )
    median = results["kill_switch_on_median_s"]
    print(f"target: kill switch < 1 s on the local file (median {median:.3f} s)")
    return 0


if __name__ == "__main__":
    main()
