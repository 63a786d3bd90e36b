"""``--api``: the commands through the deployed API's code, SigV4-signed; CloudWatch job logs.

A small HTTP server turns each request into the API Gateway REST proxy event the real
``functions.api.handler`` receives, with its services on the embedded backend, and
records the Authorization header the client signed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner

from overseer.cli import main
from overseer.remote import RemoteApi, job_log_lines, log_filter_pattern, region_from_url

STAGE = "/v1"


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
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_REGION": "eu-west-1",
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
            body = self.rfile.read(length).decode() if length else None
            signatures.append(self.headers.get("Authorization", ""))
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
            payload = response["body"].encode()
            self.send_response(response["statusCode"])
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
    api = RemoteApi("http://127.0.0.1:9/v1", session=boto3.Session(region_name="eu-west-1"), timeout=2)
    assert api.region == "eu-west-1"


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
