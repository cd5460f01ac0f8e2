"""``snapmerge rollout verify``: is the record what the controller wrote?

:func:`verify_record` checks, in order, and stops at the first problem with an
:class:`~rollout.audit.AuditIntegrityError` naming it (entry index and transition id):

1. the state's plan hashes to its ``plan_digest`` (:func:`rollout.plan.check_digest`);
2. the log exists (unless there is no state either);
3. the chain: each entry's sequence number, previous digest and content digest;
4. each entry's HMAC under the operator's key (an entry edited with the chain recomputed, or
   inserted, by someone without the key fails here);
5. the state's signed :class:`~rollout.signing.Anchor`: its MAC, that it belongs to this state
   (plan digest, sequence number), and that the log ends exactly at the anchored head — one entry
   more is allowed only for the transition the state holds as ``pending``. A removed tail, a
   truncated or deleted log fails here although every remaining entry is genuine.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollout.audit import (
    GENESIS,
    AuditEntry,
    AuditIntegrityError,
    AuditLog,
    AuditMissingError,
    mac_message,
)
from rollout.plan import check_digest
from rollout.signing import ENV_KEY, ENV_KEY_SSM, Anchor, AuditKey, AuditKeyError
from rollout.state import RolloutState
from snapmerge.errors import InvalidEventError


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    head: str
    key_id: str
    pending: str | None  # a pending transition whose entry may already be in the log

    def describe(self) -> str:
        pending = f"; transition {self.pending} pending" if self.pending else ""
        return (
            f"audit log verified: {self.entries} entries signed with key {self.key_id}, "
            f"head {self.head[:12]} anchored in the state{pending}"
        )


def _bad(audit: AuditLog, problem: str) -> AuditIntegrityError:
    return AuditIntegrityError(f"{audit!r}: {problem}")


def _check_signatures(audit: AuditLog, entries: list[AuditEntry], key: AuditKey) -> None:
    for index, entry in enumerate(entries):
        named = f"entry {index} (transition {entry.transition_id})"
        if not entry.mac:
            raise _bad(audit, f"{named} is not signed")
        if entry.key_id != key.key_id:
            raise _bad(audit, f"{named} is signed with key {entry.key_id}, not {key.key_id}")
        if not key.valid(mac_message(entry.digest), entry.mac):
            raise _bad(
                audit,
                f"{named}: signature does not match (edited with the chain recomputed, or "
                "inserted, by someone without the audit key)",
            )


def _anchor(audit: AuditLog, state: RolloutState, key: AuditKey) -> Anchor:
    if state.audit_anchor is None:
        raise _bad(audit, "the state carries no audit anchor (written without one, or removed)")
    try:
        anchor = Anchor.from_json(state.audit_anchor)
    except InvalidEventError as exc:
        raise _bad(audit, str(exc)) from None
    if not key.valid(anchor.message(), anchor.mac):
        raise _bad(audit, "the state's audit anchor is not signed with this key (state edited?)")
    if anchor.plan_digest != state.plan_digest or anchor.state_seq != state.seq:
        raise _bad(audit, "the state's audit anchor belongs to another state (plan or sequence)")
    return anchor


def _check_anchor(
    audit: AuditLog, entries: list[AuditEntry], state: RolloutState, anchor: Anchor
) -> None:
    n = len(entries)
    pending = state.pending
    if n < anchor.count:
        first = f"entry {n}" if n else "entry 0"
        raise _bad(
            audit,
            f"{first} is missing: the log holds {n} entries but the state anchors "
            f"{anchor.count} (head {anchor.head[:12]}): the tail was removed or truncated",
        )
    head = entries[anchor.count - 1].digest if anchor.count else GENESIS
    if head != anchor.head:
        raise _bad(
            audit,
            f"entry {anchor.count - 1} (transition {entries[anchor.count - 1].transition_id}) "
            f"is not the anchored head {anchor.head[:12]}",
        )
    extra = entries[anchor.count :]
    if not extra:
        return
    if len(extra) == 1 and pending is not None and extra[0].transition_id == pending.id:
        return
    raise _bad(
        audit,
        f"entry {anchor.count} (transition {extra[0].transition_id}) follows the anchored head "
        "and is not the state's pending transition: it was added after the fact",
    )


def verify_record(
    audit: AuditLog, state: RolloutState | None, key: AuditKey | None
) -> VerifyReport:
    """Check the log and the state against each other; raise on the first problem."""
    if key is None:
        raise AuditKeyError(f"rollout verify needs the audit key: set {ENV_KEY} or {ENV_KEY_SSM}")
    if state is not None:
        check_digest(state.plan, state.plan_digest)
    if not audit.exists():
        if state is None:
            raise AuditMissingError(f"no audit log at {audit!r} and no rollout state")
        raise AuditMissingError(f"no audit log at {audit!r}, but the rollout state exists")
    entries = audit.history()  # the chain (3)
    _check_signatures(audit, entries, key)
    if state is None:
        raise _bad(audit, "there is an audit log but no rollout state to anchor it")
    anchor = _anchor(audit, state, key)
    _check_anchor(audit, entries, state, anchor)
    head = entries[-1].digest if entries else GENESIS
    return VerifyReport(len(entries), head, key.key_id, state.pending.id if state.pending else None)
