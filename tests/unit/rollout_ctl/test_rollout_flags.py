"""The handlers adapter between the controller and the flag document: what it writes, what it
keeps, how it reads back, which store a plan opens, and a read-only store refusing cleanly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flags.document import validate_document
from flags.store_aws import ReadOnlyStoreError
from flags.stores import FileStore, MemoryStore
from handlers.rollout_flags import (
    ROLLOUT_RULE,
    DocumentFlagWriter,
    open_flag_store,
    rollout_state_of,
    with_rollout,
)
from rollout.flag_writer import FlagWriteRefusedError, RolloutFlagState, set_flags
from rollout.plan import FlagStoreKind, FlagStoreSpec
from tests.unit.rollout_ctl.helpers import default_doc


def _targeted() -> dict[str, Any]:
    doc = default_doc()
    doc["final-merge-path"]["rules"] = {
        "lines in shadow": {
            "when_match": "shadow",
            "conditions": [{"action": "EQUALS", "key": "collection", "value": "lines"}],
        }
    }
    doc["final-merge-kill-switch"] = {
        "default": False,
        "rules": {
            "words off": {
                "when_match": True,
                "conditions": [{"action": "EQUALS", "key": "collection", "value": "words"}],
            }
        },
    }
    return doc


def test_other_rules_are_kept_before_the_rollout_rule() -> None:
    doc = with_rollout(_targeted(), RolloutFlagState(12.5, False))
    validate_document(doc)
    rules = doc["final-merge-path"]["rules"]
    assert list(rules) == ["lines in shadow", ROLLOUT_RULE]
    assert rules[ROLLOUT_RULE]["conditions"][0]["value"] == 1250
    assert "rules" in doc["final-merge-kill-switch"]  # turning it off keeps its targeting
    assert rollout_state_of(doc) == RolloutFlagState(12.5, False)
    doc = with_rollout(doc, RolloutFlagState(25, False))
    assert list(doc["final-merge-path"]["rules"]) == ["lines in shadow", ROLLOUT_RULE]


def test_the_kill_switch_goes_on_for_everyone() -> None:
    doc = with_rollout(_targeted(), RolloutFlagState(0, True))
    assert doc["final-merge-kill-switch"] == {"default": True}
    assert rollout_state_of(doc) == RolloutFlagState(0.0, True)


def test_read_back_of_documents_the_controller_did_not_write() -> None:
    doc = default_doc()
    assert rollout_state_of(doc) == RolloutFlagState(0.0, False)
    doc["final-merge-path"]["default"] = "two_phase"
    assert rollout_state_of(doc).percent == 100.0
    assert with_rollout(doc, RolloutFlagState(5, False))["final-merge-path"]["default"] == "legacy"
    del doc["final-merge-kill-switch"]
    assert rollout_state_of(doc).kill_switch is True  # missing counts as on (fail safe)


def test_write_is_conditional_on_the_version_read() -> None:
    store = MemoryStore(default_doc())
    writer = DocumentFlagWriter(store)
    _, version = writer.read()
    writer.write(RolloutFlagState(1, False), version)
    from snapmerge.errors import FlagDocumentConflictError

    with pytest.raises(FlagDocumentConflictError):
        writer.write(RolloutFlagState(5, False), version)
    assert writer.read()[0].percent == 1.0


class ReadOnly(MemoryStore):
    def save(self, doc: dict[str, Any], expected_version: str | None) -> str:
        raise ReadOnlyStoreError("AppConfigFlagStore('a/b/c') is read only")


def test_a_read_only_store_is_a_refusal_and_nothing_changes() -> None:
    store = ReadOnly(default_doc())
    with pytest.raises(FlagWriteRefusedError, match="read only"):
        set_flags(DocumentFlagWriter(store), 5.0, None, "advance")
    assert rollout_state_of(store.load()[0]).percent == 0.0


def test_store_selection(tmp_path: Path) -> None:
    local = open_flag_store(FlagStoreSpec(), env={}, cwd=tmp_path)
    assert isinstance(local, FileStore) and local.path == tmp_path / ".snapmerge" / "flags.json"
    assert local.path.exists() and local.load()[0] == default_doc()  # seeded from the default
    chosen = open_flag_store(FlagStoreSpec(), env={"SNAPMERGE_FLAGS_FILE": "f.json"}, cwd=tmp_path)
    assert isinstance(chosen, FileStore) and chosen.path == tmp_path / "f.json"
    named = open_flag_store(FlagStoreSpec(FlagStoreKind.FILE, "x/flags.json"), cwd=tmp_path)
    assert isinstance(named, FileStore) and named.path.exists()


def _stored_before_the_switchback_rule(percent: float) -> dict[str, Any]:
    """A document written when a switchback on the kill switch was still accepted: the switch
    off with a (dormant) switchback, the rollout at ``percent``."""
    doc = with_rollout(default_doc(), RolloutFlagState(percent, False))
    doc["final-merge-kill-switch"]["switchback"] = {"window_seconds": 60}
    return doc


def test_a_rollback_lands_on_a_document_stored_with_a_switchback_on_the_kill_switch() -> None:
    # the flag store refuses this document now, so the controller's rollback is the one write
    # that must still land: turning the switch on drops its rules and its switchback alike
    store = MemoryStore(_stored_before_the_switchback_rule(50))
    assert set_flags(DocumentFlagWriter(store), 0.0, True, "rollback") is True
    doc = store.load()[0]
    assert doc["final-merge-kill-switch"] == {"default": True}
    validate_document(doc)  # served again: the switch acts
    assert rollout_state_of(doc) == RolloutFlagState(0.0, True)


def test_an_advance_over_a_switchback_on_the_kill_switch_is_refused_naming_it() -> None:
    # turning the switch off keeps its rules; a switchback would re-randomize them per window,
    # so the controller does not drop it silently: the write is refused and says why
    store = MemoryStore(_stored_before_the_switchback_rule(5))
    with pytest.raises(FlagWriteRefusedError, match="'final-merge-kill-switch': switchback"):
        set_flags(DocumentFlagWriter(store), 25.0, None, "advance")
    assert rollout_state_of(store.load()[0]).percent == 5.0
