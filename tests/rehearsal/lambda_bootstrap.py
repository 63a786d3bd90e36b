"""The Python runtime's bootstrap, as the rehearsal runs it inside a function's container.

Mounted read-only at /var/runtime/bootstrap.py and started as the container's process; the
standard library only (the function's own code, on /var/task, must not see anything else).
It does what the Lambda Python runtime (awslambdaric) does: put LAMBDA_TASK_ROOT first on
``sys.path``, resolve the ``_HANDLER`` string (``module.path.function``) once, report an
init failure to ``/runtime/init/error`` and exit, then loop on the Runtime API: take the
next event, set ``_X_AMZN_TRACE_ID``, call the handler with a context object, and post the
JSON result or the error object the runtime shapes (``errorMessage``, ``errorType``,
``requestId``, ``stackTrace``). It prints the START and END lines the platform writes to
the log stream, so the harness can cut each invocation's output out of the container log.
"""

from __future__ import annotations

import decimal
import importlib
import json
import os
import sys
import time
import traceback
import urllib.request
from typing import Any

API = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime"


class Fault(Exception):
    """A failure the runtime reports with its own error type (``Runtime.*``)."""

    def __init__(self, error_type: str, message: str, trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.trace = trace or []


class LambdaContext:
    """The attributes and method of the runtime's context object (what Powertools reads)."""

    def __init__(self, request_id: str, deadline_ms: int, function_arn: str) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
        self.memory_limit_in_mb = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        self.log_group_name = os.environ["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - int(time.time() * 1000), 0)


def _post(path: str, body: bytes, error_type: str | None = None) -> None:
    headers = {"Content-Type": "application/json"}
    if error_type:
        headers["Lambda-Runtime-Function-Error-Type"] = error_type
    with urllib.request.urlopen(urllib.request.Request(f"{API}{path}", body, headers, method="POST")):
        pass


def _error(message: str, error_type: str, trace: list[str], request_id: str = "") -> dict[str, Any]:
    return {"errorMessage": message, "errorType": error_type, "requestId": request_id, "stackTrace": trace}


def _fault_result(exc: BaseException, request_id: str = "") -> dict[str, Any]:
    if isinstance(exc, Fault):
        return _error(exc.message, exc.error_type, exc.trace, request_id)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.endswith("/bootstrap.py")]
    return _error(str(exc), type(exc).__name__, traceback.format_list(frames), request_id)


def _load_handler(handler: str) -> Any:
    """Resolve ``module.path.function`` as the runtime does, with its error types."""
    try:
        module_name, function_name = handler.rsplit(".", 1)
    except ValueError as exc:
        raise Fault("Runtime.MalformedHandlerName", f"Bad handler '{handler}': {exc}") from None
    if module_name.split(".")[0] in sys.builtin_module_names:
        raise Fault(
            "Runtime.BuiltInModuleConflict",
            f"Cannot use built-in module {module_name} as a handler module",
        )
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        raise Fault("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}") from None
    except SyntaxError as exc:
        trace = [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']
        raise Fault(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}", trace
        ) from None
    function = getattr(module, function_name, None)
    if function is None:
        fault = Fault(
            "Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'"
        )

        def missing(event: Any, context: Any) -> Any:  # the runtime fails each invocation
            raise fault

        return missing
    return function


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):  # the runtime's serializer accepts Decimal
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _serve(handler: Any) -> None:
    while True:
        with urllib.request.urlopen(f"{API}/invocation/next") as reply:
            event = json.loads(reply.read() or b"null")
            request_id = reply.headers["Lambda-Runtime-Aws-Request-Id"]
            deadline_ms = int(reply.headers["Lambda-Runtime-Deadline-Ms"])
            function_arn = reply.headers["Lambda-Runtime-Invoked-Function-Arn"]
            trace_id = reply.headers.get("Lambda-Runtime-Trace-Id")
        if trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = trace_id
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        print(
            f"START RequestId: {request_id} Version: {os.environ['AWS_LAMBDA_FUNCTION_VERSION']}", flush=True
        )
        try:
            result = handler(event, LambdaContext(request_id, deadline_ms, function_arn))
            try:
                body = json.dumps(result, default=_json_default).encode()
            except (TypeError, ValueError) as exc:
                raise Fault("Runtime.MarshalError", f"Unable to marshal response: {exc}") from None
        except Exception as exc:
            error = _fault_result(exc, request_id)
            print(f"[ERROR] {error['errorType']}: {error['errorMessage']}", file=sys.stderr)
            _end(request_id)
            _post(f"/invocation/{request_id}/error", json.dumps(error).encode(), error["errorType"])
        else:
            _end(request_id)
            _post(f"/invocation/{request_id}/response", body)


def _end(request_id: str) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    print(f"END RequestId: {request_id}", flush=True)


def main() -> None:
    # Output reaches the log stream as it is written, as under the real runtime.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    task_root = os.environ["LAMBDA_TASK_ROOT"]
    sys.path.insert(0, task_root)
    os.chdir(task_root)
    try:
        handler = _load_handler(os.environ["_HANDLER"])
    except Exception as exc:
        error = _fault_result(exc)
        print(f"[ERROR] {error['errorType']}: {error['errorMessage']}", file=sys.stderr, flush=True)
        _post("/init/error", json.dumps(error).encode(), error["errorType"])
        sys.exit(1)
    _serve(handler)


if __name__ == "__main__":
    main()
