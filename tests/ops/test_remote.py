"""``--api``: the commands through the deployed API's code, SigV4-signed; CloudWatch job logs.

``tests.api_server`` checks each request's SigV4 signature as API Gateway's IAM
authorization does, then hands the real ``functions.api.handler`` the REST proxy event,
with its services on the embedded backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner

from overseer.backends.aws.logs import CloudWatchJobLogs, log_filter_pattern
from overseer.cli import main
from overseer.cli.api_client import RemoteApi, region_from_url
from overseer.errors import ApiError
from tests.api_server import embedded_api


@pytest.fixture
def api_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    with embedded_api(tmp_path / "remote-state", monkeypatch) as served:
        yield served


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
            {
                "events": [{"message": "g1/fetch#1 hello\n"}, {"message": "g1/fetch#1x not it"}],
                "nextToken": "t2",
            },
            {**expected, "limit": 1000},
        )
        stub.add_response(
            "filter_log_events",
            {"events": [{"message": "g1/fetch#2 again"}]},
            {**expected, "limit": 999, "nextToken": "t2"},
        )
        page = CloudWatchJobLogs(logs, "/aws/batch/job").page("g1", "fetch")
        lines, following = page.lines, page.next
        assert lines == [(1, "hello"), (2, "again")]
        assert following is None
        stub.assert_no_pending_responses()
    assert log_filter_pattern("g1", "fetch", 2) == '"g1/fetch#2"'
