"""Independent store writes, a few at a time: the one thread pool the engine uses."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
W = TypeVar("W")

# Conditional writes to different items in flight at once (DynamoDB serves them side by
# side; boto3's connection pool has 32 connections, see overseer.backends.aws.clients).
WRITERS = 8


def writers_of(store: object) -> int:
    """How many writes ``store`` serves at once: its ``writers`` (the embedded store's one
    SQLite connection per process serves one), else ``WRITERS``."""
    return int(getattr(store, "writers", WRITERS))


def in_parallel(
    act: Callable[[W], T], work: Iterable[W], *, inline_up_to: int = 2, writers: int = WRITERS
) -> list[T]:
    """``[act(w) for w in work]``, in ``writers`` threads unless there are at most
    ``inline_up_to`` elements (a pool costs more than it saves for one or two writes) or
    the store serves one write at a time (``writers`` 1)."""
    work = list(work)
    if len(work) <= inline_up_to or writers <= 1:
        return [act(w) for w in work]
    with ThreadPoolExecutor(writers) as pool:
        return list(pool.map(act, work))
