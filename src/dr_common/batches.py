"""Batches on the bus: one VOLTTRON message carrying the items of many VENs (dr/batch/cmd, dr/batch/ack,
dr/batch/telemetry, dr/batch/status), compacted by `compact_batch` and read back by `batch_items`."""

from __future__ import annotations

from typing import Any

# A VOLTTRON publish costs more the bigger the message (the router renders and re-encodes every message it
# passes), so a dispatch round goes on the bus compacted: the fields every command shares once under "shared",
# and what differs per VEN as one list per field under "columns" (a list of strings costs the router about a
# quarter of what a list of small objects costs). Items that do not all have the same fields keep one object
# each under the batch's key. Readers expand any of these forms with `batch_items`; a batch without "shared"
# or "columns" is read as it is.
BATCH_SHARED_KEY = "shared"
BATCH_COLUMNS_KEY = "columns"


def compact_batch(items: list[dict[str, Any]], key: str = "commands") -> dict[str, Any]:
    """`{"shared": {fields equal in every item}, "columns": {field: [value of each item]}}`, or, when the items
    differ in their fields, `{"shared": {...}, key: [the other fields of each item]}`."""
    if not items:
        return {key: []}
    shared = dict(items[0])
    for item in items[1:]:
        for name in [n for n, v in shared.items() if n not in item or item[n] != v]:
            del shared[name]
        if not shared:
            break
    shared.pop("venId", None)
    names = [n for n in items[0] if n not in shared]
    width = len(shared) + len(names)
    if all(len(item) == width for item in items):
        try:
            columns = {name: [item[name] for item in items] for name in names}
        except KeyError:  # same number of fields, other names
            columns = None
        if columns is not None:
            return {BATCH_SHARED_KEY: shared, BATCH_COLUMNS_KEY: columns} if shared else {BATCH_COLUMNS_KEY: columns}
    if not shared:
        return {key: list(items)}
    return {BATCH_SHARED_KEY: shared, key: [{n: v for n, v in item.items() if n not in shared} for item in items]}


def _rows(columns: object) -> list[dict[str, Any]] | None:
    """The items of a "columns" object (None unless every column is a list and all have one length)."""
    if not isinstance(columns, dict) or not columns:
        return None
    values = list(columns.values())
    if not all(isinstance(column, list) for column in values) or len({len(column) for column in values}) != 1:
        return None
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


def batch_items(message: object, key: str) -> list[Any] | None:
    """The items of a batch message with its shared fields laid under each; None when neither `key` is a list
    nor "columns" a set of equal-length lists. An item that is not an object is returned as it is (the caller
    counts it as bad)."""
    if not isinstance(message, dict):
        return None
    items = message.get(key)
    if not isinstance(items, list):
        if items is not None or BATCH_COLUMNS_KEY not in message:
            return None
        items = _rows(message[BATCH_COLUMNS_KEY])
        if items is None:
            return None
    shared = message.get(BATCH_SHARED_KEY)
    if not isinstance(shared, dict) or not shared:
        return items
    return [{**shared, **item} if isinstance(item, dict) else item for item in items]

