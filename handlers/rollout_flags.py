"""Glue: the rollout controller's :class:`~rollout.flag_writer.FlagWriter` on a flag document.

``rollout`` may not import ``flags``; this module, in the top layer, knows both. It owns exactly
two things in the document (docs/flags.md describes the format):

* ``final-merge-path`` — the rule named :data:`ROLLOUT_RULE`, a sticky bucket split
  (:func:`flags.document.rollout_rule`) serving ``two_phase`` to the first P % of buckets. Other
  rules of the flag (targeting a collection, say) are kept, in order, before it; a default of
  ``two_phase`` is set back to ``legacy`` so that P means P. Read back: the rule's threshold, or
  100 when the default is ``two_phase`` and there is no rule, else 0.
* ``final-merge-kill-switch`` — its ``default``. Turning it on drops any rules it had and any
  ``switchback`` (which the stores refuse on the kill switch: a document stored before they did
  must still take a rollback), so the switch is on for every execution; turning it off keeps
  them. Read back, a switch that is missing or not ``false`` counts as on, as the flag clients
  treat it (fail safe).

Both change in one conditional save, so a rollback (0 % and the kill switch) is one write.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from flags.bucketing import percent_of
from flags.document import rollout_rule
from flags.keys import SWITCHBACK_FIELD, ContextKey, FlagKey
from flags.store_aws import S3Store, SSMStore
from flags.stores import (
    DEFAULT_DOCUMENT,
    ENV_APPCONFIG,
    ENV_FILE,
    ENV_S3,
    ENV_SSM,
    FileStore,
    FlagDocumentStore,
    store_from_env,
)
from rollout.flag_writer import RolloutFlagState
from rollout.plan import FlagStoreKind, FlagStoreSpec
from snapmerge.domain import MergePath
from snapmerge.errors import FlagDocumentConflictError, InvalidEventError

ROLLOUT_RULE: Final = "rollout-two-phase"
LOCAL_FLAGS: Final = Path(".snapmerge/flags.json")


def _bucket_threshold(rule: Mapping[str, Any]) -> int | None:
    for cond in rule.get("conditions", []):
        if cond.get("key") == ContextKey.BUCKET.value:
            return int(cond["value"])
    return None


def rollout_state_of(doc: Mapping[str, Any]) -> RolloutFlagState:
    """The rollout percentage of two_phase and the kill switch a document says."""
    path = doc.get(FlagKey.FINAL_MERGE_PATH.value, {})
    rule = (path.get("rules") or {}).get(ROLLOUT_RULE)
    threshold = None if rule is None else _bucket_threshold(rule)
    if threshold is not None and rule is not None and rule.get("when_match") == "two_phase":
        percent = float(percent_of(threshold))
    else:
        percent = 100.0 if path.get("default") == MergePath.TWO_PHASE.value else 0.0
    kill = doc.get(FlagKey.KILL_SWITCH.value, {}).get("default")
    # the flag clients fail safe: a kill switch that is missing or not a boolean counts as on
    return RolloutFlagState(percent, kill is not False)


def with_rollout(doc: Mapping[str, Any], state: RolloutFlagState) -> dict[str, Any]:
    """A copy of ``doc`` saying ``state`` (everything else unchanged)."""
    out = copy.deepcopy(dict(doc))
    key = FlagKey.FINAL_MERGE_PATH.value
    path = dict(out.get(key) or {"default": MergePath.LEGACY.value, "boolean_type": False})
    if path.get("default") == MergePath.TWO_PHASE.value:
        path["default"] = MergePath.LEGACY.value
    rules = {k: v for k, v in (path.get("rules") or {}).items() if k != ROLLOUT_RULE}
    rules[ROLLOUT_RULE] = rollout_rule(round(state.percent, 2), MergePath.TWO_PHASE.value)
    path["rules"] = rules
    out[key] = path
    kill = dict(out.get(FlagKey.KILL_SWITCH.value) or {})
    kill["default"] = state.kill_switch
    if state.kill_switch:  # on for everyone: with no rules left a switchback means nothing,
        kill.pop("rules", None)  # and kept it would make the store refuse the rollback
        kill.pop(SWITCHBACK_FIELD, None)
    out[FlagKey.KILL_SWITCH.value] = kill
    return out


class DocumentFlagWriter:
    """A :class:`~rollout.flag_writer.FlagWriter` on a :class:`~flags.stores.FlagDocumentStore`."""

    def __init__(self, store: FlagDocumentStore) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"DocumentFlagWriter({self.store!r})"

    def read(self) -> tuple[RolloutFlagState, str]:
        doc, version = self.store.load()
        return rollout_state_of(doc), version

    def write(self, state: RolloutFlagState, expected_version: str) -> str:
        doc, version = self.store.load()
        if version != expected_version:
            raise FlagDocumentConflictError(repr(self.store), expected_version, version)
        return self.store.save(with_rollout(doc, state), expected_version)


def _seeded_file(path: Path) -> FileStore:
    """A local flag file, created from the packaged default document when missing."""
    store = FileStore(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        store.save(FileStore(DEFAULT_DOCUMENT).load()[0], None)
    return store


def open_flag_store(
    spec: FlagStoreSpec, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> FlagDocumentStore:
    """The store a plan names; ``env`` follows the SNAPMERGE_FLAGS_* variables, else the local
    ``.snapmerge/flags.json`` (never the packaged default document, which is read-only)."""
    env = os.environ if env is None else env
    base = cwd or Path.cwd()
    if spec.kind is FlagStoreKind.FILE:
        return _seeded_file(base / spec.location)
    if spec.kind is FlagStoreKind.S3:
        bucket, _, key = spec.location[len("s3://") :].partition("/")
        return S3Store(bucket, key)
    if spec.kind is FlagStoreKind.SSM:
        return SSMStore(spec.location)
    if env.get(ENV_FILE):
        return _seeded_file(base / env[ENV_FILE])
    if any(env.get(k) for k in (ENV_S3, ENV_SSM, ENV_APPCONFIG)):
        return store_from_env(env)
    if spec.kind is not FlagStoreKind.ENV:  # pragma: no cover - every kind is handled above
        raise InvalidEventError(f"unknown flag store kind {spec.kind}")
    return _seeded_file(base / LOCAL_FLAGS)


def flag_writer_for(
    spec: FlagStoreSpec, env: Mapping[str, str] | None = None
) -> DocumentFlagWriter:
    return DocumentFlagWriter(open_flag_store(spec, env))
