"""moto's server with DynamoDB writes taken one at a time.

DynamoDB applies conditional writes to an item one after another; moto's server runs
requests on threads and checks a condition and applies the write without a lock, so two
racing writes can both pass. The engine's fencing relies on the real behaviour, so the
emulator it starts must have it too. Reads are left to run beside the writes: a long
Query (the sweep reads whole graphs) must not stall every claim and release.

A refused ``TransactWriteItems`` (a finish committing an expansion whose fence no longer
holds) makes moto put back deep copies of the tables, stream shards included, so stream
readers holding an iterator would never see another record: the copies get the live
shards back.
"""

from __future__ import annotations

import threading
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler
from moto.server import main

WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
_one_write_at_a_time = threading.Lock()
_call_action = DynamoHandler.call_action


def _serialised_call_action(self: DynamoHandler) -> Any:
    if self._get_action() not in WRITES:
        return _call_action(self)
    with _one_write_at_a_time:
        return _call_action(self)


DynamoHandler.call_action = _serialised_call_action  # type: ignore[method-assign]

_transact_write_items = DynamoDBBackend.transact_write_items


def _transact_keeping_streams(self: DynamoDBBackend, transact_items: Any) -> None:
    live = dict(self.tables)
    try:
        _transact_write_items(self, transact_items)
    finally:
        for name, table in live.items():
            restored = self.tables.get(name)
            if restored is not None and restored is not table:
                restored.stream_shard = table.stream_shard


DynamoDBBackend.transact_write_items = _transact_keeping_streams  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
