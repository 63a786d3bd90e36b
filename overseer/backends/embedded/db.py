"""One SQLite file per local stack: connections, schema, short write transactions.

Every process (and every thread) that touches the stack opens the file by path. A
``Database`` holds one connection per process, guarded by a lock so the scheduler's
threads and the worker's heartbeat can share it; a forked child notices the new pid and
opens its own connection (SQLite connections must never cross a fork).

The file runs in WAL mode (readers never block the writer), ``synchronous=NORMAL``
(a committed transaction survives a crash of any process; only a power loss may lose
the last ones) and a busy timeout, so N worker processes wait for each other's short
``BEGIN IMMEDIATE`` transactions instead of failing.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from ...errors import StoreError
from .bells import Ringer

BUSY_TIMEOUT_MS = 30_000
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS graphs (graph_id TEXT PRIMARY KEY, item TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    graph_id TEXT NOT NULL,
    entry TEXT NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (graph_id, entry)
) WITHOUT ROWID;
-- The sweep index and the active-graphs index (overseer.items): partial, so as sparse as
-- DynamoDB's indexes, on the attributes both backends write.
CREATE INDEX IF NOT EXISTS jobs_sweep
    ON jobs (json_extract(item, '$.sweep_key'), json_extract(item, '$.sweep_at'), graph_id, entry)
    WHERE json_extract(item, '$.sweep_key') IS NOT NULL;
CREATE INDEX IF NOT EXISTS graphs_active
    ON graphs (json_extract(item, '$.active_status'), graph_id)
    WHERE json_extract(item, '$.active_status') IS NOT NULL;
CREATE TABLE IF NOT EXISTS feed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    acted INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feed_readers (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stream_failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    size INTEGER NOT NULL,
    error TEXT NOT NULL,
    last_arrival TEXT,
    failed_at TEXT NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at TEXT NOT NULL);
-- Concurrency limits (overseer.limits): one row per limit, its holders as JSON.
CREATE TABLE IF NOT EXISTS limits (name TEXT PRIMARY KEY, item TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    visible_at REAL NOT NULL,
    receipt TEXT,
    receive_count INTEGER NOT NULL DEFAULT 0,
    sent_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (queue, visible_at);
CREATE INDEX IF NOT EXISTS messages_receipt ON messages (receipt);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    body TEXT NOT NULL,
    receive_count INTEGER NOT NULL,
    sent_at REAL NOT NULL,
    dead_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rows (
    tbl TEXT NOT NULL,
    item_key TEXT NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (tbl, item_key)
) WITHOUT ROWID;
"""


class Database:
    """A path to a stack's SQLite file and this process's connection to it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        # Bells to ring once the current write transaction has committed (``bells``).
        self.ringer = Ringer(self.path.parent)
        self._to_ring: set[str] = set()

    def ring_after_commit(self, topic: str) -> None:
        """Ring ``topic``'s bells when the current write transaction commits (not if it
        rolls back): whoever waits for what it wrote looks at once."""
        self._to_ring.add(topic)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"cannot put {self.path} in WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = OFF")
        with _immediate(conn):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            # A new process (or the first use): never reuse a connection across a fork.
            self._conn = self._connect()
            self._pid = os.getpid()
        return self._conn

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads (each statement sees a consistent snapshot)."""
        with self._lock:
            yield self.conn

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads in one consistent snapshot (a deferred read transaction)."""
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One short read-check-write transaction (``BEGIN IMMEDIATE``): all or nothing."""
        with self._lock:
            conn = self.conn
            self._to_ring.clear()
            try:
                with _immediate(conn):
                    yield conn
            except BaseException:
                self._to_ring.clear()
                raise
            topics, self._to_ring = self._to_ring, set()
        for topic in topics:
            self.ringer.ring(topic)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise StoreError(f"the embedded store is busy or unavailable: {exc}") from exc
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_shared: dict[tuple[int, str], Database] = {}
_shared_lock = threading.Lock()


def database(path: str | os.PathLike[str]) -> Database:
    """The process-wide ``Database`` of ``path`` (one connection per process and file)."""
    key = (os.getpid(), str(Path(path).resolve()))
    with _shared_lock:
        db = _shared.get(key)
        if db is None:
            db = _shared[key] = Database(path)
        return db
