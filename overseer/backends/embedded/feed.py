"""The change feed: the writes to the jobs table the scheduler acts on, as DynamoDB stream
records.

Each write to a job item (insert or modify) that the scheduler's stream filter passes
(``overseer.stream``: Lambda drops the others before they reach the function) appends, in
the same transaction, one record shaped exactly like a record of a DynamoDB stream with
``NEW_AND_OLD_IMAGES`` as Lambda delivers it, images in DynamoDB JSON. So
``Scheduler.process_stream_event`` runs on either backend unchanged, and a record is in
the feed if and only if its write committed. The other writes (claims, heartbeats,
dependency counts, the scheduler's own releases: most of them) leave nothing, so they cost
no more than their own row. A commit that appended a record rings the feed's bell
(``bells``): the runner waiting on it looks at once.

``FeedReader.poll()`` has the contract of ``overseer.backends.aws.stream.StreamReader.poll``: the
records after the last one it returned, filtered with the scheduler's filter patterns (``overseer.stream``).
Its position is also kept in the SQLite file, under the reader's name, so a restarted
runner resumes where the last one stopped. The position is saved **on the next poll**
(or by ``commit()``): calling ``poll()`` again says "the previous batch was handled", as
a Lambda event source mapping checkpoints a batch only after the function succeeded. A
runner that dies mid-batch therefore gets that batch again (at-least-once, like Lambda;
the scheduler is idempotent).

A batch the scheduler keeps failing on is skipped, as Lambda's event source mapping
does after its retries: ``FeedReader.give_up`` notes its sequence range in the
``stream_failures`` table (Lambda sends the same note to its on-failure destination), and
``FeedFailures`` hands the notes and the records to the sweep, which replays them
(``overseer.sweep``). ``trim`` keeps the records of a noted batch until it is replayed.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ... import timeutil
from ...dynamodb_json import serialize
from ...errors import StreamRecordsGone
from ...store import FailedBatch
from ...stream import write_passes_stream_filters
from .bells import SUPPORTED, Bell
from .db import Database, database

REGION = "local"
# The bell rung when a record for the scheduler is committed (``bells``).
FEED_TOPIC = "feed"
# The feed is one shard (one writer at a time, in commit order).
SHARD = "feed"
# Attributes stored as a number set (NS) in DynamoDB; kept as JSON lists here.
NUMBER_SETS = frozenset({"finished_deps", "done"})


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
        out[name] = serialize(_dynamo_value(name, value))
    return out


def append(
    db: Database,
    conn: Any,
    keys: Mapping[str, str],
    new: Mapping[str, Any],
    old: Mapping[str, Any] | None,
) -> None:
    """Append the record of a write to a job item (inside the writing transaction), if it is
    one the scheduler's filter passes: no one reads the others (Lambda's filter drops
    them), so they are not kept."""
    if not write_passes_stream_filters(keys, new, old):
        return
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
        "INSERT INTO feed (acted, record) VALUES (1, ?)", (json.dumps(record, separators=(",", ":")),)
    )
    db.ring_after_commit(FEED_TOPIC)


def _with_sequence(seq: int, text: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(text)
    record["dynamodb"]["SequenceNumber"] = f"{seq:021d}"
    return record


class FeedReader:
    """Reads the feed from where this reader (by ``name``) last committed.

    ``resume=False`` starts after the newest record instead (ignore history). ``wait``
    returns as soon as a record for the scheduler is committed (the feed's bell).
    """

    def __init__(self, path: object, *, name: str = "scheduler", resume: bool = True) -> None:
        self.db = database(str(path))
        self.name = name
        # Listening before the first look: no record committed after it goes unnoticed.
        self.bell = Bell(self.db.path.parent, FEED_TOPIC) if SUPPORTED else None
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

    def wait(self, seconds: float) -> bool:
        """Wait until a record for the scheduler is committed, or ``seconds`` passed."""
        if self.bell is None:
            time.sleep(seconds)
            return False
        return self.bell.wait(seconds)

    def close(self) -> None:
        if self.bell is not None:
            self.bell.close()
            self.bell = None

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

    def give_up(self, records: list[dict[str, Any]], error: BaseException | str) -> None:
        """Skip a batch the scheduler keeps failing on (returned by the last ``poll``): note
        its range for the sweep to replay, as Lambda's on-failure destination does."""
        if records:
            note_failed_batch(self.db, records, error)

    def trim(self) -> int:
        """Delete records every reader has committed past, except those of batches noted as
        failed and not replayed yet; returns how many."""
        with self.db.write() as conn:
            low = conn.execute("SELECT MIN(position) FROM feed_readers").fetchone()[0]
            if low is None:
                return 0
            kept = conn.execute("SELECT MIN(first_seq) FROM stream_failures").fetchone()[0]
            if kept is not None:
                low = min(low, int(kept) - 1)
            return int(conn.execute("DELETE FROM feed WHERE seq <= ?", (low,)).rowcount)


def _sequence(record: Mapping[str, Any]) -> int:
    return int(record["dynamodb"]["SequenceNumber"])


def note_failed_batch(db: Database, records: list[dict[str, Any]], error: BaseException | str) -> None:
    """Note a batch of (sequence-numbered) feed records that the scheduler gave up on."""
    created = records[-1]["dynamodb"].get("ApproximateCreationDateTime")
    arrival = timeutil.iso(dt.datetime.fromtimestamp(float(created), dt.UTC)) if created else None
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    with db.write() as conn:
        conn.execute(
            "INSERT INTO stream_failures (first_seq, last_seq, size, error, last_arrival, failed_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                _sequence(records[0]),
                _sequence(records[-1]),
                len(records),
                text[:4096],
                arrival,
                timeutil.iso(),
            ),
        )


class FeedFailures:
    """``overseer.store.StreamFailures`` on the embedded backend: the notes of
    ``FeedReader.give_up`` and the feed's records. Records are gone only if someone
    deleted them (``trim`` keeps them), the embedded side of a stream's retention."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def receive(self, max_batches: int = 10) -> list[FailedBatch]:
        with self.db.write() as conn:
            rows = conn.execute(
                "SELECT id, first_seq, last_seq, size, last_arrival, receive_count + 1 FROM stream_failures "
                "ORDER BY id LIMIT ?",
                (max_batches,),
            ).fetchall()
            conn.executemany(
                "UPDATE stream_failures SET receive_count = receive_count + 1 WHERE id = ?",
                [(r[0],) for r in rows],
            )
        return [
            FailedBatch(str(i), SHARD, f"{first:021d}", f"{last:021d}", int(size), arrival, int(count))
            for i, first, last, size, arrival, count in sorted(rows)
        ]

    def records(self, batch: FailedBatch) -> list[dict[str, Any]]:
        first, last = int(batch.first_sequence), int(batch.last_sequence)
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT seq, record FROM feed WHERE seq BETWEEN ? AND ? AND acted ORDER BY seq", (first, last)
            ).fetchall()
        records = [_with_sequence(int(seq), text) for seq, text in rows]
        if len(records) < batch.size:
            raise StreamRecordsGone(
                f"{batch.size - len(records)} of the {batch.size} records {first}..{last} are no "
                "longer in the feed"
            )
        return records

    def delete(self, batch: FailedBatch) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM stream_failures WHERE id = ?", (int(batch.receipt),))
