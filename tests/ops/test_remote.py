"""``--api``: the commands through the deployed API's code, SigV4-signed; CloudWatch job logs.

A small HTTP server checks each request's SigV4 signature as API Gateway's IAM
authorization does (403 when it does not match), then turns it into the REST proxy event
the real ``functions.api.handler`` receives, with its services on the embedded backend.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.stub import Stubber
from click.testing import CliRunner

from overseer.cli import main
from overseer.cli.api_client import RemoteApi, job_log_lines, log_filter_pattern, region_from_url
from overseer.errors import ApiError

STAGE = "/v1"
ACCESS_KEY, SECRET_KEY, REGION = "AKIDEXAMPLE", "secret", "eu-west-1"


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


@pytest.fixture
def api_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    from functions import api

    for name, value in {
        "OVERSEER_BACKEND": "embedded",
        "OVERSEER_STATE_DIR": str(tmp_path / "remote-state"),
        "OVERSEER_EVENT_BUS": "",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
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


def test_commands_through_the_api_are_signed(api_url: tuple[str, list[str]], tmp_path: Path) -> None:
    url, signatures = api_url
    graph = tmp_path / "g.yaml"
    graph.write_text("id: remote-1\njobs:\n  a: []\n  b: [a]\n")
    runner = CliRunner()

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, [*args, "--api", url], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    assert "graph remote-1 created: 2 jobs" in cli("submit", str(graph))
    assert "exists already" in cli("submit", str(graph))
    assert "graph remote-1 running" in cli("status", "remote-1")
    jobs = json.loads(cli("jobs", "remote-1", "--json"))
    assert {n: j["status"] for n, j in jobs.items()} == {"a": "ready", "b": "waiting"}
    assert json.loads(cli("jobs", "remote-1", "--status", "ready", "--json")).keys() == {"a"}
    assert "2 jobs aborted" in cli("cancel", "remote-1")
    assert "2 failed or aborted jobs go again" in cli("rerun", "remote-1")
    assert "no graph" in cli("status", "nope", code=1)
    assert "flowchart LR" in cli("graph", "remote-1")

    assert signatures and all(s.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") for s in signatures)
    assert all("/eu-west-1/execute-api/aws4_request" in s for s in signatures)


def test_api_errors_and_region(monkeypatch) -> None:
    # The session's region wins over the environment's (other tests set AWS_REGION).
    monkeypatch.delenv("AWS_REGION", raising=False)
    assert region_from_url("https://abc.execute-api.ap-south-1.amazonaws.com/v1") == "ap-south-1"
    assert region_from_url("http://localhost:3000") is None
    session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="y", region_name="eu-west-1")
    api = RemoteApi("http://127.0.0.1:9/v1", session=session, timeout=2)  # nothing listens on port 9
    assert api.region == "eu-west-1"
    with pytest.raises(ApiError, match=r"^cannot reach http://127\.0\.0\.1:9/v1: .*refused") as raised:
        api.get_graph("g1")
    assert raised.value.status == 0


def test_job_logs_from_cloudwatch_with_a_stubbed_client() -> None:
    logs = boto3.client("logs", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
    pattern = log_filter_pattern("g1", "fetch")
    assert pattern == '"g1/fetch#"'
    with Stubber(logs) as stub:
        expected = {"logGroupName": "/aws/batch/job", "filterPattern": pattern}
        stub.add_response(
            "filter_log_events",
            {"events": [{"message": "g1/fetch#1 hello\n"}], "nextToken": "t2"},
            expected,
        )
        stub.add_response(
            "filter_log_events",
            {"events": [{"message": "g1/fetch#2 again"}]},
            {**expected, "nextToken": "t2"},
        )
        assert list(job_log_lines(logs, "g1", "fetch")) == ["g1/fetch#1 hello", "g1/fetch#2 again"]
        stub.assert_no_pending_responses()
    assert log_filter_pattern("g1", "fetch", 2) == '"g1/fetch#2"'
