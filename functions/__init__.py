"""Lambda entry points: thin handlers over the engine.

Each module parses its event, calls one function of the engine and maps the result
(``scheduler``: the jobs stream; ``sweep``: a schedule; ``api``: API Gateway;
``trigger``: EventBridge rules). Clients are built once per cold start, on the first
invocation (not at import time), from ``Settings.from_env()``; ``reset()`` in each
module forgets them (tests point the modules at a fresh emulator).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from overseer.store import GraphRecord

T = TypeVar("T")


class Lazy(Generic[T]):
    """A value built on first use and kept for the life of the process (a Lambda cold start)."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
        return self._value

    def reset(self) -> None:
        with self._lock:
            self._value = None


def publish_graph_done(events_client: Any, bus: str, record: GraphRecord, logger: Any) -> None:
    """Put the graph's end on ``bus`` (nothing when no bus is configured). The outcome is
    already stored when this is called: a lost event is logged, never turned into an error."""
    if not bus:
        return
    from overseer.backends.aws.events import EventBridgePublisher

    try:
        EventBridgePublisher(events_client, bus).graph_done(record)
    except Exception:
        logger.exception("could not publish the end of graph %s", record.graph_id)
