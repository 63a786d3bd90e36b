"""Fault injection into AWS calls, for the chaos suite and ``bench/chaos.py`` only.

``FaultInjector``, registered on botocore's ``before-send`` event of a client, fails a share
of the requests the way AWS does under load: a throttling error (HTTP 400
``ThrottlingException`` for the JSON services, ``Throttling`` for SQS, 503 ``SlowDown`` for
S3), a 500 ``InternalError``, a read or connect timeout before the request leaves, or a
*lost response*: the request is sent and applied, then the client sees a read timeout (so a
retried write finds its own earlier effect). botocore's standard retry mode
(``overseer.backends.aws.clients.CLIENT_CONFIG``; PynamoDB's own retries for the store) absorbs them.

The engine knows nothing of it: a process reaches it through the engine's one client hook,
``OVERSEER_CLIENT_HOOK``, which ``fault_env`` sets beside the fault settings::

    OVERSEER_CLIENT_HOOK=tests.chaos.faults:attach_from_env
    OVERSEER_CHAOS="faults=0.1,seed=7"        # what to inject
    OVERSEER_CHAOS_LOG=/some/dir              # where each process writes chaos-<pid>.json
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

ENV_SPEC = "OVERSEER_CHAOS"
ENV_LOG = "OVERSEER_CHAOS_LOG"
# The engine's client hook (overseer.config.Settings.client_hook) pointing here.
HOOK = f"{__name__}:attach_from_env"
KINDS = ("throttle", "5xx", "read_timeout", "connect_timeout", "lost_response")
_ATTEMPT = re.compile(r"attempt=(\d+);\s*max=(\d+)")


def fault_env(spec: str, log_dir: str | Path) -> dict[str, str]:
    """The environment that makes a process inject ``spec`` (see ``FaultSpec.parse``) into
    every client the engine builds, and log the faults to ``log_dir``."""
    return {"OVERSEER_CLIENT_HOOK": HOOK, ENV_SPEC: spec, ENV_LOG: str(log_dir)}


@dataclass(frozen=True)
class FaultSpec:
    """``faults``: probability that a request fails; ``seed``: of the RNG (mixed with the
    pid, so processes differ); ``kinds``: which failures (see ``KINDS``); ``spare_last``:
    never fail a request's last attempt (the client's retries always absorb the faults)."""

    faults: float = 0.0
    seed: int = 0
    kinds: tuple[str, ...] = KINDS
    spare_last: bool = False

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """``"faults=0.1,seed=7,kinds=throttle+5xx,spare_last=1"`` (every key optional)."""
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            key = key.strip()
            if key == "faults":
                values["faults"] = float(value)
            elif key == "seed":
                values["seed"] = int(value)
            elif key == "kinds":
                kinds = tuple(k for k in value.split("+") if k)
                unknown = set(kinds) - set(KINDS)
                if unknown:
                    raise ValueError(f"{ENV_SPEC}: unknown fault kinds {sorted(unknown)}; known: {KINDS}")
                values["kinds"] = kinds
            elif key == "spare_last":
                values["spare_last"] = value.strip().lower() in ("1", "true", "yes")
            else:
                raise ValueError(f"{ENV_SPEC}: unknown key {key!r} in {text!r}")
        spec = cls(**values)
        if not 0.0 <= spec.faults <= 1.0:
            raise ValueError(f"{ENV_SPEC}: faults must be between 0 and 1, got {spec.faults}")
        return spec

    def to_env(self) -> str:
        return (
            f"faults={self.faults},seed={self.seed},kinds={'+'.join(self.kinds)},"
            f"spare_last={int(self.spare_last)}"
        )


class _Body:
    """The ``raw`` of an ``AWSResponse``: what botocore reads the body from."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data

    def read(self, *_: Any, **__: Any) -> bytes:
        data, self.data = self.data, b""
        return data


def error_response(protocol: str, service: str, url: str, kind: str) -> AWSResponse:
    """A throttling (``kind="throttle"``) or internal (``"5xx"``) error response that the
    service's parser turns into the error code AWS sends."""
    request_id = f"fault-{random.getrandbits(32):08x}"
    headers = {"x-amzn-requestid": request_id, "x-amz-request-id": request_id}
    throttle = kind == "throttle"
    if protocol in ("json", "rest-json"):
        status = 400 if throttle else 500
        code = "ThrottlingException" if throttle else "InternalServerError"
        if service == "sqs":
            # SQS answers JSON but keeps its query-era codes in this header.
            headers["x-amzn-query-error"] = ("Throttling" if throttle else "InternalError") + ";Sender"
        body = json.dumps({"__type": code, "message": "injected by tests.chaos.faults"}).encode()
        headers["content-type"] = "application/x-amz-json-1.0"
    elif protocol == "rest-xml":  # S3
        status, code = (503, "SlowDown") if throttle else (500, "InternalError")
        body = (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
            f"<Message>injected by tests.chaos.faults</Message><RequestId>{request_id}</RequestId></Error>"
        ).encode()
        headers["content-type"] = "application/xml"
    else:  # query / ec2
        status, code = (400, "Throttling") if throttle else (500, "InternalError")
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
            f"<Message>injected by tests.chaos.faults</Message></Error><RequestId>{request_id}</RequestId>"
            "</ErrorResponse>"
        ).encode()
        headers["content-type"] = "text/xml"
    headers["content-length"] = str(len(body))
    return AWSResponse(url, status, HTTPHeaders.from_dict(headers), _Body(body))


class FaultInjector:
    """Fails a share of the requests of the clients it is attached to. Thread-safe."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self.rng = random.Random(f"{spec.seed}-{os.getpid()}")
        self.counts: Counter[str] = Counter()  # "kind service.Operation" -> faults
        self.requests = 0
        self._lock = threading.Lock()
        self._log_path: Path | None = None
        self._last_write = 0.0

    # -- wiring
    def attach(self, client: Any) -> Any:
        """Register on ``client``'s ``before-send`` (once per client); returns the client."""
        if getattr(client.meta, "_fault_injector", None) is self:
            return client
        model = client.meta.service_model
        protocol = model.protocol
        service = model.endpoint_prefix
        endpoint = getattr(client, "_endpoint", None)

        def before_send(request: Any, event_name: str = "", **_: Any) -> AWSResponse | None:
            return self._maybe_fail(request, event_name, protocol, service, endpoint)

        client.meta.events.register("before-send", before_send)
        client.meta._fault_injector = self
        return client

    def log_to(self, directory: str | Path) -> None:
        """Write the counts to ``directory/chaos-<pid>.json`` now and then and at exit
        (a SIGKILLed process keeps what it wrote last)."""
        self._log_path = Path(directory) / f"chaos-{os.getpid()}.json"
        atexit.register(self.write)

    def write(self) -> None:
        path = self._log_path
        if path is None or not path.parent.is_dir():
            return
        with self._lock:
            data = {"requests": self.requests, "faults": dict(self.counts)}
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(data))
            tmp.replace(path)

    def total(self) -> int:
        return sum(self.counts.values())

    def by_kind(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for key, n in self.counts.items():
            out[key.split(" ", 1)[0]] += n
        return out

    # -- the hook
    def _maybe_fail(
        self, request: Any, event_name: str, protocol: str, service: str, endpoint: Any
    ) -> AWSResponse | None:
        if self.spec.spare_last:
            header = request.headers.get("amz-sdk-request", "")
            if isinstance(header, bytes):
                header = header.decode("utf-8", "replace")
            match = _ATTEMPT.search(header)
            if match and int(match.group(1)) >= int(match.group(2)):
                with self._lock:
                    self.requests += 1
                return None
        with self._lock:
            self.requests += 1
            if self.rng.random() >= self.spec.faults:
                return None
            kind = self.rng.choice(self.spec.kinds)
            operation = event_name.rsplit(".", 1)[-1] or "unknown"
            self.counts[f"{kind} {service}.{operation}"] += 1
            now = time.monotonic()
            flush = self._log_path is not None and now - self._last_write > 0.5
            if flush:
                self._last_write = now
        if flush:
            self.write()
        if kind in ("throttle", "5xx"):
            return error_response(protocol, service, request.url, kind)
        if kind == "connect_timeout":
            raise ConnectTimeoutError(endpoint_url=request.url)
        if kind == "lost_response" and endpoint is not None:
            # The request reaches the service and is applied; only its answer is lost.
            with contextlib.suppress(Exception):
                endpoint.http_session.send(request)
        raise ReadTimeoutError(endpoint_url=request.url)


_injector: FaultInjector | None = None
_injector_spec: str | None = None


def process_injector() -> FaultInjector | None:
    """This process's injector when ``OVERSEER_CHAOS`` is set (and not 0 faults), else None."""
    global _injector, _injector_spec
    text = os.environ.get(ENV_SPEC, "").strip()
    if not text:
        return None
    if _injector is None or _injector_spec != text:
        spec = FaultSpec.parse(text)
        if spec.faults <= 0:
            return None
        _injector, _injector_spec = FaultInjector(spec), text
        directory = os.environ.get(ENV_LOG)
        if directory:
            _injector.log_to(directory)
    return _injector


def attach_from_env(client: Any) -> Any:
    """Attach this process's injector to ``client`` when ``OVERSEER_CHAOS`` asks for one."""
    injector = process_injector()
    return injector.attach(client) if injector is not None else client


def read_fault_logs(directory: str | Path) -> tuple[int, Counter[str]]:
    """(requests seen, faults by "kind service.Operation") over every process's log."""
    requests = 0
    faults: Counter[str] = Counter()
    for path in Path(directory).glob("chaos-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        requests += int(data.get("requests", 0))
        faults.update(data.get("faults", {}))
    return requests, faults


def current_injector() -> FaultInjector | None:
    """The injector this process made (None before the first hooked client)."""
    return _injector
