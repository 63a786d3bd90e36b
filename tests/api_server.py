"""A local stand-in for API Gateway in front of the real ``functions.api.handler``: it checks
each request's SigV4 signature as API Gateway's IAM authorization does (403 when it does not
match), then turns it into the REST proxy event the Lambda receives. The handler's services
come from the environment (``OVERSEER_BACKEND`` ...), as in the deployed Lambda.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

STAGE = "/v1"
ACCESS_KEY, SECRET_KEY, REGION = "AKIDEXAMPLE", "secret", "eu-west-1"
# The environment the handler and a signing client share (credentials and region).
SIGNING_ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION}


def expected_authorization(method: str, url: str, headers: Mapping[str, str], body: bytes) -> str:
    """The Authorization header API Gateway computes for the received request: SigV4 over its
    method, URL (query string included), the headers the client says it signed, the body
    and the X-Amz-Date it carried."""
    signed = re.search(r"SignedHeaders=([^,\s]+)", headers.get("Authorization", ""))
    names = signed.group(1).split(";") if signed else []
    request = AWSRequest(
        method=method, url=url, data=body, headers={n: headers[n] for n in names if n in headers}
    )
    request.context["timestamp"] = headers.get("X-Amz-Date", "")
    signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "execute-api", REGION)
    signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return (
        f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, "
        f"SignedHeaders={signer.signed_headers(signer.headers_to_sign(request))}, Signature={signature}"
    )


class _Context:
    function_name = "overseer-api"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:overseer-api"
    aws_request_id = "req-1"


@contextmanager
def signed_api() -> Iterator[tuple[str, list[str]]]:
    """Serve ``functions.api`` on 127.0.0.1; yields its URL and the signatures received.
    The caller sets the environment (``SIGNING_ENV`` and the backend's) first."""
    from functions import api

    api.reset()
    signatures: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            body = raw.decode() if length else None
            received = self.headers.get("Authorization", "")
            url = f"http://{self.headers['Host']}{self.path}"
            signatures.append(received)
            if received != expected_authorization(self.command, url, self.headers, raw):
                self._reply(
                    403, json.dumps({"message": "The request signature we calculated does not match"})
                )
                return
            query = dict(parse_qsl(parts.query)) or None
            event: dict[str, Any] = {
                "resource": "/{proxy+}",
                "path": parts.path.removeprefix(STAGE),
                "httpMethod": self.command,
                "headers": dict(self.headers.items()),
                "multiValueHeaders": {k: [v] for k, v in self.headers.items()},
                "queryStringParameters": query,
                "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
                "pathParameters": None,
                "stageVariables": None,
                "requestContext": {"stage": STAGE.strip("/"), "httpMethod": self.command, "path": parts.path,
                                   "requestId": "r", "identity": {"sourceIp": "127.0.0.1"}},
                "body": body,
                "isBase64Encoded": False,
            }  # fmt: skip
            response = api.handler(event, _Context())  # type: ignore[arg-type]
            self._reply(response["statusCode"], response["body"])

        def _reply(self, status: int, body: str) -> None:
            payload = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{STAGE}", signatures
    finally:
        server.shutdown()
        api.reset()


@contextmanager
def embedded_api(state_dir: Any, monkeypatch: Any) -> Iterator[tuple[str, list[str]]]:
    """``signed_api`` with its handler's services on the embedded backend in ``state_dir``
    (the environment set through pytest's ``monkeypatch``, undone after the test)."""
    for name, value in {
        "OVERSEER_BACKEND": "embedded",
        "OVERSEER_STATE_DIR": str(state_dir),
        "OVERSEER_EVENT_BUS": "",
        **SIGNING_ENV,
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with signed_api() as served:
        yield served
