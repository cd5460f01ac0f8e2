"""The adversarial review of the signed record, one test per finding, on the three backends
(a local file, S3 and DynamoDB on the embedded server). The attacker can write the state and the
log but does not hold the audit key. Every finding below was reproduced on the code before this
change (each test fails there: the forged change is applied, or signed on top of); the control
shows an untouched record is driven as before."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from handlers.rollout_flags import DocumentFlagWriter, rollout_state_of
from rollout.audit import AuditLog, JsonlAuditLog, S3AuditLog
from rollout.audit_entry import AuditIntegrityError
from rollout.controller import RolloutController
from rollout.dynamo import DynamoAuditLog, DynamoStateStore
from rollout.plan import RolloutPlan
from rollout.signing import AuditKey, AuditKeyError
from rollout.state import BlobStateStore, FileStateStore, StateStore
from rollout.state_types import Transition
from rollout.verify import verify_record
from tests.unit.rollout_ctl.helpers import CountingStore, ListSource, ManualClock, ScriptedJudge

KEY = AuditKey(b"binding-audit-key-0123456789")
Raw = dict[str, Any]


@dataclass
class Backend:
    """One rollout location: its stores, and raw access to them (what an attacker can do)."""

    states: StateStore
    audit_with: Callable[[AuditKey | None], AuditLog]  # the log, read and appended with a key
    read_state: Callable[[], Raw]
    write_state: Callable[[Raw], None]
    read_log: Callable[[], list[Raw]]
    write_log: Callable[[list[Raw]], None]  # replace the whole log ([] deletes it)

    @property
    def audit(self) -> AuditLog:
        return self.audit_with(KEY)


def _file(root: Path, name: str) -> Backend:
    state, log = root / name / "state.json", root / name / "audit.jsonl"

    def write_log(entries: list[Raw]) -> None:
        if not entries:
            log.unlink(missing_ok=True)
            return
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(json.dumps(e) + "\n" for e in entries))

    def write_state(data: Raw) -> None:
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps(data))

    return Backend(
        FileStateStore(state),
        lambda key: JsonlAuditLog(log, key),
        lambda: json.loads(state.read_text()),
        write_state,
        lambda: [json.loads(line) for line in log.read_text().splitlines()],
        write_log,
    )


def _s3(bucket: str, name: str) -> Backend:
    from snapmerge.adapters.s3_store import S3BlobStore

    blobs = S3BlobStore(bucket)
    audit = S3AuditLog(blobs, f"{name}/audit/", KEY)
    prefix = audit.prefix

    def read_state() -> Raw:
        blob = blobs.get(f"{name}/state.json")
        assert blob is not None
        return json.loads(blob.body)  # type: ignore[no-any-return]

    def write_log(entries: list[Raw]) -> None:
        blobs.delete(blobs.list(audit.prefix))
        for entry in entries:
            blobs.put(audit.slot_key(entry["seq"]), json.dumps(entry).encode())

    return Backend(
        BlobStateStore(blobs, f"{name}/state.json"),
        lambda key: S3AuditLog(blobs, prefix, key),
        read_state,
        lambda data: blobs.put(f"{name}/state.json", json.dumps(data).encode()),  # type: ignore[func-returns-value]
        lambda: [json.loads(blobs.get(k).body) for k in blobs.list(audit.prefix)],  # type: ignore[union-attr]
        write_log,
    )


def _dynamo(table: str, name: str) -> Backend:
    from snapmerge import aws as clients

    ddb = clients.client("dynamodb")
    state_key = {"PK": {"S": f"ROLLOUT#{name}"}, "SK": {"S": "STATE"}}
    pk = {"S": f"ROLLOUT#{name}#AUDIT"}

    def read_state() -> Raw:
        item = ddb.get_item(TableName=table, Key=state_key, ConsistentRead=True)["Item"]
        return json.loads(item["body"]["S"])  # type: ignore[no-any-return]

    def write_state(data: Raw) -> None:
        item = {**state_key, "body": {"S": json.dumps(data)}, "version": {"S": uuid.uuid4().hex}}
        ddb.put_item(TableName=table, Item=item)

    def items() -> list[Raw]:
        query = ddb.query(
            TableName=table,
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues={":pk": pk},
            ConsistentRead=True,
        )
        return list(query["Items"])

    def write_log(entries: list[Raw]) -> None:
        for item in items():
            ddb.delete_item(TableName=table, Key={"PK": item["PK"], "SK": item["SK"]})
        for entry in entries:
            body = {"S": json.dumps(entry)}
            sk = {"S": f"ENTRY#{entry['seq']:010d}"}
            ddb.put_item(TableName=table, Item={"PK": pk, "SK": sk, "body": body})

    return Backend(
        DynamoStateStore(table, name),
        lambda key: DynamoAuditLog(table, name, key),
        read_state,
        write_state,
        lambda: [json.loads(item["body"]["S"]) for item in items()],
        write_log,
    )


@pytest.fixture(params=["file", "s3", "dynamodb"])
def at(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], Backend]]:
    """A factory of rollout locations on one backend."""
    if request.param == "file":
        yield lambda name: _file(tmp_path, name)
        return
    aws = request.getfixturevalue("aws")
    if request.param == "s3":
        yield lambda name: _s3(aws.bucket, name)
    else:
        yield lambda name: _dynamo(aws.table, name)


@dataclass
class Rollout:
    where: Backend
    flags: CountingStore
    clock: ManualClock

    def controller(self, key: AuditKey | None = KEY, where: Backend | None = None) -> Any:
        where = where or self.where
        return RolloutController(
            where.states,
            DocumentFlagWriter(self.flags),
            where.audit_with(key),
            ListSource(),
            clock=self.clock,
            sleep=self.clock.sleep,
            judge_fn=ScriptedJudge("promote"),
            actor="ci",
            key=key,
        )

    def flag_percent(self) -> float:
        return rollout_state_of(self.flags.load()[0]).percent

    def unchanged(self, log: list[Raw], percent: float) -> None:
        """Nothing was applied or signed on top: the log and the flag document as they were."""
        assert self.where.read_log() == log
        assert self.flag_percent() == percent


@pytest.fixture
def rollout(at: Callable[[str], Backend], plan: RolloutPlan) -> Rollout:
    """init → advance (5 %) → advance (25 %), signed."""
    r = Rollout(at("alpha"), CountingStore(), ManualClock())
    ctl = r.controller()
    ctl.init(plan)
    ctl.advance()
    ctl.advance()
    assert r.flag_percent() == 25.0 and len(r.where.read_log()) == 3
    return r


def _verify(r: Rollout) -> None:
    where = r.where
    verify_record(where.audit, where.states.read()[0], KEY, where.states.location)  # type: ignore[attr-defined]


def test_control_an_untouched_record_verifies_and_is_driven(rollout: Rollout) -> None:
    _verify(rollout)
    ctl = rollout.controller()
    assert ctl.status().percent == 25.0
    assert ctl.advance().percent == 50.0
    _verify(rollout)
    assert [e["action"] for e in rollout.where.read_log()][-1] == "advance"


# -- CRITICAL: a forged `pending` is applied (and signed) by the next command ------------------
def _forge_pending(r: Rollout) -> None:
    data = r.where.read_state()
    forged = Transition(
        "000004-advance-forged", "advance", 25.0, 100.0, "running", "running", 4, None, "x", 1
    )
    data["pending"] = asdict(forged)
    r.where.write_state(data)


@pytest.mark.parametrize("command", ["recover", "status", "advance", "rollback"])
def test_a_forged_pending_transition_is_never_applied(rollout: Rollout, command: str) -> None:
    log = rollout.where.read_log()
    _forge_pending(rollout)
    with pytest.raises(AuditIntegrityError, match=r"field\(s\) pending do not match"):
        getattr(rollout.controller(), command)()
    rollout.unchanged(log, 25.0)


# -- HIGH: state fields not covered by the anchor; the state not compared with the log --------
EDITS: dict[str, Callable[[Raw], None]] = {
    "percent": lambda d: d.update(percent=100.0),
    "stage_index": lambda d: d.update(stage_index=4, percent=100.0),
    "status": lambda d: d.update(status="paused"),
    "stage_started_ms": lambda d: d.update(stage_started_ms=0),
    "next_judge_ms": lambda d: d.update(next_judge_ms=1),
    "last_action": lambda d: d["last_action"].update(who="mallory"),
}


@pytest.mark.parametrize("field", sorted(EDITS))
def test_an_edited_state_field_is_refused_naming_it(rollout: Rollout, field: str) -> None:
    log = rollout.where.read_log()
    data = rollout.where.read_state()
    EDITS[field](data)
    rollout.where.write_state(data)
    for command in ("status", "advance", "tick", "rollback"):
        with pytest.raises(AuditIntegrityError, match=rf"field\(s\) .*{field}.* do not match"):
            getattr(rollout.controller(), command)()
    with pytest.raises(AuditIntegrityError, match=field):
        _verify(rollout)
    rollout.unchanged(log, 25.0)


def test_without_a_key_an_edited_state_is_still_compared_with_the_log(
    at: Callable[[str], Backend], plan: RolloutPlan
) -> None:
    """An unsigned rollout authenticates nothing, but a state that disagrees with the last log
    entry (an accident, or an edit that did not recompute the anchor) is refused too."""
    r = Rollout(at("unsigned"), CountingStore(), ManualClock())
    ctl = r.controller(key=None)
    ctl.init(plan)
    ctl.advance()
    data = r.where.read_state()
    data["percent"] = 100.0
    r.where.write_state(data)
    with pytest.raises(AuditIntegrityError, match=r"field\(s\) percent do not match"):
        r.controller(key=None).advance()
    data["audit_anchor"]["fields"] = _fields_of(r, data)  # recompute the unsigned anchor
    r.where.write_state(data)
    with pytest.raises(AuditIntegrityError, match=r"100 % running\) does not match the last"):
        r.controller(key=None).advance()
    assert r.flag_percent() == 5.0


def _fields_of(r: Rollout, data: Raw) -> dict[str, str]:
    from rollout.state_types import RolloutState

    return RolloutState.from_json(data).field_digests()


# -- HIGH: a truncated or deleted log, or a stripped anchor, laundered by the next command ----
def _truncate(r: Rollout) -> None:
    r.where.write_log(r.where.read_log()[:-1])


def _delete(r: Rollout) -> None:
    r.where.write_log([])


def _strip_anchor(r: Rollout) -> None:
    data = r.where.read_state()
    data["audit_anchor"] = None
    r.where.write_state(data)


LAUNDER = {
    "truncate": (_truncate, r"entry 2 is missing"),
    "delete": (_delete, r"no audit log .* anchors 3 entries"),
    "strip-anchor": (_strip_anchor, r"no audit anchor, but an audit key is configured"),
}


@pytest.mark.parametrize("name", sorted(LAUNDER))
@pytest.mark.parametrize("command", ["advance", "status"])  # rollback: the forged-pending test
def test_a_damaged_record_is_not_signed_on_top(rollout: Rollout, name: str, command: str) -> None:
    tamper, message = LAUNDER[name]
    tamper(rollout)
    log = rollout.where.read_log() if name != "delete" else []
    with pytest.raises(AuditIntegrityError, match=message):
        getattr(rollout.controller(), command)()
    if name != "delete":
        rollout.unchanged(log, 25.0)
    else:
        assert not rollout.where.audit.exists() and rollout.flag_percent() == 25.0
    with pytest.raises(AuditIntegrityError):
        _verify(rollout)  # still caught: nothing laundered it


def test_init_force_does_not_sign_on_top_of_a_damaged_record(
    rollout: Rollout, at: Callable[[str], Backend], plan: RolloutPlan
) -> None:
    _truncate(rollout)
    log = rollout.where.read_log()
    with pytest.raises(AuditIntegrityError, match="new, empty audit location"):
        rollout.controller().init(plan, force=True)
    rollout.unchanged(log, 25.0)
    # the way out: the same state location, a new audit location
    fresh = at("fresh")
    where = rollout.where
    moved = Backend(
        where.states,
        fresh.audit_with,
        where.read_state,
        where.write_state,
        fresh.read_log,
        fresh.write_log,
    )
    state = rollout.controller(where=moved).init(plan, force=True)
    assert state.percent == 1.0 and [e["action"] for e in fresh.read_log()] == ["init"]


def test_a_deleted_state_with_its_log_left_is_not_restarted_on_top(
    rollout: Rollout, plan: RolloutPlan
) -> None:
    _truncate(rollout)  # the tail removed, then the state that anchors it deleted
    log = rollout.where.read_log()
    if isinstance(rollout.where.states, FileStateStore):
        rollout.where.states.path.unlink()
    elif isinstance(rollout.where.states, BlobStateStore):
        rollout.where.states.blobs.delete([rollout.where.states.key])
    else:
        from snapmerge import aws as clients

        states = rollout.where.states
        assert isinstance(states, DynamoStateStore)
        clients.client("dynamodb").delete_item(TableName=states.table, Key=states._key())
    with pytest.raises(AuditIntegrityError, match="audit log but no rollout state"):
        rollout.controller().init(plan)
    rollout.unchanged(log, 25.0)


# -- MEDIUM: no key configured, a signed rollout gets unsigned entries ------------------------
@pytest.mark.parametrize("command", ["advance", "rollback", "status"])
def test_a_signed_rollout_is_not_driven_without_its_key(rollout: Rollout, command: str) -> None:
    log = rollout.where.read_log()
    with pytest.raises(AuditKeyError, match="this rollout is signed"):
        getattr(rollout.controller(key=None), command)()
    rollout.unchanged(log, 25.0)


# -- LOW: entries not bound to the rollout's location ---------------------------------------
def test_a_record_copied_to_another_rollout_does_not_verify(
    rollout: Rollout, at: Callable[[str], Backend]
) -> None:
    other = at("beta")
    other.write_state(rollout.where.read_state())
    other.write_log(rollout.where.read_log())
    with pytest.raises(AuditIntegrityError, match=r"written for the rollout at .*alpha"):
        verify_record(other.audit, other.states.read()[0], KEY, other.states.location)  # type: ignore[attr-defined]
    with pytest.raises(AuditIntegrityError, match="copied from another rollout"):
        rollout.controller(where=other).advance()
    assert rollout.flag_percent() == 25.0


# -- the check itself under a race: state read, then another controller commits, then log read --
class StaleFirstRead:
    """Answers the first ``stale`` reads with an old (state, version): what a controller sees
    when others commit between its read of the state and its read of the log."""

    def __init__(self, inner: FileStateStore, old: Any, stale: int) -> None:
        self.inner, self.old, self.stale = inner, old, stale
        self.location = inner.location

    def read(self) -> Any:
        if self.stale:
            self.stale -= 1
            return self.old
        return self.inner.read()

    def write(self, state: Any, expected_version: str | None) -> str:
        return self.inner.write(state, expected_version)


@pytest.mark.parametrize(("stale", "believed"), [(1, False), (10, True)])
def test_a_log_ahead_of_a_state_read_earlier_is_read_again(
    tmp_path: Path, plan: RolloutPlan, stale: int, believed: bool
) -> None:
    """The log looks longer than the state only because the state moved: re-read, not refused.
    Control: a state that stays behind the log (it does not move on re-reading) is refused."""
    r = Rollout(_file(tmp_path, "race"), CountingStore(), ManualClock())
    r.controller().init(plan)
    old = r.where.states.read()
    r.controller().advance()
    r.controller().advance()  # the log is now two entries ahead of `old`
    assert isinstance(r.where.states, FileStateStore)
    racing = StaleFirstRead(r.where.states, old, stale)
    ctl = RolloutController(racing, DocumentFlagWriter(r.flags), r.where.audit, key=KEY)
    if believed:
        with pytest.raises(AuditIntegrityError, match="follows the anchored head"):
            ctl.status()
    else:
        assert ctl.status().percent == 25.0
