"""The failure policy through the command line, on the embedded backend and on the AWS
adapters (the emulator): retry on named exceptions, rerun a job with its downstream, and
`overseer run --rerun-failed` after a fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.api_server import SIGNING_ENV, signed_api

pytestmark = pytest.mark.e2e

BACKENDS = pytest.mark.parametrize("backend", ["embedded", "aws"])

RETRY_HANDLERS = """
import overseer


class UpstreamUnavailable(Exception):
    '''A third-party-like error class of the handlers module.'''


class Gateway502(UpstreamUnavailable):
    pass


def flaky(job):
    if job.attempt < 3:
        raise ConnectionError(f"refused on attempt {job.attempt}")
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=b"fetched")]


def gateway(job):
    if job.attempt < 2:
        raise Gateway502("502 from upstream")


def picky(job):
    raise ValueError("bad row 7")


HANDLERS = {
    "flaky": {"process": flaky, "backoff_seconds": 0.1},
    "gateway": {
        "process": gateway, "retry_on": [UpstreamUnavailable], "max_attempts": 2, "backoff_seconds": 0.1,
    },
    "picky": picky,
}
"""

RETRY_GRAPH = """
id: retry-policy
jobs:
  fetch: {type: flaky, retry_on: [ConnectionError], max_attempts: 3}
  gate: {type: gateway}
  parse: {type: picky, retry_on: [ConnectionError], max_attempts: 3}
  after: {type: gateway, deps: [fetch]}
"""


def command_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "250", "OVERSEER_FAULT_BACKOFF_SECONDS": "0.1", **(extra or {})}


def overseer(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, in ``cwd`` (where the embedded backend keeps .overseer)."""
    return subprocess.run(
        [sys.executable, "-m", "overseer", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=command_env(env),
    )


def run_json(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    done = overseer(cwd, "run", *args, "--json", env=env)
    assert done.stdout.strip(), done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@dataclass
class Place:
    """Where the commands act. ``embedded``: the state directory in the test's directory.
    ``aws``: the AWS adapters against one emulator for the whole test (``overseer run
    --backend aws --no-emulator``, the tables kept between runs) and, for the other
    commands, the deployed API's code on the same tables (``--api``)."""

    backend: str
    env: dict[str, str] = field(default_factory=dict)
    api: str = ""

    def run_args(self) -> list[str]:
        return ["--backend", "aws", "--no-emulator"] if self.backend == "aws" else []

    def target_args(self) -> list[str]:
        return ["--api", self.api] if self.api else []


@pytest.fixture(params=["embedded", "aws"])
def place(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Place]:
    if request.param == "embedded":
        yield Place("embedded")
        return
    request.getfixturevalue("aws_env")  # the session's emulator, in this process's environment
    name = f"fp{uuid.uuid4().hex[:8]}"
    env = {
        **SIGNING_ENV,
        "AWS_DEFAULT_REGION": SIGNING_ENV["AWS_REGION"],
        "OVERSEER_BACKEND": "aws",
        "OVERSEER_GRAPHS_TABLE": f"{name}-graphs",
        "OVERSEER_JOBS_TABLE": f"{name}-jobs",
        "OVERSEER_ARTIFACT_BUCKET": f"{name}-artifacts",
        "OVERSEER_EVENT_BUS": "",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with signed_api() as (url, _):
        yield Place("aws", {k: v for k, v in os.environ.items() if k != "AWS_SESSION_TOKEN"}, url)


@BACKENDS
def test_retry_on_retries_the_named_exceptions_and_fails_the_others_at_once(tmp_path, backend):
    (tmp_path / "handlers.py").write_text(RETRY_HANDLERS)
    (tmp_path / "graph.yaml").write_text(RETRY_GRAPH)
    code, result, _ = run_json(tmp_path, "graph.yaml", "--handlers", "handlers.py", "--backend", backend)
    assert code == 1 and result["status"] == "failed"
    jobs = result["jobs"]
    # ConnectionError twice, retry_on [ConnectionError], max_attempts 3: finished on attempt 3.
    fetch = jobs["fetch"]
    assert (fetch["status"], fetch["attempts"], fetch["error"]) == ("finished", 3, None)
    assert [(e["attempt"], e["type"], e["message"]) for e in jobs["fetch"]["errors"]] == [
        (1, "ConnectionError", "refused on attempt 1"),
        (2, "ConnectionError", "refused on attempt 2"),
    ]
    # ValueError is not in the list: failed on attempt 1.
    assert (jobs["parse"]["status"], jobs["parse"]["attempts"]) == ("failed", 1)
    assert jobs["parse"]["error"] == "ValueError: bad row 7"
    # The handler's own retry_on: a subclass of a class defined in the handlers module.
    assert (jobs["gate"]["status"], jobs["gate"]["attempts"]) == ("finished", 2)
    assert [e["type"] for e in jobs["gate"]["errors"]] == ["Gateway502"]
    assert jobs["after"]["status"] == "finished"


def test_every_attempt_s_error_shows_in_overseer_jobs(tmp_path):
    (tmp_path / "handlers.py").write_text(RETRY_HANDLERS)
    (tmp_path / "graph.yaml").write_text(RETRY_GRAPH)
    run_json(tmp_path, "graph.yaml", "--handlers", "handlers.py")
    shown = overseer(tmp_path, "jobs", "retry-policy")
    assert shown.returncode == 0, shown.stderr
    assert "attempt 1: ConnectionError: refused on attempt 1" in shown.stdout
    assert "attempt 2: ConnectionError: refused on attempt 2" in shown.stdout
    assert "attempt 1: ValueError: bad row 7" in shown.stdout
    listed = json.loads(overseer(tmp_path, "jobs", "retry-policy", "--json").stdout)
    assert [e["attempt"] for e in listed["fetch"]["errors"]] == [1, 2]


def test_a_bad_retry_on_is_invalid_input(tmp_path):
    (tmp_path / "handlers.py").write_text(RETRY_HANDLERS)
    (tmp_path / "graph.yaml").write_text("jobs:\n  fetch: {type: flaky, retry_on: [Connection Error]}\n")
    done = overseer(tmp_path, "run", "graph.yaml", "--handlers", "handlers.py")
    assert done.returncode == 2
    assert "job 'fetch' retry_on holds 'Connection Error', which is not an exception name" in done.stderr
    assert not (tmp_path / ".overseer").exists()
