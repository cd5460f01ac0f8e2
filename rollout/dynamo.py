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

Reads are strongly consistent. The client comes from :func:`snapmerge.aws.client` or is injected;
boto3 is not imported here, and botocore errors are recognised by their ``response`` code.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from rollout.audit import (
    AuditEntry,
    AuditIntegrityError,
    AuditSlotTakenError,
    append_in_slots,
    check_chain,
)
from rollout.signing import AuditKey
from rollout.state import RolloutState, StateConflictError
from snapmerge import aws
from snapmerge.errors import StoreError


def _code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    return str(response.get("Error", {}).get("Code", "")) or None


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
        self._client = client if client is not None else aws.client("dynamodb")

    def __repr__(self) -> str:
        return f"DynamoStateStore('dynamodb://{self.table}/{self.name}')"

    def _key(self) -> dict[str, Any]:
        return {"PK": {"S": f"ROLLOUT#{self.name}"}, "SK": {"S": "STATE"}}

    def read(self) -> tuple[RolloutState | None, str | None]:
        try:
            item = self._client.get_item(
                TableName=self.table, Key=self._key(), ConsistentRead=True
            ).get("Item")
        except Exception as exc:
            if _code(exc) is None:
                raise
            raise StoreError(f"{self!r}: read failed: {_code(exc)}") from exc
        if item is None:
            return None, None
        try:
            state = RolloutState.from_json(json.loads(item["body"]["S"]))
        except (ValueError, TypeError, KeyError) as exc:
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
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(PK)"}
        else:
            condition = {
                "ConditionExpression": "#version = :expected",
                "ExpressionAttributeNames": {"#version": "version"},
                "ExpressionAttributeValues": {":expected": {"S": expected_version}},
            }
        try:
            self._client.put_item(TableName=self.table, Item=item, **condition)
        except Exception as exc:
            code = _code(exc)
            if code == "ConditionalCheckFailedException":
                _, current = self.read()
                raise StateConflictError(repr(self), expected_version, current) from None
            if code is None:
                raise
            raise StoreError(f"{self!r}: write failed: {code}") from exc
        return version


class DynamoAuditLog:
    def __init__(
        self, table: str, name: str = "default", key: AuditKey | None = None, client: Any = None
    ) -> None:
        self.table, self.name, self.key = table, name, key
        self._client = client if client is not None else aws.client("dynamodb")

    def __repr__(self) -> str:
        return f"DynamoAuditLog('dynamodb://{self.table}/{self.name}')"

    @property
    def _pk(self) -> str:
        return f"ROLLOUT#{self.name}#AUDIT"

    def _items(self, limit: int | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "PK = :pk",
            "ExpressionAttributeValues": {":pk": {"S": self._pk}},
            "ConsistentRead": True,
        }
        if limit is not None:
            kwargs["Limit"] = limit
        items: list[dict[str, Any]] = []
        while True:
            try:
                page = self._client.query(**kwargs)
            except Exception as exc:
                if _code(exc) is None:
                    raise
                raise StoreError(f"{self!r}: query failed: {_code(exc)}") from exc
            items.extend(page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last or limit is not None:
                return items
            kwargs["ExclusiveStartKey"] = last

    def exists(self) -> bool:
        return bool(self._items(limit=1))

    def history(self) -> list[AuditEntry]:
        entries = []
        for item in self._items():
            try:
                entries.append(AuditEntry.from_json(json.loads(item["body"]["S"])))
            except (ValueError, TypeError, KeyError) as exc:
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
            self._client.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(SK)"
            )
        except Exception as exc:
            code = _code(exc)
            if code == "ConditionalCheckFailedException":
                raise AuditSlotTakenError(slot) from None
            if code is None:
                raise
            raise StoreError(f"{self!r}: append failed: {code}") from exc
        return entry

    def append(self, entry: AuditEntry) -> AuditEntry:
        return append_in_slots(self, self.history, self._write_slot, entry, self.key)
