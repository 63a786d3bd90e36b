"""Building boto3 clients: the retry configuration, the request counter and the client hook
every client the engine makes goes through (``instrument``)."""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from ...config import Settings
from ...errors import OverseerError

# botocore's standard retry mode: exponential backoff with jitter on throttling and 5xx.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 8},
    max_pool_connections=32,
    connect_timeout=5,
    read_timeout=30,
)
# S3 signs with SigV4 whatever botocore's default: its presigned URLs too (artifact
# downloads), which SigV2 would not give in newer regions or for KMS-encrypted objects.
SERVICE_CONFIG = {"s3": CLIENT_CONFIG.merge(Config(signature_version="s3v4"))}


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
    directory = Settings.from_env().request_log
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


_HOOK_FORM = "set it to 'package.module:function'"


@functools.cache
def _load_hook(path: str) -> Callable[[Any], object]:
    module_name, _, function_name = path.partition(":")
    try:
        hook = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise OverseerError(f"OVERSEER_CLIENT_HOOK={path!r} cannot be loaded ({exc}): {_HOOK_FORM}") from exc
    if not callable(hook):
        raise OverseerError(f"OVERSEER_CLIENT_HOOK={path!r} is not a function: {_HOOK_FORM}")
    return hook


def client_hook() -> Callable[[Any], object] | None:
    """The function ``Settings.client_hook`` names (imported once), or None when it is unset.

    It is read when a client is built, as boto3 reads its own configuration, so a process
    (or a test) that sets ``OVERSEER_CLIENT_HOOK`` hooks every client it builds from then on.
    """
    path = Settings.from_env().client_hook
    return _load_hook(path) if path else None


def instrument(botocore_client: Any) -> Any:
    """Pass a client the engine built (boto3's or PynamoDB's) to the client hook and the
    request counter, when they are set; returns the client."""
    hook = client_hook()
    if hook is not None:
        hook(botocore_client)
    counter = process_counter()
    if counter is not None:
        counter.attach(botocore_client)
    return botocore_client


def client(service: str, session: boto3.Session | None = None) -> Any:
    config = SERVICE_CONFIG.get(service, CLIENT_CONFIG)
    return instrument((session or _session()).client(service, config=config))  # type: ignore[call-overload]


def resource(service: str, session: boto3.Session | None = None) -> Any:
    made = (session or _session()).resource(service, config=CLIENT_CONFIG)  # type: ignore[call-overload]
    instrument(made.meta.client)
    return made
