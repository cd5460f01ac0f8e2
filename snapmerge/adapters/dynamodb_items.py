"""Items of one DynamoDB table in the low-level attribute format (``{"S": ...}``): a strongly
consistent get, a conditional put, and a strongly consistent query of one partition.

This is the table under a small document store (the rollout's state and audit log); the lock has
its own adapter (:mod:`snapmerge.adapters.dynamodb_lock`).

Errors: a refused ``ConditionExpression`` is :class:`~snapmerge.errors.ConditionFailedError`; a
missing table is :class:`~snapmerge.errors.MissingResourceError`; anything else the SDK raises
(throughput exceeded past its retries, access denied, no connection) is
:class:`~snapmerge.errors.StoreError` with the AWS code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from snapmerge import aws
from snapmerge.adapters.aws_errors import SDK_ERRORS, error_code, translate
from snapmerge.errors import ConditionFailedError

Item = dict[str, Any]
_CONDITION_FAILED: Final = "ConditionalCheckFailedException"


class DynamoItems:
    def __init__(self, table: str, client: Any | None = None) -> None:
        self.table = table
        self._client = client if client is not None else aws.client("dynamodb")

    def __repr__(self) -> str:
        return f"DynamoItems({self.table!r})"

    def get(self, key: Mapping[str, Any]) -> Item | None:
        try:
            reply = self._client.get_item(TableName=self.table, Key=dict(key), ConsistentRead=True)
        except SDK_ERRORS as exc:
            raise translate(exc, f"GetItem on {self.table!r}") from exc
        item = reply.get("Item")
        return None if item is None else dict(item)

    def put(
        self,
        item: Mapping[str, Any],
        *,
        condition: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        """Put ``item``, only if ``condition`` holds for the item it replaces (when given)."""
        kwargs: dict[str, Any] = {"TableName": self.table, "Item": dict(item)}
        if condition is not None:
            kwargs["ConditionExpression"] = condition
        if names:
            kwargs["ExpressionAttributeNames"] = dict(names)
        if values:
            kwargs["ExpressionAttributeValues"] = dict(values)
        try:
            self._client.put_item(**kwargs)
        except SDK_ERRORS as exc:
            if error_code(exc) == _CONDITION_FAILED:
                raise ConditionFailedError(f"table {self.table!r}", condition or "") from exc
            raise translate(exc, f"PutItem on {self.table!r}") from exc

    def query_partition(
        self, key_attribute: str, value: str, *, limit: int | None = None
    ) -> list[Item]:
        """Every item whose partition key ``key_attribute`` is the string ``value``, in sort-key
        order, read to the last page; with ``limit``, the first page of at most that many."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": key_attribute},
            "ExpressionAttributeValues": {":pk": {"S": value}},
            "ConsistentRead": True,
        }
        if limit is not None:
            kwargs["Limit"] = limit
        items: list[Item] = []
        while True:
            try:
                page = self._client.query(**kwargs)
            except SDK_ERRORS as exc:
                raise translate(exc, f"Query on {self.table!r}") from exc
            items.extend(page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last or limit is not None:
                return items
            kwargs["ExclusiveStartKey"] = last
