"""An audit entry: one transition of the rollout, sealed into a hash chain and optionally signed.

Each entry says who (``user@host``), when, what (``action``), from → to (percentage and status),
why (``reason``) and on what evidence (the judge's :class:`~rollout.judge.Verdict` evidence).
Every entry carries the sha256 ``digest`` of its content chained to the previous entry's, so
:func:`check_chain` detects an edited, removed or reordered entry and raises
:class:`AuditIntegrityError`. An entry with a field this version does not know is refused, not
silently dropped.

The chain alone can be recomputed by anyone who can write the log; with an audit key
(:mod:`rollout.signing`) each entry also carries an HMAC of its digest, and
:func:`rollout.verify.verify_record` checks the MACs and the signed head the state keeps. The logs
that store entries are in :mod:`rollout.audit`.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from rollout.signing import AuditKey
from rollout.state_types import check_types
from snapmerge.errors import SnapmergeError

GENESIS: Final = "0" * 64


class AuditIntegrityError(SnapmergeError):
    """The stored log is not what was appended (an entry edited, removed or out of order)."""


class AuditMissingError(AuditIntegrityError):
    """There is no audit log where one was expected."""


class AuditSlotTakenError(SnapmergeError):
    """A slot (sequence number) of an S3 audit log is already written: entries are immutable."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"audit slot {key} is already written; entries cannot be replaced")


def default_actor() -> str:
    """``SNAPMERGE_ACTOR`` when set, else ``user@host``."""
    explicit = os.environ.get("SNAPMERGE_ACTOR")
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class AuditEntry:
    """One transition of the rollout. ``seq`` and ``digest`` are set by the log on append."""

    transition_id: str
    action: str
    from_percent: float
    to_percent: float
    from_status: str
    to_status: str
    reason: str
    who: str = field(default_factory=default_actor)
    at: str = field(default_factory=now_iso)
    plan_digest: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    seq: int = -1
    prev_digest: str = ""
    digest: str = ""
    key_id: str = ""  # which audit key signed (rollout.signing); "" when unsigned
    rollout: str = ""  # the state's location (rollout.state.location_of): binds the entry to it
    mac: str = ""  # HMAC-SHA256(key, digest)

    def content_digest(self, prev: str) -> str:
        unsealed = ("digest", "prev_digest", "mac")
        body = {k: v for k, v in self.to_json().items() if k not in unsealed}
        if not body.get("rollout"):
            body.pop("rollout", None)  # entries written before the field existed hash as they did
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256((prev + canonical).encode()).hexdigest()

    def sealed(self, seq: int, prev: str, key: AuditKey | None = None) -> AuditEntry:
        placed = replace(self, seq=seq, prev_digest=prev, digest="", mac="")
        placed = replace(placed, key_id=key.key_id if key else "")
        digest = placed.content_digest(prev)
        return replace(placed, digest=digest, mac=key.sign(mac_message(digest)) if key else "")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["evidence"] = json.loads(json.dumps(dict(self.evidence), default=str))
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditEntry:
        """Decode one stored entry; a field this version does not write is refused."""
        check_types(data, _ENTRY_TYPES, "audit entry", _ENTRY_REQUIRED)
        return cls(**data)


_ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("transition_id", "action", "from_status", "to_status", "reason"), (str,)),
    "from_percent": (int, float),
    "to_percent": (int, float),
    **dict.fromkeys(("who", "at", "plan_digest", "prev_digest", "digest", "key_id"), (str,)),
    "evidence": (Mapping,),
    "seq": (int,),
    "rollout": (str,),
    "mac": (str,),
}
_ENTRY_REQUIRED = tuple(list(_ENTRY_TYPES)[:7])  # the fields with no default


def mac_message(digest: str) -> str:
    return f"entry|{digest}"


def check_chain(entries: list[AuditEntry], where: str) -> list[AuditEntry]:
    prev = GENESIS
    for index, entry in enumerate(entries):
        if entry.seq != index or entry.prev_digest != prev:
            raise AuditIntegrityError(
                f"{where}: entry {index} is out of sequence (seq {entry.seq}, "
                f"transition {entry.transition_id}): an entry was removed, inserted or reordered"
            )
        if entry.content_digest(prev) != entry.digest:
            raise AuditIntegrityError(
                f"{where}: entry {index} was modified after it was written "
                f"(transition {entry.transition_id})"
            )
        prev = entry.digest
    return entries
