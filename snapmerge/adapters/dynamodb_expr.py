"""DynamoDB expression pieces for the lock adapter: attribute-name placeholders, the "row
unchanged since read" condition, and one ``Update`` entry of a ``TransactWriteItems`` call."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Every attribute goes through a placeholder: TYPE, owner and others are DynamoDB reserved words.
_NAMES = {
    "#pk": "PK",
    "#owner": "owner",
    "#expires": "expires",
    "#expires_ms": "expires_ms",
    "#heartbeat": "heartbeat",
    "#acquired": "acquired",
    "#collection": "collection",
    "#gsi1pk": "GSI1PK",
    "#gsi1sk": "GSI1SK",
    "#type": "TYPE",
    "#fence": "fence",
    "#ttl": "time_to_live",
}

_ROW_MISSING = "attribute_not_exists(#pk)"
# The fields a grant decision reads (lock_rows.RowView): if any changed, the decision is stale.
_DECIDED_ON = (
    ("#owner", "owner"),
    ("#expires", "expires"),
    ("#expires_ms", "expires_ms"),
    ("#fence", "fence"),
)


def names_for(*expressions: str) -> dict[str, str]:
    """``ExpressionAttributeNames`` for exactly the placeholders the expressions use."""
    used = set(re.findall(r"#\w+", " ".join(expressions)))
    return {k: v for k, v in _NAMES.items() if k in used}


def unchanged_since_read(seen: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """A condition that holds only while the row is as ``seen`` for every field we decided on."""
    if not seen:
        return _ROW_MISSING, {}
    parts: list[str] = []
    values: dict[str, Any] = {}
    for placeholder, name in _DECIDED_ON:
        if name in seen:
            parts.append(f"{placeholder} = :seen_{name}")
            values[f":seen_{name}"] = seen[name]
        else:
            parts.append(f"attribute_not_exists({placeholder})")
    return " AND ".join(parts), values


def tx_update(
    table: str, key: Mapping[str, Any], update: str, condition: str, values: Mapping[str, Any]
) -> dict[str, Any]:
    """One conditional ``Update`` of a transaction, with only the names and values it uses."""
    text = f"{update} {condition}"
    return {
        "Update": {
            "TableName": table,
            "Key": dict(key),
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names_for(update, condition),
            "ExpressionAttributeValues": {
                k: v for k, v in values.items() if re.search(rf"{re.escape(k)}\b", text)
            },
        }
    }
