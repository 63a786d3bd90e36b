"""Building boto3 clients, and counting every AWS request they send."""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

# botocore's standard retry mode: exponential backoff with jitter on throttling and 5xx.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 8},
    max_pool_connections=32,
    connect_timeout=5,
    read_timeout=30,
)


class RequestCounter:
    """Counts HTTP requests (retries included) by "service.Operation" via botocore events."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _on_send(self, **kwargs: Any) -> None:
        # event_name is "before-send.<service>.<Operation>"
        _, service, operation = str(kwargs.get("event_name", "x.unknown.unknown")).split(".", 2)
        with self._lock:
            self.counts[f"{service}.{operation}"] += 1

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-send", self._on_send)
        return client

    def total(self) -> int:
        return sum(self.counts.values())

    def dump_at_exit(self, directory: str) -> None:
        """Write the counts to ``directory/requests-<pid>.json`` when the process ends."""
        path = Path(directory) / f"requests-{os.getpid()}.json"
        atexit.register(self.write, path)

    def write(self, path: Path) -> None:
        if not path.parent.is_dir():  # the run that wanted the counts is over
            return
        path.write_text(json.dumps(dict(self.counts)))


def read_request_logs(directory: str | Path) -> Counter[str]:
    total: Counter[str] = Counter()
    for path in Path(directory).glob("requests-*.json"):
        try:
            total.update(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return total


_counter: RequestCounter | None = None


def process_counter() -> RequestCounter | None:
    """This process's counter when OVERSEER_REQUEST_LOG names a directory, else None."""
    global _counter
    directory = os.environ.get("OVERSEER_REQUEST_LOG")
    if not directory:
        return None
    if _counter is None:
        _counter = RequestCounter()
        _counter.dump_at_exit(directory)
    return _counter


_sessions: dict[tuple[str, ...], boto3.Session] = {}
_SESSION_ENV = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID")


def _session() -> boto3.Session:
    """One session per AWS configuration: making a session loads botocore's data (slow)."""
    key = tuple(os.environ.get(name, "") for name in _SESSION_ENV)
    if key not in _sessions:
        _sessions[key] = boto3.Session()
    return _sessions[key]


def client(service: str, session: boto3.Session | None = None) -> Any:
    made = (session or _session()).client(service, config=CLIENT_CONFIG)  # type: ignore[call-overload]
    from .. import chaos

    chaos.attach_from_env(made)  # fault injection when OVERSEER_CHAOS is set (chaos suite)
    counter = process_counter()
    return counter.attach(made) if counter else made


def resource(service: str, session: boto3.Session | None = None) -> Any:
    made = (session or _session()).resource(service, config=CLIENT_CONFIG)  # type: ignore[call-overload]
    from .. import chaos

    chaos.attach_from_env(made.meta.client)  # fault injection when OVERSEER_CHAOS is set
    counter = process_counter()
    if counter:
        counter.attach(made.meta.client)
    return made
