"""One Lambda function run as Lambda runs it: its asset, CPython 3.12, a container, the Runtime API.

``LambdaFunction`` starts a container from ``LAMBDA_BASE_IMAGE`` (a real CPython 3.12) when an
invocation finds none running (a cold start), and keeps it for the next ones (warm reuse):

* the asset is bind-mounted read-only at /var/task, the working directory and first entry of
  ``sys.path``; the root file system is read-only; only /tmp (512 MiB tmpfs) is writable;
  the process runs as a user with no home (993:990, as ``sbx_user1051``) under a memory limit
  of the function's MemorySize;
* the environment is the template's plus what Lambda sets (``lambda_environment``), and one
  deviation: ``AWS_ENDPOINT_URL`` sends the SDK's calls to the local emulator;
* ``lambda_bootstrap.py``, mounted read-only at /var/runtime/bootstrap.py, is the runtime: it
  resolves the handler string and speaks the Runtime API to a server this module runs on
  127.0.0.1 (the container shares the host's network);
* an invocation past the timeout kills the container (the next one starts cold) and fails
  with ``Sandbox.Timedout``; a container that exits mid-invocation fails it with
  ``Runtime.ExitError``; a failed init fails the invocation with the runtime's error.

Example::

    function = LambdaFunction(name="sweep", asset_dir=asset, handler="functions.sweep.handler",
                              environment=template_env, timeout_seconds=60, memory_mib=512,
                              credentials=creds, region="us-east-1", endpoint_url=emulator_url)
    result = function.invoke({"source": "aws.events"})
    assert result.error is None, result.logs
    function.close()
"""

from __future__ import annotations

import contextlib
import functools
import json
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.rehearsal import docker_env

BOOTSTRAP = Path(__file__).with_name("lambda_bootstrap.py")
RUNTIME_DIR = "/var/runtime"
TASK_ROOT = "/var/task"
PYTHON = "/usr/local/bin/python3.12"
# sbx_user1051, the user Lambda runs functions as.
LAMBDA_USER = "993:990"
TMP_SIZE_MIB = 512
# Lambda gives the init phase 10 s of its own; past that it starts init again within the
# invocation, under the function's timeout.
INIT_SECONDS = 10
MAX_RESPONSE_BYTES = 6 * 1024 * 1024
_API_PREFIX = "/2018-06-01/runtime"


# What Lambda sets and a function's configuration may not (CreateFunction refuses them).
RESERVED_VARIABLES = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
})  # fmt: skip


@dataclass(frozen=True)
class Invocation:
    """One invocation's outcome: ``payload`` (the handler's return, JSON-decoded) or ``error``
    (``{"errorType", "errorMessage", "stackTrace", ...}``), and what the function printed."""

    request_id: str
    payload: Any = None
    error: dict[str, Any] | None = None
    timed_out: bool = False
    cold: bool = False
    logs: str = ""
    duration_ms: float = 0.0


def lambda_environment(
    *,
    function_name: str,
    handler: str,
    memory_mib: int,
    region: str,
    credentials: Mapping[str, str],
    runtime_api: str,
    log_group_name: str,
    log_stream_name: str,
) -> dict[str, str]:
    """The variables the Lambda service and the python3.12 runtime set in every function."""
    return {
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mib),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": log_group_name,
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream_name,
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "LAMBDA_TASK_ROOT": TASK_ROOT,
        "LAMBDA_RUNTIME_DIR": RUNTIME_DIR,
        "_HANDLER": handler,
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "PYTHONPATH": RUNTIME_DIR,
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "_AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1",
        "_AWS_XRAY_DAEMON_PORT": "2000",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    }


@dataclass(frozen=True)
class _Event:
    request_id: str
    body: bytes
    deadline_ms: int
    trace_id: str


class _RuntimeApi:
    """The Runtime API for one container: ``next_events`` feeds ``/invocation/next``; every
    response, error, init error and the container's exit land on ``outcomes``."""

    def __init__(self, function_arn: str) -> None:
        self.function_arn = function_arn
        self.next_events: queue.Queue[_Event | None] = queue.Queue()
        self.outcomes: queue.Queue[tuple[str, str, Any]] = queue.Queue()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _RuntimeApiHandler)
        self.server.daemon_threads = True
        self.server.api = self  # type: ignore[attr-defined]
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, name=f"runtime-api-{self.address}", daemon=True
        ).start()

    def close(self) -> None:
        self.next_events.put(None)  # releases a /next still waiting for a dead container
        self.server.shutdown()
        self.server.server_close()


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the harness reports
        pass

    @property
    def api(self) -> _RuntimeApi:
        return self.server.api  # type: ignore[attr-defined,no-any-return]

    def _reply(self, status: int, body: bytes = b"{}", headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path != f"{_API_PREFIX}/invocation/next":
            return self._reply(404, b'{"errorType": "InvalidRequest"}')
        event = self.api.next_events.get()
        if event is None:  # the container is gone: nobody is listening
            self.api.next_events.put(None)
            self.close_connection = True
            return None
        self.api.outcomes.put((event.request_id, "next", None))
        self._reply(
            200,
            event.body,
            {
                "Lambda-Runtime-Aws-Request-Id": event.request_id,
                "Lambda-Runtime-Deadline-Ms": str(event.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": self.api.function_arn,
                "Lambda-Runtime-Trace-Id": event.trace_id,
            },
        )

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = self.path.removeprefix(_API_PREFIX).strip("/").split("/")
        if parts == ["init", "error"]:
            self.api.outcomes.put(("", "init_error", json.loads(body or b"{}")))
        elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            if parts[2] == "response" and len(body) > MAX_RESPONSE_BYTES:
                self.api.outcomes.put((parts[1], "error", _too_large(len(body))))
                return self._reply(413, b'{"errorType": "RequestEntityTooLarge"}')
            self.api.outcomes.put((parts[1], parts[2], body))
        else:
            return self._reply(404, b'{"errorType": "InvalidRequest"}')
        self._reply(202, b'{"status": "OK"}')


def _too_large(size: int) -> dict[str, Any]:
    return {
        "errorType": "Function.ResponseSizeTooLarge",
        "errorMessage": f"Response payload size ({size} bytes) exceeded maximum allowed payload size "
        f"({MAX_RESPONSE_BYTES} bytes).",
        "stackTrace": [],
    }


def _platform_error(error_type: str, request_id: str, message: str) -> dict[str, Any]:
    """An error the Lambda service reports itself (not the runtime): no stack trace."""
    return {
        "errorType": error_type,
        "errorMessage": f"RequestId: {request_id} Error: {message}",
        "stackTrace": [],
    }


_ensure_base_images = functools.cache(docker_env.ensure_base_images)


def _trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=1"


class _Sandbox:
    """One running container, its Runtime API and its log, line by line."""

    def __init__(self, function: LambdaFunction) -> None:
        _ensure_base_images()
        self.api = _RuntimeApi(function.function_arn)
        self.log_stream = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        env = {
            **lambda_environment(
                function_name=function.function_name,
                handler=function.handler,
                memory_mib=function.memory_mib,
                region=function.region,
                credentials=function.credentials,
                runtime_api=self.api.address,
                log_group_name=function.log_group_name,
                log_stream_name=self.log_stream,
            ),
            **function.environment,  # may override LANG, PATH, TZ...: they are not reserved
            "AWS_ENDPOINT_URL": function.endpoint_url,  # the one deviation: the local emulator
        }
        # `env -i`: the process sees exactly this environment, none of the image's own.
        self.container = docker_env.run_container(
            docker_env.LAMBDA_BASE_IMAGE,
            name=docker_env.unique_name(f"lambda-{function.name}"),
            env={},
            user=LAMBDA_USER,
            mounts=(
                (str(function.asset_dir), TASK_ROOT, True),
                (str(BOOTSTRAP), f"{RUNTIME_DIR}/bootstrap.py", True),
            ),
            read_only_root=True,
            tmpfs=(f"/tmp:rw,exec,size={TMP_SIZE_MIB}m,mode=1777",),
            memory_mib=function.memory_mib,
            entrypoint="/usr/bin/env",
            command=("-i", *(f"{k}={v}" for k, v in env.items()), PYTHON, f"{RUNTIME_DIR}/bootstrap.py"),
            workdir=TASK_ROOT,
        )
        self.lines: list[str] = []
        self._lines_changed = threading.Condition()
        self._follower = subprocess.Popen(
            [docker_env.DOCKER, "logs", "--follow", self.container.id],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        threading.Thread(target=self._watch, daemon=True).start()

    def _read_log(self) -> None:
        assert self._follower.stdout is not None
        for line in self._follower.stdout:
            with self._lines_changed:
                self.lines.append(line)
                self._lines_changed.notify_all()
        with self._lines_changed:  # the container is gone: wake any waiter
            self._lines_changed.notify_all()

    def _watch(self) -> None:
        with contextlib.suppress(Exception):
            code = self.container.wait(timeout=24 * 3600)
            self.api.outcomes.put(("", "exited", code))

    def invocation_log(self, start: int, request_id: str, timeout: float = 5.0) -> str:
        """What the function printed from log line ``start`` on, once the runtime's END line for
        ``request_id`` shows (or ``timeout`` passes); the START and END lines left out."""
        marker = f"RequestId: {request_id}"
        deadline = time.monotonic() + timeout
        with self._lines_changed:
            while not any(line.startswith(f"END {marker}") for line in self.lines[start:]):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    break
                self._lines_changed.wait(remaining)
            return "".join(line for line in self.lines[start:] if marker not in line)

    def close(self) -> None:
        self.container.remove()
        self.api.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._follower.wait(timeout=10)


class LambdaFunction:
    """A function from its asset directory, invoked synchronously as Lambda would."""

    def __init__(
        self,
        *,
        name: str,
        asset_dir: Path,
        handler: str,
        environment: Mapping[str, str],
        timeout_seconds: int,
        memory_mib: int,
        credentials: Mapping[str, str],
        region: str,
        endpoint_url: str,
        function_name: str | None = None,
        log_group_name: str | None = None,
    ) -> None:
        if reserved := sorted(RESERVED_VARIABLES & environment.keys()):
            raise ValueError(f"{name}: Lambda refuses reserved environment variables {reserved}")
        self.name = name
        self.asset_dir = Path(asset_dir).resolve()
        self.handler = handler
        self.environment = dict(environment)
        self.timeout_seconds = timeout_seconds
        self.memory_mib = memory_mib
        self.credentials = dict(credentials)
        self.region = region
        self.endpoint_url = endpoint_url
        self.function_name = function_name or name
        self.log_group_name = log_group_name or f"/aws/lambda/{self.function_name}"
        self.function_arn = f"arn:aws:lambda:{region}:123456789012:function:{self.function_name}"
        self._sandbox: _Sandbox | None = None
        self._lock = threading.Lock()  # one invocation at a time: a container serves one event

    def invoke(self, event: Any) -> Invocation:
        """Run the handler on ``event`` in a warm container, or a new one (``cold``)."""
        with self._lock:
            cold = self._sandbox is None
            if self._sandbox is None:
                self._sandbox = _Sandbox(self)
            sandbox = self._sandbox
            request_id = str(uuid.uuid4())
            log_start = len(sandbox.lines)
            started = time.monotonic()
            deadline_ms = int((time.time() + self.timeout_seconds) * 1000)
            body = json.dumps(event).encode()
            sandbox.api.next_events.put(_Event(request_id, body, deadline_ms, _trace_id()))
            # The clock starts when the runtime takes the event; a cold init has its own allowance.
            kind, value, taken_at = self._outcome(
                sandbox, request_id, started + (INIT_SECONDS if cold else 0) + self.timeout_seconds
            )
            result = Invocation(
                request_id=request_id,
                cold=cold,
                duration_ms=(time.monotonic() - (taken_at or started)) * 1000,
            )
            if kind in ("response", "error"):
                logs = sandbox.invocation_log(log_start, request_id)
                if kind == "response":
                    return replace(result, payload=json.loads(value) if value else None, logs=logs)
                return replace(
                    result, error=json.loads(value) if isinstance(value, bytes) else value, logs=logs
                )
            # Timed out, failed to initialise or exited: this container is done, the next
            # invocation starts cold.
            logs = sandbox.invocation_log(log_start, request_id, timeout=1.0)
            self._discard()
            if kind == "init_error":
                return replace(result, error=value, logs=logs)
            if kind == "timeout":
                message = f"Task timed out after {self.timeout_seconds:.2f} seconds"
                error = _platform_error("Sandbox.Timedout", request_id, message)
                return replace(result, error=error, timed_out=True, logs=logs)
            status = "signal: killed" if value in (137, -9) else f"exit status {value}"
            error = _platform_error("Runtime.ExitError", request_id, f"Runtime exited with error: {status}")
            return replace(result, error=error, logs=logs)

    def _outcome(self, sandbox: _Sandbox, request_id: str, pickup_by: float) -> tuple[str, Any, float | None]:
        """Wait for this request's response or error, an init error, the container's exit or
        the timeout; return (kind, value, when the runtime took the event)."""
        taken_at: float | None = None
        deadline = pickup_by
        while True:
            try:
                rid, kind, value = sandbox.api.outcomes.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                return "timeout", None, taken_at
            if kind == "next" and rid == request_id:
                taken_at = time.monotonic()
                deadline = taken_at + self.timeout_seconds
            elif rid == request_id or kind in ("init_error", "exited"):
                return kind, value, taken_at

    def _discard(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    def close(self) -> None:
        """Stop and remove the container, if one is running."""
        with self._lock:
            self._discard()

    def __enter__(self) -> LambdaFunction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
