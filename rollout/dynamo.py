"""The rollout's state and audit log in a DynamoDB table (``dynamodb://table/name``).

For a team that drives one rollout from CI and from laptops: every controller reads and writes
the same items, and DynamoDB applies each condition atomically.

Items (the table needs string keys ``PK`` and ``SK``; the lock table has them)::

    PK = ROLLOUT#{name}          SK = STATE                body, version
    PK = ROLLOUT#{name}#AUDIT    SK = ENTRY#{seq:010d}     body

* state write — ``attribute_not_exists(PK)`` to create, else ``version = :expected``; each write
  sets a fresh random ``version``. A failed condition is :class:`~rollout.state.StateConflictError`.
* audit append — ``attribute_not_exists(SK)`` on the next slot: two writers never take one slot,
  the loser re-reads and takes the next (as :class:`~rollout.audit.S3AuditLog`). There is no
  update or delete here.

Reads are strongly consistent. AWS is reached through
:class:`~snapmerge.adapters.dynamodb_items.DynamoItems` (an injected client, or one from the
environment), which translates every SDK error: a refused condition is
:class:`~snapmerge.errors.ConditionFailedError`, anything else
:class:`~snapmerge.errors.StoreError`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from rollout.audit import append_in_slots
from rollout.audit_entry import AuditEntry, AuditIntegrityError, AuditSlotTakenError, check_chain
from rollout.signing import AuditKey
from rollout.state import StateConflictError
from rollout.state_types import RolloutState
from snapmerge.adapters.dynamodb_items import DynamoItems
from snapmerge.errors import ConditionFailedError, StoreError


def split_url(url: str) -> tuple[str, str]:
    """``dynamodb://table/name`` → (table, name); the name defaults to ``default``."""
    table, _, name = url[len("dynamodb://") :].partition("/")
    if not table:
        raise StoreError(f"{url!r} is not dynamodb://table/name")
    return table, name.strip("/") or "default"


class DynamoStateStore:
    def __init__(self, table: str, name: str = "default", client: Any = None) -> None:
        self.table, self.name = table, name
        self.location = f"dynamodb://{table}/{name}"
        self._table = DynamoItems(table, client)

    def __repr__(self) -> str:
        return f"DynamoStateStore('dynamodb://{self.table}/{self.name}')"

    def _key(self) -> dict[str, Any]:
        return {"PK": {"S": f"ROLLOUT#{self.name}"}, "SK": {"S": "STATE"}}

    def read(self) -> tuple[RolloutState | None, str | None]:
        try:
            item = self._table.get(self._key())
        except StoreError as exc:
            raise StoreError(f"{self!r}: read failed: {exc.code}", code=exc.code) from exc
        if item is None:
            return None, None
        try:
            state = RolloutState.from_json(json.loads(item["body"]["S"]))
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise StoreError(f"rollout state {self!r} is unreadable: {exc!r}") from None
        return state, str(item["version"]["S"])

    def write(self, state: RolloutState, expected_version: str | None) -> str:
        version = uuid.uuid4().hex
        item = {
            **self._key(),
            "body": {"S": json.dumps(state.to_json(), sort_keys=True)},
            "version": {"S": version},
        }
        # create: nothing there yet | update: still the version we read
        if expected_version is None:
            condition: dict[str, Any] = {"condition": "attribute_not_exists(PK)"}
        else:
            condition = {
                "condition": "#version = :expected",
                "names": {"#version": "version"},
                "values": {":expected": {"S": expected_version}},
            }
        try:
            self._table.put(item, **condition)
        except ConditionFailedError:
            _, current = self.read()
            raise StateConflictError(repr(self), expected_version, current) from None
        except StoreError as exc:
            raise StoreError(f"{self!r}: write failed: {exc.code}", code=exc.code) from exc
        return version


class DynamoAuditLog:
    def __init__(
        self, table: str, name: str = "default", key: AuditKey | None = None, client: Any = None
    ) -> None:
        self.table, self.name, self.key = table, name, key
        self._table = DynamoItems(table, client)

    def __repr__(self) -> str:
        return f"DynamoAuditLog('dynamodb://{self.table}/{self.name}')"

    @property
    def _pk(self) -> str:
        return f"ROLLOUT#{self.name}#AUDIT"

    def _items(self, limit: int | None = None) -> list[dict[str, Any]]:
        try:
            return self._table.query_partition("PK", self._pk, limit=limit)
        except StoreError as exc:
            raise StoreError(f"{self!r}: query failed: {exc.code}", code=exc.code) from exc

    def exists(self) -> bool:
        return bool(self._items(limit=1))

    def history(self) -> list[AuditEntry]:
        entries = []
        for item in self._items():
            try:
                entries.append(AuditEntry.from_json(json.loads(item["body"]["S"])))
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                raise AuditIntegrityError(f"{item['SK']['S']}: unreadable: {exc}") from None
        return check_chain(entries, repr(self))

    def _write_slot(self, entry: AuditEntry) -> AuditEntry:
        slot = f"ENTRY#{entry.seq:010d}"
        item = {
            "PK": {"S": self._pk},
            "SK": {"S": slot},
            "body": {"S": json.dumps(entry.to_json(), sort_keys=True, default=str)},
        }
        try:  # only into an empty slot: entries are never replaced
            self._table.put(item, condition="attribute_not_exists(SK)")
        except ConditionFailedError:
            raise AuditSlotTakenError(slot) from None
        except StoreError as exc:
            raise StoreError(f"{self!r}: append failed: {exc.code}", code=exc.code) from exc
        return entry

    def append(self, entry: AuditEntry) -> AuditEntry:
        return append_in_slots(self, self.history, self._write_slot, entry, self.key)
