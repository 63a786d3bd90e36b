"""The change feed: every write to the jobs table, as DynamoDB stream records.

Each write to a job item (insert or modify) appends, in the same transaction, one record
shaped exactly like a record of a DynamoDB stream with ``NEW_AND_OLD_IMAGES`` as Lambda
delivers it, images in DynamoDB JSON. So ``Scheduler.process_stream_event`` runs on
either backend unchanged, and a record is in the feed if and only if its write committed.

``FeedReader.poll()`` has the contract of ``overseer.backends.aws.stream.StreamReader.poll``: the
records after the last one it returned, filtered with the scheduler's filter patterns (``overseer.stream``).
Its position is also kept in the SQLite file, under the reader's name, so a restarted
runner resumes where the last one stopped. The position is saved **on the next poll**
(or by ``commit()``): calling ``poll()`` again says "the previous batch was handled", as
a Lambda event source mapping checkpoints a batch only after the function succeeded. A
runner that dies mid-batch therefore gets that batch again (at-least-once, like Lambda;
the scheduler is idempotent).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from ...stream import passes_stream_filters
from .db import Database, database

REGION = "local"
_serializer = TypeSerializer()
# Attributes stored as a number set (NS) in DynamoDB; kept as JSON lists here.
NUMBER_SETS = frozenset({"finished_deps"})


def stream_arn(path: object) -> str:
    return f"arn:aws:dynamodb:{REGION}:000000000000:table/overseer-jobs/stream/embedded:{path}"


def _dynamo_value(name: str, value: Any) -> Any:
    if name in NUMBER_SETS:
        return {Decimal(int(v)) for v in value}
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, list):
        return [_dynamo_value("", v) for v in value]
    if isinstance(value, dict):
        return {k: _dynamo_value(k, v) for k, v in value.items()}
    return value


def image(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item (plain JSON values) in DynamoDB JSON, as stream images carry it."""
    out = {}
    for name, value in item.items():
        if value is None or (name in NUMBER_SETS and not value):
            continue  # DynamoDB has no null attributes and no empty sets
        out[name] = _serializer.serialize(_dynamo_value(name, value))
    return out


def append(
    db: Database,
    conn: Any,
    keys: Mapping[str, str],
    new: Mapping[str, Any],
    old: Mapping[str, Any] | None,
) -> None:
    """Append one record for a write to a job item (inside the writing transaction)."""
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": round(time.time(), 3),
        "Keys": {k: {"S": v} for k, v in keys.items()},
        "NewImage": image(new),
    }
    if old is not None:
        body["OldImage"] = image(old)
    body["StreamViewType"] = "NEW_AND_OLD_IMAGES"
    body["SizeBytes"] = len(json.dumps(body["NewImage"])) + len(json.dumps(body.get("OldImage") or {}))
    record = {
        "eventID": uuid.uuid4().hex,
        "eventName": "INSERT" if old is None else "MODIFY",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": body,
        "eventSourceARN": stream_arn(db.path),
    }
    # The SequenceNumber is the row's own increasing id, added when the record is read.
    conn.execute(
        "INSERT INTO feed (acted, record) VALUES (?, ?)",
        (int(passes_stream_filters(record)), json.dumps(record, separators=(",", ":"))),
    )


def _with_sequence(seq: int, text: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(text)
    record["dynamodb"]["SequenceNumber"] = f"{seq:021d}"
    return record


class FeedReader:
    """Reads the feed from where this reader (by ``name``) last committed.

    ``resume=False`` starts after the newest record instead (ignore history).
    """

    def __init__(self, path: object, *, name: str = "scheduler", resume: bool = True) -> None:
        self.db = database(str(path))
        self.name = name
        self.position = 0
        with self.db.read() as conn:
            row = conn.execute("SELECT position FROM feed_readers WHERE name = ?", (name,)).fetchone()
            if resume and row is not None:
                self.position = int(row[0])
            elif not resume:
                last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM feed").fetchone()
                self.position = int(last[0])
        self.committed = self.position

    def poll(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The next records (Lambda-shaped) that pass the scheduler's filter.

        Saves the position reached by the previous poll first (see the module docstring).
        """
        self.commit()
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT seq, acted, CASE WHEN acted THEN record END FROM feed WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (self.position, limit),
            ).fetchall()
        # The filter was applied when the record was written (the ``acted`` column).
        records = [_with_sequence(int(seq), text) for seq, acted, text in rows if acted]
        if rows:
            self.position = int(rows[-1][0])
        return records

    def commit(self, position: int | None = None) -> None:
        """Save ``position`` (default: the end of the last batch returned) durably."""
        position = self.position if position is None else position
        if position == self.committed:
            return
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO feed_readers (name, position) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                (self.name, position),
            )
        self.committed = position

    def trim(self) -> int:
        """Delete records every reader has committed past; returns how many."""
        with self.db.write() as conn:
            low = conn.execute("SELECT MIN(position) FROM feed_readers").fetchone()[0]
            if low is None:
                return 0
            return int(conn.execute("DELETE FROM feed WHERE seq <= ?", (low,)).rowcount)
