"""Is the record what the controller wrote? — checked by ``rollout verify`` and before every
controller command.

:func:`check_record` checks the state and the audit log against each other, in order, and stops
at the first problem with an :class:`~rollout.audit_entry.AuditIntegrityError` naming it:

1. the state's plan hashes to its ``plan_digest`` (:func:`rollout.plan.check_digest`);
2. the state's :class:`~rollout.signing.Anchor`: present, signed with this key (or, with no key,
   not signed at all — a signed rollout is never driven without its key), written for this
   state's location, and every field of the state (plan, stage, percentage, status, timings,
   ``pending``, ...) is the one signed: an edited field is named;
3. the log exists when the anchor counts entries; its chain (sequence, previous digest, content);
   each entry's HMAC and the rollout location it was written for;
4. the log ends exactly at the anchored head — one entry more only for the transition the state
   holds as ``pending`` (a controller stopped between the append and the commit);
5. the last anchored entry is the state's last transition (percentage, status, plan digest).

:func:`verify_record` is the same with the key required. With no key nothing is authenticated:
the checks then catch accidents, not someone who recomputes the digests.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollout.audit import AuditLog
from rollout.audit_entry import (
    GENESIS,
    AuditEntry,
    AuditIntegrityError,
    AuditMissingError,
    mac_message,
)
from rollout.plan import check_digest
from rollout.signing import ENV_KEY, ENV_KEY_SSM, Anchor, AuditKey, AuditKeyError
from rollout.state_types import RolloutState
from snapmerge.errors import InvalidEventError


class RecordMismatchError(AuditIntegrityError):
    """The state does not match its signed anchor, or the log does not end where it says."""


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


def _bad(audit: AuditLog, problem: str) -> RecordMismatchError:
    return RecordMismatchError(f"{audit!r}: {problem}")


def _check_signatures(audit: AuditLog, entries: list[AuditEntry], key: AuditKey | None) -> None:
    for index, entry in enumerate(entries):
        named = f"entry {index} (transition {entry.transition_id})"
        if key is None:
            if entry.mac or entry.key_id:
                raise AuditKeyError(
                    f"{audit!r}: {named} is signed (key {entry.key_id}): this rollout is signed; "
                    f"set {ENV_KEY} or {ENV_KEY_SSM} — without the key nothing is appended to it"
                )
            continue
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


def _check_locations(audit: AuditLog, entries: list[AuditEntry], location: str) -> None:
    for index, entry in enumerate(entries):
        if entry.rollout != location:
            raise _bad(
                audit,
                f"entry {index} (transition {entry.transition_id}) was written for the rollout "
                f"at {entry.rollout or '(no location)'}, not {location}: the log was copied "
                "from another rollout",
            )


def _anchor(audit: AuditLog, state: RolloutState, key: AuditKey | None, location: str) -> Anchor:
    if state.audit_anchor is None:
        if key is not None:
            raise _bad(
                audit,
                "the state carries no audit anchor, but an audit key is configured: the anchor "
                "was removed (or the rollout was started without a key: start a new one with a "
                "new audit location)",
            )
        raise _bad(audit, "the state carries no audit anchor (removed, or an older version)")
    try:
        anchor = Anchor.from_json(state.audit_anchor)
    except InvalidEventError as exc:
        raise _bad(audit, str(exc)) from None
    if key is None:
        if anchor.mac or anchor.key_id:
            raise AuditKeyError(
                f"this rollout is signed (key {anchor.key_id}): set {ENV_KEY} or {ENV_KEY_SSM}; "
                "without the key its record cannot be checked and nothing is appended to it"
            )
    elif not anchor.mac:
        raise _bad(
            audit,
            "the state's audit anchor is not signed, but an audit key is configured: the "
            "signature was removed (or the rollout was started without a key: start a new one "
            "with a new audit location)",
        )
    elif anchor.key_id != key.key_id:
        raise _bad(
            audit, f"the state's audit anchor is signed with key {anchor.key_id}, not {key.key_id}"
        )
    elif not key.valid(anchor.message(), anchor.mac):
        raise _bad(audit, "the state's audit anchor is not signed with this key (anchor edited?)")
    if anchor.location != location:
        raise _bad(
            audit,
            f"the state's audit anchor was written for the rollout at {anchor.location}, not "
            f"{location}: the state was copied from another rollout",
        )
    signed = "signed" if key is not None else "written"
    fields = state.field_digests()
    edited = sorted(
        n for n in set(fields) | set(anchor.fields) if fields.get(n) != anchor.fields.get(n)
    )
    if edited:
        raise _bad(
            audit,
            f"the state's field(s) {', '.join(edited)} do not match its {signed} audit anchor: "
            "the state was edited after the controller wrote it; refusing to act on it",
        )
    return anchor


def _check_tail(
    audit: AuditLog, entries: list[AuditEntry], state: RolloutState, anchor: Anchor
) -> None:
    n = len(entries)
    if n < anchor.count:
        raise _bad(
            audit,
            f"entry {n} is missing: the log holds {n} entries but the state anchors "
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
    pending = state.pending
    if len(extra) == 1 and pending is not None and extra[0].transition_id == pending.id:
        return
    raise _bad(
        audit,
        f"entry {anchor.count} (transition {extra[0].transition_id}) follows the anchored head "
        "and is not the state's pending transition: it was added after the fact",
    )


def _check_last(
    audit: AuditLog, entries: list[AuditEntry], state: RolloutState, anchor: Anchor
) -> None:
    """The last anchored entry is the state's last transition."""
    if not anchor.count or not state.last_action:
        return
    last = entries[anchor.count - 1]
    said = (state.last_action.get("id"), state.percent, str(state.status), state.plan_digest)
    logged = (last.transition_id, last.to_percent, last.to_status, last.plan_digest)
    if said != logged:
        raise _bad(
            audit,
            f"the state (last transition {said[0]}, {state.percent:g} % {state.status}) does "
            f"not match the last audit entry {anchor.count - 1} (transition "
            f"{last.transition_id}, {last.to_percent:g} % {last.to_status})",
        )


def check_record(
    audit: AuditLog, state: RolloutState | None, key: AuditKey | None, location: str
) -> VerifyReport:
    """Check the state and the log against each other (see the module docstring)."""
    if state is None:
        if audit.exists():
            raise _bad(
                audit,
                f"there is an audit log but no rollout state at {location} (the state was "
                "deleted, or the log belongs to another rollout): start a new rollout with a "
                "new audit location",
            )
        return VerifyReport(0, GENESIS, key.key_id if key else "", None)
    check_digest(state.plan, state.plan_digest)
    anchor = _anchor(audit, state, key, location)
    if not audit.exists():
        if anchor.count:
            raise AuditMissingError(
                f"no audit log at {audit!r}, but the rollout state anchors {anchor.count} "
                "entries: the log was deleted"
            )
        entries: list[AuditEntry] = []
    else:
        entries = audit.history()  # the chain
    _check_signatures(audit, entries, key)
    _check_locations(audit, entries, location)
    _check_tail(audit, entries, state, anchor)
    _check_last(audit, entries, state, anchor)
    head = entries[-1].digest if entries else GENESIS
    pending = state.pending.id if state.pending else None
    return VerifyReport(len(entries), head, key.key_id if key else "", pending)


def verify_record(
    audit: AuditLog, state: RolloutState | None, key: AuditKey | None, location: str
) -> VerifyReport:
    """``rollout verify``: :func:`check_record`, which only vouches for a record with the key."""
    if key is None:
        raise AuditKeyError(f"rollout verify needs the audit key: set {ENV_KEY} or {ENV_KEY_SSM}")
    if state is None and not audit.exists():
        raise AuditMissingError(f"no audit log at {audit!r} and no rollout state")
    if state is not None and not audit.exists():
        check_digest(state.plan, state.plan_digest)
        raise AuditMissingError(f"no audit log at {audit!r}, but the rollout state exists")
    return check_record(audit, state, key, location)
