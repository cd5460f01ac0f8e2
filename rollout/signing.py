"""The operator's audit key: HMAC signatures on audit entries and on the log's head in the state.

The hash chain of :mod:`rollout.audit` shows that entries follow one another, but anyone who can
write the log can recompute it. A signature needs a key the writer of the log does not have by
virtue of write access alone: the key comes from the environment (``SNAPMERGE_AUDIT_KEY``, the
secret itself) or from an SSM SecureString parameter (``SNAPMERGE_AUDIT_KEY_SSM``, its name).

* every entry carries ``mac = HMAC-SHA256(key, digest)``; the digest covers the entry's content
  and the previous digest, so one MAC per entry authenticates the whole prefix up to it;
* every state write carries an :class:`Anchor`: how many entries the log holds and its head
  digest, where the state lives, and a digest of every field of the state (its plan, stage,
  percentage, status, timings, ``pending`` transition, ...), all signed — so a removed tail, a
  deleted log, an edited or forged state field, or a record copied to another location is
  caught even though each remaining entry is genuine.

``key_id`` (the first 12 hex digits of sha256(key)) says which key signed, never the key.
See docs/adr/0009-audit-signing-and-anchor.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from snapmerge.adapters.ssm_parameters import SsmParameters
from snapmerge.errors import InvalidEventError, StoreError

ENV_KEY: Final = "SNAPMERGE_AUDIT_KEY"
ENV_KEY_SSM: Final = "SNAPMERGE_AUDIT_KEY_SSM"
MIN_KEY_BYTES: Final = 16


class AuditKeyError(InvalidEventError):
    """The audit key is missing, too short or cannot be read."""


@dataclass(frozen=True, repr=False)
class AuditKey:
    """The secret that signs audit entries and the state's anchor (HMAC-SHA256); ``key_id``
    names it without showing it."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise AuditKeyError(f"the audit key must be at least {MIN_KEY_BYTES} bytes")

    def __repr__(self) -> str:  # never print the secret
        return f"AuditKey(id={self.key_id})"

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.secret).hexdigest()[:12]

    def sign(self, message: str) -> str:
        return hmac.new(self.secret, message.encode(), hashlib.sha256).hexdigest()

    def valid(self, message: str, mac: str) -> bool:
        return hmac.compare_digest(self.sign(message), mac)


def key_from_env(env: Mapping[str, str] | None = None, ssm: Any = None) -> AuditKey | None:
    """The key the environment names, or None when neither variable is set."""
    env = os.environ if env is None else env
    direct, parameter = env.get(ENV_KEY), env.get(ENV_KEY_SSM)
    if direct and parameter:
        raise AuditKeyError(f"set {ENV_KEY} or {ENV_KEY_SSM}, not both")
    if direct:
        return AuditKey(direct.encode())
    if not parameter:
        return None
    try:
        found = SsmParameters(ssm).get(parameter, decrypt=True)
    except StoreError as exc:
        raise StoreError(
            f"audit key parameter {parameter!r} cannot be read: {exc.code}", code=exc.code
        ) from None
    if found is None:
        raise StoreError(f"audit key parameter {parameter!r} cannot be read: ParameterNotFound")
    value = found.value
    return AuditKey(value.encode())


ANCHOR_VERSION: Final = 2


@dataclass(frozen=True)
class Anchor:
    """The audit log's head and the state's content as of one state write, signed with the key.

    ``fields`` maps every field of the state (but the anchor) to a short digest of its value, so
    an edited field — ``percent``, ``status``, ``pending``, a timing — is named, not just found;
    ``location`` is where the state lives, so a record copied to another rollout does not verify.
    """

    count: int  # entries in the log
    head: str  # digest of the last entry (the genesis digest when count == 0)
    location: str  # the state store's location (rollout.state.location_of)
    fields: Mapping[str, str]  # state field → short digest of its value
    key_id: str = ""
    mac: str = ""
    version: int = ANCHOR_VERSION

    def message(self) -> str:
        body = {
            "count": self.count,
            "head": self.head,
            "location": self.location,
            "fields": dict(self.fields),
            "version": self.version,
        }
        return "anchor|" + json.dumps(body, sort_keys=True, separators=(",", ":"))

    def signed(self, key: AuditKey | None) -> Anchor:
        if key is None:
            return self
        return replace(self, key_id=key.key_id, mac=key.sign(self.message()))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["fields"] = dict(self.fields)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Anchor:
        if not isinstance(data, Mapping):
            raise InvalidEventError("the state's audit anchor is not a JSON object")
        if int(data.get("version", 1)) != ANCHOR_VERSION or "fields" not in data:
            raise InvalidEventError(
                "the state's audit anchor was written by an earlier version (it does not cover "
                "the state's fields): verify the record with that version, then start a new "
                "rollout with a new audit location"
            )
        try:
            fields = {str(k): str(v) for k, v in dict(data["fields"]).items()}
            return cls(
                count=int(data["count"]),
                head=str(data["head"]),
                location=str(data["location"]),
                fields=fields,
                key_id=str(data.get("key_id", "")),
                mac=str(data.get("mac", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidEventError(f"the state's audit anchor is unreadable: {exc!r}") from None
