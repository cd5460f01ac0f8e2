"""The pure merge plan, the synthetic data generator and MemoryIndex's own file format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from snapmerge import synth
from snapmerge.adapters.memory_index import MARKER_NAME, RECORDS_NAME, MemoryIndex
from snapmerge.adapters.merge_plan import (
    canonical_metadata,
    classify,
    digest_records,
    fold,
    metadata_patch,
    normalize,
)
from snapmerge.domain import Record
from snapmerge.errors import MergeInputError


def rec(
    rid: str, vec: tuple[float, ...] = (1.0, 0.0), doc: str | None = "d", **meta: object
) -> Record:
    return Record(rid, vec, doc, dict(meta) or None)


def test_canonical_metadata_keeps_types_apart_and_ignores_order() -> None:
    assert canonical_metadata({"a": 1, "b": 2}) == canonical_metadata({"b": 2, "a": 1})
    assert canonical_metadata(None) == canonical_metadata({})
    assert len({canonical_metadata({"a": v}) for v in (1, 1.0, True, "1")}) == 4


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({"a": 1}, {"a": 1}, None),
        (None, {}, None),
        ({"a": 1, "b": 2}, {"a": 1}, {"a": 1, "b": None}),
        ({"a": 1}, None, {"a": None}),
        (None, {"z": 1}, {"z": 1}),
        ({"a": 1}, {"a": True}, {"a": True}),
    ],
)
def test_metadata_patch(
    old: dict[str, object] | None, new: dict[str, object] | None, patch: dict[str, object] | None
) -> None:
    assert metadata_patch(old, new) == patch


def test_fold_later_page_wins() -> None:
    folded = fold([[rec("a", doc="1"), rec("b")], [rec("a", doc="2")], [rec("c")]])
    assert list(folded) == ["a", "b", "c"]
    assert folded["a"].document == "2"


def test_classify_sorts_by_write_cost() -> None:
    base = {r.id: r for r in (rec("same"), rec("vec"), rec("meta", k=1), rec("doc"))}
    folded = {
        r.id: r
        for r in (
            rec("new"),
            rec("same"),
            rec("vec", (0.0, 1.0)),
            rec("meta", k=2),
            rec("doc", doc="e"),
        )
    }
    plan = classify(folded, base)
    assert [r.id for r in plan.new] == ["new"]
    assert [r.id for r in plan.changed_vectors] == ["vec"]
    assert sorted(r.id for r in plan.metadata_only) == ["doc", "meta"]
    assert plan.unchanged == 1 and plan.total == 5


def test_classify_compares_float32_values() -> None:
    """A float64 read-back of the same float32 vector is not a change."""
    stored = rec("a", (0.1, 0.2))
    read_back = Record("a", tuple(float(x) for x in normalize(stored).embedding), "d", None)
    assert classify({"a": read_back}, {"a": stored}).unchanged == 1


def test_digest_fields_are_delimited() -> None:
    assert digest_records([rec("a", doc="bc")]) != digest_records([rec("ab", doc="c")])
    assert digest_records([rec("a", doc=None)]) != digest_records([rec("a", doc="")])


def test_synth_is_deterministic_float32_unit_vectors() -> None:
    rows = synth.records(7, 20, 32, id_prefix="w", start=100)
    assert rows == synth.records(7, 20, 32, id_prefix="w", start=100)
    assert rows != synth.records(8, 20, 32, id_prefix="w", start=100)
    assert rows[0].id == "w00000100" and len({r.id for r in rows}) == 20
    for row in rows:
        assert math.isclose(math.fsum(x * x for x in row.embedding), 1.0, rel_tol=1e-5)
        assert normalize(row) == row  # already exactly float32


def test_overwrite_changes_what_it_says() -> None:
    base = synth.records(1, 100, 8)
    later = synth.overwrite(base, seed=2, fraction=0.2, vector_fraction=0.25)
    by_id = {r.id: r for r in base}
    assert len(later) == 20 and len({r.id for r in later}) == 20
    vec = [r for r in later if r.embedding != by_id[r.id].embedding]
    assert len(vec) == 5
    for r in later:
        assert r.metadata != by_id[r.id].metadata and "label" not in (r.metadata or {})
        if r not in vec:
            assert r.document == by_id[r.id].document
    assert any("label" in (by_id[r.id].metadata or {}) for r in later)  # some keys do vanish


def test_expected_state_is_last_write_wins() -> None:
    state = synth.expected_state([[rec("a", doc="1"), rec("b")], [rec("a", doc="2")]])
    assert {k: v.document for k, v in state.items()} == {"a": "2", "b": "d"}


def test_memory_index_files(tmp_path: Path) -> None:
    engine = MemoryIndex()
    rows = synth.records(1, 5, 4)
    synth.write_index(engine, tmp_path / "i", rows, "receipt_words")
    assert (tmp_path / "i" / MARKER_NAME).is_file()
    body = json.loads((tmp_path / "i" / RECORDS_NAME).read_text())
    assert body["collection"] == "receipt_words" and len(body["records"]) == 5
    with pytest.raises(MergeInputError, match="already holds"):
        engine.write(tmp_path / "i", rows, "words")
    (tmp_path / "i" / RECORDS_NAME).write_text("{not json")
    with pytest.raises(MergeInputError, match="unreadable"):
        engine.count(tmp_path / "i")


def test_merge_keeps_base_collection_name(tmp_path: Path) -> None:
    engine = MemoryIndex()
    synth.write_index(engine, tmp_path / "base", synth.records(1, 3, 4), "words")
    synth.write_index(engine, tmp_path / "s", synth.records(2, 3, 4, "n"), "receipt_words")
    engine.merge(tmp_path / "base", [tmp_path / "s"], collection="receipt_words")
    assert json.loads((tmp_path / "base" / RECORDS_NAME).read_text())["collection"] == "words"


def test_target_that_is_not_an_index_is_refused(tmp_path: Path) -> None:
    engine = MemoryIndex()
    synth.write_index(engine, tmp_path / "s", synth.records(2, 3, 4), "words")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "stray").write_text("x")
    with pytest.raises(MergeInputError, match="neither empty nor"):
        engine.merge(tmp_path / "t", [tmp_path / "s"], collection="words")
