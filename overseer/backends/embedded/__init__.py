"""The embedded backend: SQLite (jobs, graphs, change feed, queue) and a directory (artifacts).

One local stack is one directory::

    <state_dir>/overseer.sqlite3   graphs, jobs, the change feed, the dispatch queue, rows
    <state_dir>/artifacts/<bucket>/<key>   artifacts (+ .meta/ with their SHA-256)

Everything survives a crash of any process: reopen the directory and carry on.
"""

from __future__ import annotations

from pathlib import Path

from ...config import Settings, logs_dir
from ...pools import DEFAULT_POOL, Pools
from ...priority import by_priority
from ...store import DispatchQueue, Services
from .artifacts import DirectoryArtifactStore, SqliteRowSink
from .db import Database, database
from .feed import FeedFailures, FeedReader
from .logs import FileJobLogs
from .queue import SqliteDispatchQueue
from .store import SqliteJobStore

DB_NAME = "overseer.sqlite3"
ARTIFACTS_DIR = "artifacts"

__all__ = [
    "DirectoryArtifactStore",
    "FeedFailures",
    "FeedReader",
    "SqliteDispatchQueue",
    "SqliteJobStore",
    "SqliteRowSink",
    "db_path",
    "embedded_services",
    "provision",
]


def db_path(directory: str | Path) -> Path:
    return Path(directory) / DB_NAME


def provision(directory: str | Path) -> Database:
    """Create the stack's directory, SQLite file and schema if missing (idempotent)."""
    root = Path(directory)
    (root / ARTIFACTS_DIR).mkdir(parents=True, exist_ok=True)
    db = database(db_path(root))
    _ = db.conn  # opening creates the schema
    return db


def embedded_services(directory: str | Path, settings: Settings | None = None) -> Services:
    """Services on the embedded backend in ``directory`` (created on first use).

    The queue's visibility timeout defaults to ``settings.lease_seconds`` (as the stack's
    SQS queue does).
    """
    settings = settings or Settings()
    db = provision(directory)
    queues: dict[str, DispatchQueue] = {}
    dead_letters = {}
    for pool in Pools.from_settings(settings).names:
        name = queue_name(pool)
        # One bell for the pool's queues of every priority (``bells``).
        topic = f"queue-{name}"
        normal = SqliteDispatchQueue(
            db.path, name=name, visibility_seconds=settings.lease_seconds, db=db, topic=topic
        )
        # The high- and low-priority queues dead-letter into the pool's one dead-letter queue.
        others = {
            priority: SqliteDispatchQueue(
                db.path,
                name=f"{name}-{priority}",
                visibility_seconds=settings.lease_seconds,
                db=db,
                dead_letter_name=normal.dead_letter_name,
                topic=topic,
            )
            for priority in ("high", "low")
        }
        queues[pool] = by_priority({"normal": normal, **others})
        dead_letters[pool] = normal.dead_letter_queue()
    queue = queues.get(settings.pool)
    if queue is None:
        raise ValueError(f"this process's pool {settings.pool!r} is not among the pools {list(queues)}")
    return Services(
        settings=settings,
        store=SqliteJobStore(db.path, db=db),
        queue=queue,
        artifacts=DirectoryArtifactStore(Path(directory) / ARTIFACTS_DIR),
        rows=SqliteRowSink(db.path, db=db),
        logs=FileJobLogs(logs_dir(directory)),
        dead_letters=dead_letters[settings.pool],
        stream_failures=FeedFailures(db),
        pool_queues=queues,
        pool_dead_letters=dead_letters,
    )


def queue_name(pool: str) -> str:
    """The dispatch queue of ``pool`` in the messages table (``dispatch`` for the default)."""
    return "dispatch" if pool == DEFAULT_POOL else f"dispatch-{pool}"


def feed_reader(directory: str | Path, *, name: str = "scheduler", resume: bool = True) -> FeedReader:
    return FeedReader(db_path(directory), name=name, resume=resume)
