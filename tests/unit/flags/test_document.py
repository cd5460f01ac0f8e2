"""Document validation (Powertools' schema + ours) and evaluation parity with Powertools."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools.utilities.feature_flags import FeatureFlags
from hypothesis import given, settings
from hypothesis import strategies as st

from flags.bucketing import bucket_of
from flags.compiled import compile_document
from flags.document import (
    FlagDocumentError,
    decode_document,
    encode_document,
    flags_changed,
    rollout_rule,
    validate_document,
)
from tests.unit.flags.helpers import DEFAULT_DOC, StaticStore, make_doc, path_feature, when


def test_packaged_default_is_valid_and_legacy_everywhere() -> None:
    compiled = compile_document(DEFAULT_DOC, "v1")
    path = compiled.flags["final-merge-path"].evaluate("k", {"collection": "words"})
    assert (path.value, path.reason) == ("legacy", "STATIC")
    assert compiled.flags["final-merge-kill-switch"].evaluate(None, {}).value is False


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([], "JSON object"),
        ({"final-merge-path": "legacy"}, "Powertools"),
        ({"x": {"rules": {}}}, "Powertools"),  # no default
        ({"final-merge-kill-switch": {"default": "false"}}, "Powertools"),  # string, boolean flag
        (make_doc(final_merge_path=path_feature("blue")), "unknown variant"),
        (
            make_doc(final_merge_path=path_feature(rule=when("collection", "words", result="x"))),
            "unknown variant",
        ),
        (make_doc(chunk_size_words={"default": "15", "boolean_type": False}), "integer"),
        (make_doc(chunk_size_words={"default": 0, "boolean_type": False}), "integer"),
        (make_doc(group_size={"default": True, "boolean_type": False}), "integer"),
        (make_doc(single_chunk_fast_path={"default": 1, "boolean_type": False}), "boolean"),
        (make_doc(final_merge_path={**path_feature(), "salt": 7}), "salt"),
        (
            make_doc(
                final_merge_path=path_feature(r=when("bucket", 500, "KEY_GREATER_THAN_VALUE"))
            ),
            "bucket",
        ),
        (
            make_doc(
                final_merge_path=path_feature(r=when("bucket", 10_001, "KEY_LESS_THAN_VALUE"))
            ),
            "bucket",
        ),
        (
            make_doc(final_merge_path=path_feature(r=when("collection", "w", "NO_SUCH_ACTION"))),
            "Powertools",
        ),
    ],
)
def test_refused_documents(doc: Any, fragment: str) -> None:
    with pytest.raises(FlagDocumentError, match=fragment):
        validate_document(doc)


def test_unknown_flags_are_served_untouched() -> None:
    doc = make_doc(other={"default": {"anything": [1, 2]}, "boolean_type": False})
    assert compile_document(doc, "v").flags["other"].evaluate(None, {}).value == {
        "anything": [1, 2]
    }


def test_decode_refuses_non_objects_and_keeps_the_version() -> None:
    with pytest.raises(FlagDocumentError) as info:
        decode_document(b"{not json", "v9")
    assert info.value.version == "v9"
    with pytest.raises(FlagDocumentError):
        decode_document(b"[1]")


def test_encoding_keeps_rule_order() -> None:
    rules = {"z-first": when("collection", "a"), "a-second": when("collection", "b")}
    doc = make_doc(final_merge_path=path_feature("legacy", **rules))
    back = decode_document(encode_document(doc))
    assert list(back["final-merge-path"]["rules"]) == ["z-first", "a-second"]


def test_reasons() -> None:
    doc = make_doc(
        final_merge_path=path_feature(
            "legacy",
            words=when("collection", "words", result="shadow"),
            batch=when("batch_id", "b-7", result="two_phase"),
            rollout=rollout_rule(100, "two_phase"),
        ),
        group_size={
            "default": 20,
            "boolean_type": False,
            "rules": {"w": when("collection", "w", result=5)},
        },
        chunk_size_lines={"default": 25, "boolean_type": False},
    )
    flags = compile_document(doc, "v").flags
    path = flags["final-merge-path"]
    assert (path.evaluate("k", {"collection": "words"}).reason) == "TARGETING_MATCH"
    assert path.evaluate("k", {"collection": "words"}).value == "shadow"
    assert path.evaluate("k", {"collection": "lines", "batch_id": "b-7"}).rule == "batch"
    split = path.evaluate("k", {"collection": "lines"})
    assert (split.value, split.reason, split.rule) == ("two_phase", "SPLIT", "rollout")
    assert flags["group-size"].evaluate(None, {}).reason == "DEFAULT"
    assert flags["chunk-size-lines"].evaluate(None, {}).reason == "STATIC"


def test_first_matching_rule_wins() -> None:
    doc = make_doc(
        final_merge_path=path_feature(
            a=when("collection", "words", result="shadow"),
            b=when("collection", "words", result="two_phase"),
        )
    )
    assert (
        compile_document(doc, "v")
        .flags["final-merge-path"]
        .evaluate(None, {"collection": "words"})
        .value
        == "shadow"
    )


def test_flags_changed() -> None:
    old = make_doc()
    new = make_doc(final_merge_kill_switch={"default": True}, extra={"default": True})
    assert flags_changed(old, new) == ["extra", "final-merge-kill-switch"]
    del new["group-size"]
    assert "group-size" in flags_changed(old, new)


@settings(max_examples=60, deadline=None)
@given(
    percent=st.integers(0, 100),
    key=st.text(min_size=1, max_size=20),
    collection=st.sampled_from(["words", "lines", "receipt_words"]),
    batch=st.sampled_from(["b-1", "b-2"]),
)
def test_same_value_as_powertools(percent: int, key: str, collection: str, batch: str) -> None:
    """Our evaluator and Powertools' FeatureFlags agree, given the precomputed bucket."""
    doc = make_doc(
        final_merge_path=path_feature(
            "legacy",
            w=when("collection", "receipt_words", result="shadow"),
            b=when("batch_id", ["b-2"], "IN", "two_phase"),
            rollout=rollout_rule(percent, "two_phase"),
        )
    )
    ours = (
        compile_document(doc, "v")
        .flags["final-merge-path"]
        .evaluate(key, {"collection": collection, "batch_id": batch})
    )
    context = {
        "collection": collection,
        "batch_id": batch,
        "bucket": bucket_of("final-merge-path", "", key),
    }
    theirs = FeatureFlags(store=StaticStore(doc)).evaluate(
        name="final-merge-path", context=context, default="legacy"
    )
    assert ours.value == theirs


def test_the_example_in_the_docs_is_valid() -> None:
    import json
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "docs" / "flags.md").read_text()
    example = json.loads(text.split("```json", 1)[1].split("```", 1)[0])
    flags = compile_document(example, "v").flags["final-merge-path"]
    assert flags.evaluate("k", {"collection": "lines"}).value == "shadow"
    assert flags.evaluate("k", {"collection": "words", "batch_id": "b-2024-06-01-17"}).reason == (
        "TARGETING_MATCH"
    )
    # 12.5 % = buckets below 1250 (the published vectors: "lines" 527, "batch-0002" 1336)
    assert flags.evaluate("lines", {"collection": "words"}).reason == "SPLIT"
    assert flags.evaluate("batch-0002", {"collection": "words"}).reason == "DEFAULT"
