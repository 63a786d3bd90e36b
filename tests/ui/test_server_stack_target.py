"""The UI server on a deployed stack directly (``--stack``): the stack on the emulator
(``tests.e2e.deployed``: its outputs in CloudFormation, a scheduler, a worker whose output
goes to CloudWatch Logs), the server reading its tables, logs and bucket with the user's
credentials. Without a browser: the JSON routes, and a download redirected to S3."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overseer.cli.targets import Target
from overseer.ui.server import UiServer
from tests.e2e.deployed import deployed_stack
from tests.ui.browser import serving

HANDLERS = """
import overseer


def make(job):
    print(f"making {job.name}")
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=b"made " + job.name.encode())]


HANDLERS = {"make": make}
"""


@pytest.fixture
def ui_on_stack(tmp_path: Path) -> Iterator[UiServer]:
    handlers = tmp_path / "stack_ui_handlers.py"
    handlers.write_text(HANDLERS)
    with (
        deployed_stack(handlers) as deployed,
        serving(Target(tmp_path / "unused", stack=deployed.name).client()) as server,
    ):
        yield server


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def get(server: UiServer, path: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}", headers={"Authorization": f"Bearer {server.token}"}
    )
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, dict(refused.headers), refused.read()


def test_the_page_on_a_deployed_stack_directly(ui_on_stack: UiServer) -> None:
    client = ui_on_stack.client
    client.submit(
        {"id": "stack-ui", "jobs": {"a": {"type": "make"}, "b": {"type": "make", "deps": ["a"]}}},
        None,
        {},
        None,
    )
    deadline = time.monotonic() + 60
    while client.graph("stack-ui")["status"] != "finished":
        assert time.monotonic() < deadline, client.jobs("stack-ui")
        time.sleep(0.2)

    status, _, body = get(ui_on_stack, "/api/graphs/stack-ui/jobs/b")
    job = json.loads(body)
    assert (status, job["status"], job["deps"], job["args"]) == (200, "finished", ["a"], {})
    (artifact,) = job["artifacts"]
    assert (artifact["key"], artifact["size"]) == ("stack-ui/b.txt", 6)

    # The download: a redirect to a presigned URL, which fetches the object with no credentials.
    status, headers, _ = get(ui_on_stack, artifact["href"])
    assert status == 302 and "X-Amz-Signature=" in headers["Location"]
    with urllib.request.urlopen(headers["Location"], timeout=30) as download:
        assert download.read() == b"made b"

    # The log lines, from the workers' CloudWatch Logs group.
    deadline = time.monotonic() + 30
    while True:
        status, _, body = get(ui_on_stack, "/api/graphs/stack-ui/jobs/b/logs")
        sources = json.loads(body)["sources"]
        if sources or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200
    assert [source["source"] for source in sources] == ["attempt 1"]
    assert "making b" in sources[0]["lines"]
