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
from typing import Generic, TypeVar

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
