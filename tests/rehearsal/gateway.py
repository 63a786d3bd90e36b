"""The front door to the emulator: every AWS request of every component passes through here.

Each component (a Lambda function, the stream poller acting for its function, a worker
container) signs its requests with credentials of its own, as AWS hands them to it. The
gateway names the component from the access key, maps the request to the IAM actions
and resources it needs (tests.rehearsal.permissions), evaluates them against the
component's synthesized role policies (tests.rehearsal.iam), and answers AccessDenied as
AWS would when one is not allowed; otherwise it forwards the request to moto. Every call
is recorded with the statements that allowed it. Batch requests go to the Batch stand-in.

It also serves the container credentials endpoint (``AWS_CONTAINER_CREDENTIALS_FULL_URI``)
for worker containers, so that no component ever holds static keys.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.rehearsal.iam import evaluate
from tests.rehearsal.permissions import (
    AwsRequest,
    Permission,
    UnknownRequest,
    head_object_needs_list_bucket,
    required_permissions,
)
from tests.rehearsal.template import ACCOUNT, REGION

CREDENTIALS_PATH = "/_rehearsal/credentials/"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Principal:
    """A component and the role it runs as."""

    name: str
    role: str  # logical id of the role in the template
    documents: list[dict[str, Any]]
    document_names: list[str]
    access_key: str = field(default_factory=lambda: "ASIA" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    session_token: str = field(default_factory=lambda: secrets.token_urlsafe(60))

    @property
    def credentials(self) -> dict[str, str]:
        return {
            "AccessKeyId": self.access_key,
            "SecretAccessKey": self.secret_key,
            "SessionToken": self.session_token,
        }

    @property
    def arn(self) -> str:
        return f"arn:aws:sts::{ACCOUNT}:assumed-role/{self.role}/{self.name}"


@dataclass(frozen=True)
class Check:
    permission: Permission
    allowed: bool
    statements: tuple[tuple[str, int], ...]  # (document name, statement index) that allowed it


@dataclass
class Call:
    """One AWS request of one component, and the IAM checks it needed."""

    principal: str
    role: str
    operation: str
    checks: list[Check]
    note: str = ""

    @property
    def allowed(self) -> bool:
        return all(check.allowed for check in self.checks)

    def describe_denial(self) -> str:
        denied = [c.permission for c in self.checks if not c.allowed]
        return "; ".join(
            f"{self.principal} (role {self.role}) was denied {p.action} on {p.resource} "
            f"by {self.operation}{' ' + self.note if self.note else ''}"
            for p in denied
        )


class Gateway:
    """A recording, IAM-enforcing HTTP proxy in front of the emulator."""

    def __init__(self, upstream: str, *, batch: Callable[[str, str, dict[str, Any]], tuple[int, Any]]):
        self.upstream = urlsplit(upstream)
        self.batch = batch
        self.principals: dict[str, Principal] = {}
        self.calls: list[Call] = []
        self._iterators: dict[str, str] = {}  # shard iterator -> stream ARN
        self.harness_errors: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_principal(self, name: str, role: str, documents: list[tuple[str, dict[str, Any]]]) -> Principal:
        principal = Principal(
            name=name,
            role=role,
            documents=[d for _, d in documents],
            document_names=[n for n, _ in documents],
        )
        self.principals[principal.access_key] = principal
        return principal

    def credentials_uri(self, principal: Principal) -> str:
        return f"{self.url}{CREDENTIALS_PATH}{principal.access_key}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def denied(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if not c.allowed]

    def calls_of(self, principal: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.principal == principal]

    def calls_needing(self, principal: str, action: str, resource: str) -> list[Call]:
        """The principal's calls that needed ``action`` on a resource containing ``resource``."""
        return [
            call
            for call in self.calls_of(principal)
            if any(c.permission.action == action and resource in c.permission.resource for c in call.checks)
        ]

    # -- the checks -----------------------------------------------------------------------

    def check(self, principal: Principal, permission: Permission) -> Check:
        decision = evaluate(principal.documents, permission.action, permission.resource)
        statements = tuple(
            (principal.document_names[r.document_index], r.statement_index) for r in decision.statements
        )
        return Check(permission, decision.allowed, statements if decision.allowed else ())

    def authorize(self, principal: Principal, request: AwsRequest) -> Call:
        try:
            permissions = required_permissions(
                request, region=REGION, account=ACCOUNT, stream_of_iterator=self._iterators.get
            )
        except UnknownRequest as exc:
            call = Call(
                principal.name,
                principal.role,
                request.operation,
                [Check(Permission("unknown", str(exc)), False, ())],
                note="(unmodelled request)",
            )
        else:
            call = Call(
                principal.name,
                principal.role,
                request.operation,
                [self.check(principal, p) for p in permissions],
            )
        self.record(call)
        return call

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def remember_iterators(self, request: AwsRequest, body: bytes) -> None:
        target = request.headers.get("x-amz-target", "")
        if not target.startswith("DynamoDBStreams_") or not body:
            return
        sent, answer = json.loads(request.body or b"{}"), json.loads(body)
        stream = sent.get("StreamArn") or self._iterators.get(sent.get("ShardIterator", ""))
        for key in ("ShardIterator", "NextShardIterator"):
            if stream and answer.get(key):
                self._iterators[answer[key]] = stream


def _denied_response(request: AwsRequest, message: str) -> tuple[int, dict[str, str], bytes]:
    service = request.service
    if service == "s3":
        body = f"<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>"
        return 403, {"Content-Type": "application/xml"}, body.encode()
    if service == "sqs" and "x-amz-target" not in request.headers:
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
            f"<Message>{message}</Message></Error></ErrorResponse>"
        )
        return 403, {"Content-Type": "text/xml"}, body.encode()
    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-ErrorType": "AccessDeniedException"}
    if service == "sqs":
        headers["x-amzn-query-error"] = "AccessDenied;Sender"
    body = json.dumps({"__type": "AccessDeniedException", "message": message, "Message": message})
    return (400 if service == "dynamodb" else 403), headers, body.encode()


def _handler_for(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            if self.path.startswith(CREDENTIALS_PATH):
                self._credentials()
            else:
                self.do_POST()

        def do_POST(self) -> None:
            try:
                self._serve()
            except ConnectionError:
                pass  # the caller went away mid-request (its container was removed): no one to answer
            except Exception as exc:  # a harness defect: answer, and let the tests see it
                gateway.harness_errors.append(repr(exc))
                self._send(
                    500, {"Content-Type": "application/json"}, json.dumps({"message": repr(exc)}).encode()
                )

        do_PUT = do_DELETE = do_HEAD = do_PATCH = do_POST

        def _credentials(self) -> None:
            principal = gateway.principals.get(self.path[len(CREDENTIALS_PATH) :])
            if principal is None:
                self._send(404, {"Content-Type": "application/json"}, b'{"message": "unknown"}')
                return
            expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)
            body = {
                **principal.credentials,
                "Token": principal.session_token,
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "RoleArn": principal.arn,
            }
            self._send(200, {"Content-Type": "application/json"}, json.dumps(body).encode())

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            path, _, query = self.path.partition("?")
            body = self._read_body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            request = AwsRequest(method=self.command, path=path, query=query, headers=headers, body=body)
            principal = gateway.principals.get(request.access_key or "")
            call = gateway.authorize(principal, request) if principal else None
            if call is not None and not call.allowed:
                self._send(*_denied_response(request, _aws_message(principal, call)))
                return
            if request.service == "batch":
                status, answer = gateway.batch(self.command, path, json.loads(body or b"{}"))
                self._send(status, {"Content-Type": "application/json"}, json.dumps(answer).encode())
                return
            status, response_headers, response_body = self._forward(body)
            if principal is not None and status == 404 and request.service == "s3":
                listing = head_object_needs_list_bucket(request)
                if listing is not None:
                    check = gateway.check(principal, listing)
                    note = "(to tell a missing object from a forbidden one)"
                    gateway.record(Call(principal.name, principal.role, request.operation, [check], note))
                    if not check.allowed:
                        self._send(*_denied_response(request, "Access Denied"))
                        return
            if response_body:
                gateway.remember_iterators(request, response_body)
            self._send(status, response_headers, response_body)

        def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
            connection = http.client.HTTPConnection(
                gateway.upstream.hostname, gateway.upstream.port, timeout=60
            )
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                kept = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
                return response.status, kept, data
            finally:
                connection.close()

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            length_given = False
            for key, value in headers.items():
                if key.lower() == "content-length":
                    length_given = True
                self.send_header(key, value)
            if not length_given:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


def _aws_message(principal: Principal, call: Call) -> str:
    denied = next(c.permission for c in call.checks if not c.allowed)
    return (
        f"User: {principal.arn} is not authorized to perform: {denied.action} on resource: "
        f"{denied.resource} because no identity-based policy allows the {denied.action} action"
    )
