"""The UI server over the deployed API's code (``--api``), without a browser: its JSON
routes answer through ``ApiClient`` (SigV4-signed requests to ``functions.api.handler``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overseer.cli.targets import Target
from overseer.ui.server import UiServer
from tests.api_server import embedded_api
from tests.ui.browser import serving


@pytest.fixture
def ui_over_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[UiServer]:
    with (
        embedded_api(tmp_path / "remote-state", monkeypatch) as (url, _signatures),
        serving(Target(tmp_path, api=url).client()) as server,
    ):
        yield server


def call(server: UiServer, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}",
        headers=headers,
        data=json.dumps(body).encode() if body is not None else None,
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_the_pages_routes_over_the_api(ui_over_api: UiServer) -> None:
    client = ui_over_api.client
    client.submit({"id": "remote-ui", "jobs": {"a": [], "b": ["a"]}}, None, {}, None)

    status, listed = call(ui_over_api, "/api/graphs?limit=10")
    assert status == 200 and [g["graph_id"] for g in listed["graphs"]] == ["remote-ui"]
    status, state = call(ui_over_api, "/api/graphs/remote-ui/state")
    assert status == 200 and state["complete"] and not state["collapsed"]
    assert {row["name"]: (row["status"], row["deps"]) for row in state["jobs"]} == {
        "a": ("ready", []),
        "b": ("waiting", ["a"]),
    }
    # A refresh asks the API for the jobs written since the last read (less a slack of 5 s).
    status, refreshed = call(ui_over_api, f"/api/graphs/remote-ui/state?since={state['cursor']}")
    assert status == 200 and not refreshed["complete"]
    assert {row["name"] for row in refreshed["jobs"]} == {"a", "b"}  # written within the slack
    status, page = call(ui_over_api, "/api/graphs/remote-ui/jobs?limit=1")
    assert status == 200 and list(page["jobs"]) == ["a"] and page["next"] == "a"
    status, job = call(ui_over_api, "/api/graphs/remote-ui/jobs/b")
    assert status == 200 and job["status"] == "waiting" and job["deps"] == ["a"]

    status, cancelled = call(ui_over_api, "/api/graphs/remote-ui/cancel", {})
    assert status == 200 and cancelled["jobs_aborted"] == 2
    status, rerun = call(ui_over_api, "/api/graphs/remote-ui/rerun", {"job": "a", "downstream": True})
    assert status == 200 and rerun["jobs_rerun"] == 2
    status, missing = call(ui_over_api, "/api/graphs/nope")
    assert status == 404 and "nope" in missing["error"]
