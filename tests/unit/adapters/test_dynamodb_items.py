"""The DynamoDB item adapter on the embedded server (the lock table's PK/SK schema), and each
error it translates."""

from __future__ import annotations

from typing import Any

import pytest

from snapmerge import aws as aws_clients
from snapmerge.adapters.dynamodb_items import DynamoItems
from snapmerge.errors import ConditionFailedError, MissingResourceError, StoreError
from tests.conftest import AwsEnv
from tests.unit.adapters.faults import Buggy, Unreachable, refusing


def _item(pk: str, sk: str, **attrs: str) -> dict[str, Any]:
    return {"PK": {"S": pk}, "SK": {"S": sk}, **{k: {"S": v} for k, v in attrs.items()}}


def test_conditional_create_and_update(aws: AwsEnv) -> None:
    items = DynamoItems(aws.table)
    key = {"PK": {"S": "DOC#a"}, "SK": {"S": "STATE"}}
    assert items.get(key) is None
    items.put(_item("DOC#a", "STATE", version="v1"), condition="attribute_not_exists(PK)")
    with pytest.raises(ConditionFailedError) as info:
        items.put(_item("DOC#a", "STATE", version="v9"), condition="attribute_not_exists(PK)")
    assert info.value.condition == "attribute_not_exists(PK)"
    update = {
        "condition": "#v = :expected",
        "names": {"#v": "version"},
        "values": {":expected": {"S": "v1"}},
    }
    items.put(_item("DOC#a", "STATE", version="v2"), **update)
    with pytest.raises(ConditionFailedError):
        items.put(_item("DOC#a", "STATE", version="v3"), **update)  # v1 is gone
    assert items.get(key) == _item("DOC#a", "STATE", version="v2")


class SmallPages:
    """The embedded table's client, with every query cut to pages of two items."""

    def __init__(self) -> None:
        self.inner, self.queries = aws_clients.client("dynamodb"), 0

    def query(self, **kwargs: Any) -> Any:
        self.queries += 1
        return self.inner.query(**{"Limit": 2, **kwargs})


def test_a_partition_is_read_to_its_last_page(aws: AwsEnv) -> None:
    writer = DynamoItems(aws.table)
    for seq in range(5):
        writer.put(_item("LOG#a", f"ENTRY#{seq:03d}"))
    writer.put(_item("LOG#b", "ENTRY#000"))  # another partition: not read
    client = SmallPages()
    items = DynamoItems(aws.table, client).query_partition("PK", "LOG#a")
    assert [i["SK"]["S"] for i in items] == [f"ENTRY#{s:03d}" for s in range(5)]
    assert client.queries >= 3  # five items, two a page: the loop followed LastEvaluatedKey
    first = DynamoItems(aws.table).query_partition("PK", "LOG#a", limit=1)
    assert [i["SK"]["S"] for i in first] == ["ENTRY#000"]


def test_a_missing_table_is_missing_resource(aws: AwsEnv) -> None:
    items = DynamoItems(f"{aws.table}-missing")
    with pytest.raises(MissingResourceError) as info:
        items.get({"PK": {"S": "x"}, "SK": {"S": "y"}})
    assert info.value.code == "ResourceNotFoundException"
    with pytest.raises(MissingResourceError):
        items.query_partition("PK", "x")


@pytest.mark.parametrize(
    ("operation", "code"),
    [
        ("get_item", "ProvisionedThroughputExceededException"),
        ("put_item", "ThrottlingException"),
        ("query", "AccessDeniedException"),
    ],
)
def test_throttling_and_access_denied_are_store_errors(
    aws: AwsEnv, operation: str, code: str
) -> None:
    with refusing("dynamodb", operation, code) as client:
        items = DynamoItems(aws.table, client)
        with pytest.raises(StoreError) as info:
            if operation == "get_item":
                items.get({"PK": {"S": "x"}, "SK": {"S": "y"}})
            elif operation == "put_item":
                items.put(_item("x", "y"), condition="attribute_not_exists(PK)")
            else:
                items.query_partition("PK", "x")
    assert info.value.code == code
    assert not isinstance(info.value, (MissingResourceError, ConditionFailedError))


def test_no_connection_is_a_store_error_and_a_bug_passes_through() -> None:
    with pytest.raises(StoreError) as info:
        DynamoItems("t", Unreachable()).put(_item("x", "y"))
    assert info.value.code == "EndpointConnectionError"
    with pytest.raises(KeyError):
        DynamoItems("t", Buggy()).get({"PK": {"S": "x"}, "SK": {"S": "y"}})
