"""The operator's audit key: HMAC signatures on audit entries and on the log's head in the state.

The hash chain of :mod:`rollout.audit` shows that entries follow one another, but anyone who can
write the log can recompute it. A signature needs a key the writer of the log does not have by
virtue of write access alone: the key comes from the environment (``SNAPMERGE_AUDIT_KEY``, the
secret itself) or from an SSM SecureString parameter (``SNAPMERGE_AUDIT_KEY_SSM``, its name).

* every entry carries ``mac = HMAC-SHA256(key, digest)``; the digest covers the entry's content
  and the previous digest, so one MAC per entry authenticates the whole prefix up to it;
* the state carries an :class:`Anchor`: how many entries the log holds after the last committed
  transition, the head digest, the plan digest and the state's sequence number, also signed —
  so a removed tail, a deleted log or a state whose plan was swapped is caught even though each
  remaining entry is genuine.

``key_id`` (the first 12 hex digits of sha256(key)) says which key signed, never the key.
See docs/adr/0009-audit-signing-and-anchor.md.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

from snapmerge import aws
from snapmerge.errors import InvalidEventError, StoreError

ENV_KEY: Final = "SNAPMERGE_AUDIT_KEY"
ENV_KEY_SSM: Final = "SNAPMERGE_AUDIT_KEY_SSM"
MIN_KEY_BYTES: Final = 16


class AuditKeyError(InvalidEventError):
    """The audit key is missing, too short or cannot be read."""


@dataclass(frozen=True, repr=False)
class AuditKey:
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
    client = ssm if ssm is not None else aws.client("ssm")
    try:
        answer = client.get_parameter(Name=parameter, WithDecryption=True)
        value = str(answer["Parameter"]["Value"])
    except Exception as exc:  # botocore's ClientError: rollout/ may not import botocore
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        raise StoreError(f"audit key parameter {parameter!r} cannot be read: {code}") from None
    return AuditKey(value.encode())


@dataclass(frozen=True)
class Anchor:
    """The audit log's head as of a committed state, signed with the audit key."""

    count: int  # entries in the log
    head: str  # digest of the last entry (the genesis digest when count == 0)
    plan_digest: str
    state_seq: int
    key_id: str = ""
    mac: str = ""

    def message(self) -> str:
        return f"anchor|{self.count}|{self.head}|{self.plan_digest}|{self.state_seq}"

    def signed(self, key: AuditKey | None) -> Anchor:
        if key is None:
            return self
        return Anchor(
            self.count,
            self.head,
            self.plan_digest,
            self.state_seq,
            key.key_id,
            key.sign(self.message()),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Anchor:
        try:
            return cls(
                count=int(data["count"]),
                head=str(data["head"]),
                plan_digest=str(data["plan_digest"]),
                state_seq=int(data["state_seq"]),
                key_id=str(data.get("key_id", "")),
                mac=str(data.get("mac", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidEventError(f"the state's audit anchor is unreadable: {exc!r}") from None
