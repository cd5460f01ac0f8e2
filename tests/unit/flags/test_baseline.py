"""The flag benchmark's baseline (OpenFeature's InMemoryProvider) answers what our provider
answers for the same document, so the benchmark compares like with like."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flags import client as flag_client
from flags.baseline import in_memory_path_provider
from flags.provider import DocumentProvider
from flags.stores import CacheSettings, FileStore


def _document(targeted: bool) -> dict[str, object]:
    path: dict[str, object] = {"default": "legacy" if targeted else "two_phase"}
    path["boolean_type"] = False
    if targeted:
        path["rules"] = {
            "words first": {
                "when_match": "two_phase",
                "conditions": [{"action": "EQUALS", "key": "collection", "value": "words"}],
            }
        }
    return {"final-merge-kill-switch": {"default": False}, "final-merge-path": path}


@pytest.mark.parametrize("targeted", [False, True])
def test_baseline_and_our_provider_agree(tmp_path: Path, targeted: bool) -> None:
    file = tmp_path / "flags.json"
    file.write_text(json.dumps(_document(targeted)))
    ours = DocumentProvider(FileStore(file), CacheSettings(1.0, 0.25))
    theirs = in_memory_path_provider(targeted=targeted)
    try:
        c_ours = flag_client.open_domain(ours, "test-ours")
        c_theirs = flag_client.open_domain(theirs, "test-theirs")
        for collection in ("words", "lines"):
            ctx = flag_client.evaluation_context("b-1", collection, "b-1")
            want = "two_phase" if collection == "words" or not targeted else "legacy"
            assert c_ours.get_string_value("final-merge-path", "x", ctx) == want
            assert c_theirs.get_string_value("final-merge-path", "x", ctx) == want
    finally:
        flag_client.clear_domains()


def test_the_pipelines_domain_is_not_open_to_comparisons() -> None:
    with pytest.raises(ValueError, match="bootstrap"):
        flag_client.open_domain(in_memory_path_provider(targeted=False), flag_client.DOMAIN)
