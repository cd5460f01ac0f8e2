"""FlagClient: path decisions, kill switch, fail-closed counting, pinning across steps, env."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flags import bootstrap, resolve_pinned
from flags.client import FlagClient
from flags.decision import PathDecision
from flags.document import rollout_rule
from flags.keys import FlagKey
from flags.stores import (
    DEFAULT_DOCUMENT,
    FileStore,
    MemoryStore,
    S3Store,
    SSMStore,
    UnavailableStore,
    store_from_env,
)
from snapmerge.domain import Database, MergePath
from snapmerge.errors import InvalidEventError, StoreError
from tests.unit.flags.helpers import kill, make_doc, path_feature, when

ROLLED_OUT = make_doc(
    final_merge_path=path_feature(
        "legacy",
        lines=when("collection", "lines", result="shadow"),
        batch=when("batch_id", "b-special", result="two_phase"),
        everyone=rollout_rule(100, "two_phase"),
    ),
    chunk_size_words={
        "default": 15,
        "boolean_type": False,
        "rules": {"w": when("collection", "words", result=7)},
    },
    chunk_size_lines={"default": 30, "boolean_type": False},
    group_size={"default": 9, "boolean_type": False},
    single_chunk_fast_path={"default": True},
)


def decide(client: FlagClient, collection: str = "words", batch_id: str = "b-1") -> PathDecision:
    return client.decide_path(targeting_key=batch_id, collection=collection, batch_id=batch_id)


def test_bootstrap_is_idempotent() -> None:
    store = MemoryStore(make_doc())
    client = bootstrap(store)
    assert bootstrap() is client and bootstrap(store) is client
    other = bootstrap(MemoryStore(make_doc()))
    assert other is not client and bootstrap() is other


def test_default_document_routes_everything_to_legacy() -> None:
    client = bootstrap(FileStore(DEFAULT_DOCUMENT))
    d = decide(client)
    assert (d.path, d.reason, d.error, d.kill_switch) == (MergePath.LEGACY, "STATIC", None, False)
    assert d.flag_version == client.provider.version is not None


def test_decisions_with_reasons() -> None:
    client = bootstrap(MemoryStore(ROLLED_OUT))
    assert (decide(client, "lines").path, decide(client, "lines").reason) == (
        MergePath.SHADOW,
        "TARGETING_MATCH",
    )
    special = decide(client, batch_id="b-special")
    assert (special.path, special.reason) == (MergePath.TWO_PHASE, "TARGETING_MATCH")
    split = decide(client)
    assert (split.path, split.variant, split.reason) == (MergePath.TWO_PHASE, "two_phase", "SPLIT")
    assert client.counters() == {}


def test_kill_switch_forces_legacy() -> None:
    store = MemoryStore({**ROLLED_OUT, "final-merge-kill-switch": kill(True)})
    client = bootstrap(store)
    d = decide(client, "lines")
    assert (d.path, d.reason, d.kill_switch, d.error) == (
        MergePath.LEGACY,
        "KILL_SWITCH",
        True,
        None,
    )
    assert client.kill_switch() is True


@pytest.mark.parametrize(
    "store",
    [
        MemoryStore(None),  # nothing to read
        MemoryStore("garbage"),  # malformed
        MemoryStore(make_doc(final_merge_path=path_feature("warp"))),  # unknown variant
        UnavailableStore("misconfigured"),
    ],
    ids=["empty", "malformed", "unknown-variant", "unavailable"],
)
def test_any_error_fails_closed_and_is_counted(store: Any) -> None:
    client = bootstrap(store)
    d = decide(client, "lines")
    assert (d.path, d.reason, d.kill_switch) == (MergePath.LEGACY, "ERROR", True)
    assert d.error and "kill switch unreadable" in d.error
    assert client.kill_switch() is True  # unreadable counts as ON
    counters = client.counters()
    assert counters["fail_closed_decisions"] == 1
    assert counters["provider_not_ready_at_start"] == 1
    assert counters["kill_switch_unreadable"] == 2
    assert sum(v for k, v in counters.items() if k.startswith("errors.")) >= 1


def test_missing_kill_switch_key_fails_safe() -> None:
    doc = {k: v for k, v in ROLLED_OUT.items() if k != "final-merge-kill-switch"}
    client = bootstrap(MemoryStore(doc))
    d = decide(client, "lines")
    assert (d.path, d.reason) == (MergePath.LEGACY, "ERROR")
    assert "FLAG_NOT_FOUND" in (d.error or "")


def test_a_split_without_a_targeting_key_fails_closed() -> None:
    doc = make_doc(final_merge_path=path_feature(r=rollout_rule(100, "two_phase")))
    client = bootstrap(MemoryStore(doc))
    assert decide(client, batch_id="b-1").path is MergePath.TWO_PHASE
    d = client.decide_path(targeting_key="", collection="words", batch_id="")  # empty = no key
    assert (d.path, d.reason, d.kill_switch) == (MergePath.LEGACY, "ERROR", False)
    assert "TARGETING_KEY_MISSING" in (d.error or "")
    assert d.flag_version == client.provider.version
    assert client.counters()["fail_closed_decisions"] == 1


def test_sizes_and_switches() -> None:
    client = bootstrap(MemoryStore(ROLLED_OUT))
    assert client.chunk_size(Database.WORDS, 15) == 7
    assert client.chunk_size(Database.from_collection("receipt_words"), 15) == 7
    assert client.chunk_size(Database.LINES, 25) == 30
    assert client.group_size(20) == 9
    assert client.single_chunk_fast_path() is True
    assert client.int_flag(FlagKey.GROUP_SIZE, 4, collection="x", batch_id="y") == 9
    assert client.bool_flag(FlagKey.KILL_SWITCH, True) is False


def test_sizes_fall_back_to_the_callers_defaults() -> None:
    client = bootstrap(MemoryStore(None))
    assert client.chunk_size(Database.WORDS, 15) == 15
    assert client.group_size(20) == 20
    assert client.single_chunk_fast_path() is False
    assert client.int_flag(FlagKey.KILL_SWITCH, 5) == 5  # wrong type, default
    assert client.counters()["evaluation_errors"] >= 4


# -- pinning ------------------------------------------------------------------------------------


def test_decision_round_trips_through_the_event() -> None:
    d = PathDecision(MergePath.SHADOW, "shadow", "SPLIT", "v1", False, False, None)
    event = json.loads(json.dumps(d.to_event()))
    assert PathDecision.from_event(event) == d


@pytest.mark.parametrize(
    "bad",
    [
        {"path": "warp"},
        {"path": "legacy", "kill_switch": "no"},
        {"path": "legacy", "variant": 3},
        {"path": "legacy", "flag_version": 1},
        "legacy",
    ],
)
def test_unknown_pinned_values_are_refused(bad: object) -> None:
    with pytest.raises(InvalidEventError):
        PathDecision.from_event(bad)


def test_pinned_decision_survives_a_rollout_change_and_the_kill_switch_overrides_it() -> None:
    store = MemoryStore(ROLLED_OUT)
    client = bootstrap(store)
    # split step: decide once, pin in the execution state
    event: dict[str, Any] = {"batch_id": "b-1", "database": "words"}
    event["routing"] = decide(client).to_event()
    assert event["routing"]["path"] == "two_phase"
    # the rollout is rolled back to 0 % mid-execution: later steps keep the pinned path
    store.raw = make_doc()
    later = resolve_pinned(event, client)
    assert (later.path, later.pinned, later.reason) == (MergePath.TWO_PHASE, True, "SPLIT")
    assert decide(client).path is MergePath.LEGACY  # a new execution would get legacy
    # the kill switch still overrides the pinned decision at the next step
    store.raw = make_doc(final_merge_kill_switch=kill(True))
    killed = resolve_pinned(event, client)
    assert (killed.path, killed.reason, killed.kill_switch, killed.pinned) == (
        MergePath.LEGACY,
        "KILL_SWITCH",
        True,
        True,
    )


def test_unreadable_kill_switch_overrides_a_pinned_decision() -> None:
    store = MemoryStore(ROLLED_OUT)
    client = bootstrap(store)
    event = {"batch_id": "b-1", "routing": decide(client).to_event()}
    store.failure = StoreError("gone")
    store.raw = None
    # the provider keeps serving the last good document: the pin holds
    assert resolve_pinned(event, client).path is MergePath.TWO_PHASE
    fresh = bootstrap(MemoryStore(None))  # a cold start with nothing readable
    d = resolve_pinned(event, fresh)
    assert (d.path, d.reason, d.kill_switch) == (MergePath.LEGACY, "ERROR", True)


def test_no_pinned_decision_evaluates_now_keyed_by_batch() -> None:
    client = bootstrap(MemoryStore(ROLLED_OUT))
    d = resolve_pinned({"batch_id": "b-special", "database": "words"}, client)
    assert (d.path, d.pinned, d.reason) == (MergePath.TWO_PHASE, False, "TARGETING_MATCH")
    assert resolve_pinned({"batch_id": "b-1", "database": "lines"}, client).path is MergePath.SHADOW


def test_garbage_pinned_decision_fails_closed() -> None:
    client = bootstrap(MemoryStore(ROLLED_OUT))
    d = resolve_pinned({"batch_id": "b-1", "routing": {"path": "warp"}}, client)
    assert (d.path, d.reason, d.pinned) == (MergePath.LEGACY, "ERROR", True)
    assert client.counters()["pinned_decision_invalid"] == 1


def test_a_pinned_legacy_decision_does_not_need_the_kill_switch() -> None:
    client = bootstrap(MemoryStore(None))
    pinned = PathDecision(MergePath.LEGACY, "legacy", "STATIC").to_event()
    d = resolve_pinned({"routing": pinned}, client)
    assert (d.path, d.reason, d.pinned) == (MergePath.LEGACY, "STATIC", True)


# -- environment --------------------------------------------------------------------------------


def test_store_from_env(tmp_path: Path) -> None:
    assert isinstance(store_from_env({}), FileStore)
    file_store = store_from_env({"SNAPMERGE_FLAGS_FILE": str(tmp_path / "f.json")})
    assert isinstance(file_store, FileStore) and file_store.path == tmp_path / "f.json"
    env = {"AWS_REGION": "us-east-1"}
    s3 = store_from_env({**env, "SNAPMERGE_FLAGS_S3": "s3://bkt/path/to/flags.json"})
    assert isinstance(s3, S3Store) and (s3.bucket, s3.key) == ("bkt", "path/to/flags.json")
    assert isinstance(store_from_env({"SNAPMERGE_FLAGS_SSM": "/a/b"}), SSMStore)
    appconfig = store_from_env({"SNAPMERGE_FLAGS_APPCONFIG": "app/env/profile"})
    assert repr(appconfig) == "AppConfigFlagStore('app/env/profile')"


@pytest.mark.parametrize(
    "env",
    [
        {"SNAPMERGE_FLAGS_FILE": "a", "SNAPMERGE_FLAGS_SSM": "/b"},
        {"SNAPMERGE_FLAGS_S3": "bucket/key"},
        {"SNAPMERGE_FLAGS_S3": "s3://bucket"},
        {"SNAPMERGE_FLAGS_APPCONFIG": "app/env"},
    ],
)
def test_bad_store_settings(env: dict[str, str]) -> None:
    with pytest.raises(InvalidEventError):
        store_from_env(env)


def test_bootstrap_from_a_bad_environment_serves_legacy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPMERGE_FLAGS_FILE", "x.json")
    monkeypatch.setenv("SNAPMERGE_FLAGS_SSM", "/y")
    client = bootstrap()
    assert decide(client).path is MergePath.LEGACY
    assert client.counters()["errors.store_error"] >= 1


def test_bootstrap_from_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(ROLLED_OUT))
    monkeypatch.setenv("SNAPMERGE_FLAGS_FILE", str(path))
    monkeypatch.setenv("SNAPMERGE_FLAGS_TTL_SECONDS", "0")
    client = bootstrap()
    assert client.provider.cache.ttl_seconds == 0 == client.provider.cache.kill_switch_ttl_seconds
    assert decide(client, "lines").path is MergePath.SHADOW
    path.write_text(json.dumps({**ROLLED_OUT, "final-merge-kill-switch": kill(True)}))
    assert decide(client, "lines").reason == "KILL_SWITCH"
    path.unlink()  # a vanished file: the last good document keeps serving
    assert decide(client, "lines").reason == "KILL_SWITCH"
    assert client.counters()["errors.store_error"] >= 1


def test_missing_file_at_start_means_legacy(tmp_path: Path) -> None:
    client = bootstrap(FileStore(tmp_path / "absent.json"))
    d = decide(client, "lines")
    assert (d.path, d.reason) == (MergePath.LEGACY, "ERROR")
