"""The dispatch queue on SQLite. Implements ``overseer.store.DispatchQueue`` like SQS.

A message is a row with ``visible_at`` (its delay, then its visibility timeout), the
receipt of its latest delivery and a receive count. Receiving hides a message for the
visibility timeout and gives it a **new** receipt (older receipts no longer delete or
extend it). A message received ``max_receive_count`` times without being deleted is
moved to the dead-letter queue (``<name>-dead-letter`` in the same table, itself a
``SqliteDispatchQueue``: ``dead_letter_queue()``) on its next receive, as an SQS redrive
policy does; the ``dead_letters`` table keeps a history of every move.

Long polling is a loop of cheap reads with short sleeps (no write lock is taken while
the queue is empty), so idle workers cost almost nothing.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ...store import Delivery, JobMessage
from .bells import SUPPORTED, Bell
from .db import Database, database

MAX_DELAY_SECONDS = 900
DEFAULT_VISIBILITY_SECONDS = 30
# The same redrive policy as the stack's SQS queue (overseer.backends.aws.resources).
MAX_RECEIVE_COUNT = 10
POLL_MIN_SECONDS = 0.002
POLL_MAX_SECONDS = 0.025
# With a bell (``bells``), a send wakes the waiting receivers: they look again on their own
# only this often, in case a ring was lost.
BELL_POLL_SECONDS = 0.25


class SqliteDispatchQueue:
    def __init__(
        self,
        path: object,
        *,
        name: str = "dispatch",
        visibility_seconds: int = DEFAULT_VISIBILITY_SECONDS,
        max_receive_count: int = MAX_RECEIVE_COUNT,
        db: Database | None = None,
        poll_max_seconds: float = POLL_MAX_SECONDS,
        dead_letter_name: str | None = None,
        topic: str | None = None,
    ) -> None:
        """``topic``: the bell its sends ring and its receives wait on (default its own); a
        pool's queues of every priority share one, so a worker waiting on one of them
        looks again when any of them gets a message."""
        self.db = db or database(str(path))
        self.name = name
        self.visibility_seconds = visibility_seconds
        self.max_receive_count = max_receive_count
        self.poll_max_seconds = poll_max_seconds
        self.dead_letter_name = dead_letter_name or f"{name}-dead-letter"
        self.topic = topic or f"queue-{name}"
        self._bell: Bell | None = None
        self._bell_pid = -1
        self._interrupted = False

    def bell(self) -> Bell | None:
        """This process's bell of the queue (made on the first wait; a forked child makes
        its own), or None where bells are not supported."""
        if not SUPPORTED:
            return None
        if self._bell is None or self._bell_pid != os.getpid():
            self._bell = Bell(self.db.path.parent, self.topic)
            self._bell_pid = os.getpid()
        return self._bell

    def interrupt(self) -> None:
        """End the current (or next) ``receive`` wait at once (from a signal handler: the
        worker is stopping)."""
        self._interrupted = True
        if self._bell is not None and self._bell_pid == os.getpid():
            self._bell.ring_self()

    def dead_letter_queue(self) -> SqliteDispatchQueue:
        """The dead-letter queue, as a queue (the sweep reads it like the SQS one)."""
        return SqliteDispatchQueue(
            self.db.path,
            name=self.dead_letter_name,
            visibility_seconds=self.visibility_seconds,
            max_receive_count=1_000_000,
            db=self.db,
        )

    def send(self, messages: Sequence[JobMessage]) -> None:
        now = time.time()
        rows = [
            (self.name, m.to_json(), now + max(0, min(MAX_DELAY_SECONDS, int(m.delay_seconds))), now)
            for m in messages
        ]
        if not rows:
            return
        with self.db.write() as conn:
            conn.executemany(
                "INSERT INTO messages (queue, body, visible_at, sent_at) VALUES (?, ?, ?, ?)", rows
            )
            self.db.ring_after_commit(self.topic)

    def _visible(self, now: float) -> bool:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT 1 FROM messages WHERE queue = ? AND visible_at <= ? LIMIT 1", (self.name, now)
            ).fetchone()
        return row is not None

    def _take(self, max_messages: int, visibility: int) -> list[Delivery]:
        now = time.time()
        if not self._visible(now):
            return []
        deliveries: list[Delivery] = []
        with self.db.write() as conn:
            rows = conn.execute(
                "SELECT id, body, receive_count, sent_at FROM messages WHERE queue = ? AND visible_at <= ? "
                "ORDER BY visible_at, id LIMIT ?",
                (self.name, now, max(1, min(10, max_messages))),
            ).fetchall()
            for message_id, body, count, sent_at in rows:
                if count >= self.max_receive_count:
                    conn.execute(
                        "INSERT INTO dead_letters (queue, message_id, body, receive_count, sent_at, dead_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (self.name, message_id, body, count, sent_at, now),
                    )
                    conn.execute(
                        "UPDATE messages SET queue = ?, visible_at = ?, receipt = NULL, receive_count = 0 "
                        "WHERE id = ?",
                        (self.dead_letter_name, now, message_id),
                    )
                    continue
                receipt = f"{message_id}:{uuid.uuid4().hex}"
                conn.execute(
                    "UPDATE messages SET receipt = ?, receive_count = ?, visible_at = ? WHERE id = ?",
                    (receipt, count + 1, now + visibility, message_id),
                )
                try:
                    message = JobMessage.from_json(body)
                except (ValueError, KeyError, TypeError):
                    # Not ours: drop it rather than poison the worker.
                    conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
                    continue
                deliveries.append(Delivery(message, receipt, count + 1))
        return deliveries

    def receive(
        self, *, max_messages: int = 1, wait_seconds: int = 20, visibility_seconds: int | None = None
    ) -> list[Delivery]:
        visibility = self.visibility_seconds if visibility_seconds is None else visibility_seconds
        deadline = time.monotonic() + max(0.0, float(wait_seconds))
        pause = POLL_MIN_SECONDS
        # Listening before the first look: a send committed after it rings this bell.
        bell = self.bell() if wait_seconds > 0 else None
        while True:
            deliveries = self._take(max_messages, visibility)
            if deliveries:
                return deliveries
            left = deadline - time.monotonic()
            if left <= 0 or self._interrupted:
                return []
            if bell is not None:
                if bell.wait(min(BELL_POLL_SECONDS, left)) and not self._visible(time.time()):
                    # Rung for another queue of the topic (or taken by another worker): let
                    # the caller look where it wants.
                    return []
            else:
                time.sleep(min(pause, left))
                pause = min(self.poll_max_seconds, pause * 2)

    def delete(self, receipts: Sequence[str]) -> None:
        if not receipts:
            return
        with self.db.write() as conn:
            conn.executemany(
                "DELETE FROM messages WHERE queue = ? AND receipt = ?", [(self.name, r) for r in receipts]
            )

    def extend_visibility(self, receipt: str, seconds: int) -> None:
        with self.db.write() as conn:
            # A stale receipt (the message was received again, or deleted) changes nothing.
            conn.execute(
                "UPDATE messages SET visible_at = ? WHERE queue = ? AND receipt = ?",
                (time.time() + max(0, int(seconds)), self.name, receipt),
            )
            if seconds <= 0:  # visible again now: a waiting worker may take it
                self.db.ring_after_commit(self.topic)

    def depth(self) -> int:
        with self.db.read() as conn:
            row = conn.execute("SELECT COUNT(*) FROM messages WHERE queue = ?", (self.name,)).fetchone()
        return int(row[0])

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every message ever moved out after too many receives (history, whether or not the
        dead-letter queue still holds it): body, message, receive_count, times."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT message_id, body, receive_count, sent_at, dead_at FROM dead_letters WHERE queue = ? "
                "ORDER BY id",
                (self.name,),
            ).fetchall()
        out = []
        for message_id, body, count, sent_at, dead_at in rows:
            try:
                message: Any = JobMessage.from_json(body)
            except (ValueError, KeyError, TypeError):
                message = None
            out.append(
                {
                    "message_id": message_id,
                    "body": json.loads(body) if message is not None else body,
                    "message": message,
                    "receive_count": count,
                    "sent_at": sent_at,
                    "dead_at": dead_at,
                }
            )
        return out
