"""One operator's scenario, the same commands on every target: a local stack
(``--state-dir``), a deployed stack through its API (``--api``) and a deployed stack
directly with the user's AWS credentials (``--stack``), the last two on the emulator
(``tests.e2e.deployed``). Each command runs as a user runs it: ``python -m overseer``.

submit a graph whose join fails -> status shows it failed, with the error -> logs show
what each job printed and the traceback -> the fix, rerun -> finished, the join run again
-> a second graph's running job cancelled -> graphs lists both, newest
first, with their statuses.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.cli import overseer
from tests.e2e.deployed import deployed_stack
from tests.ops.conftest import start_stack, stop_stack

HANDLERS = """
import pathlib
import time

import overseer


def make(job):
    print(f"making {job.name} for {job.graph_id}")
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=job.name.encode())]


def join(job):
    if not pathlib.Path(job.args["fixed"]).exists():
        raise ValueError("join is broken")
    print("joined", sorted(job.inputs))
    return [overseer.Artifact(key=f"{job.graph_id}/joined.txt", data=b"joined")]


def wait(job):
    print("waiting", flush=True)
    for _ in range(1200):
        time.sleep(0.05)


HANDLERS = {"make": make, "join": join, "wait": wait}
"""

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _graph_file(path: Path, graph_id: str, jobs: dict[str, object], args: dict[str, str]) -> Path:
    path.write_text(json.dumps({"id": graph_id, "args": args, "jobs": jobs}))
    return path


@pytest.fixture(scope="module")
def handlers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("handlers") / "scenario_handlers.py"
    path.write_text(HANDLERS)
    return path


@pytest.fixture(params=["local", "api", "stack"])
def target(request: pytest.FixtureRequest, handlers: Path, tmp_path: Path) -> Iterator[tuple[str, Cli]]:
    """(the target's name, a function running ``overseer ARGS`` against it)."""
    if request.param == "local":
        stack = start_stack(tmp_path, tmp_path / "state", handlers, workers=2)
        flags = ["--state-dir", str(tmp_path / "state")]
        try:
            yield "local", lambda *args: overseer(*args, *flags, cwd=tmp_path)
        finally:
            stop_stack(stack)
        return
    with deployed_stack(handlers) as deployed:
        flags = ["--api", deployed.api_url] if request.param == "api" else ["--stack", deployed.name]
        # Nothing local: a state directory left here would be a mistake of the target's choice.
        env = {**deployed.env, "OVERSEER_STATE_DIR": str(tmp_path / "must-not-exist")}
        yield request.param, lambda *args: overseer(*args, *flags, cwd=tmp_path, env=env)
        assert not (tmp_path / "must-not-exist").exists()


def _ok(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert result.returncode == code, (result.args, result.returncode, result.stdout, result.stderr)
    return result.stdout + result.stderr


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_operators_scenario_on_every_target(target: tuple[str, Cli], tmp_path: Path) -> None:
    name, cli = target
    fixed = tmp_path / "fixed"
    graph = _graph_file(
        tmp_path / "join.json",
        f"join-{name}",
        {"a": {"type": "make"}, "b": {"type": "make"}, "c": {"type": "join", "deps": ["a", "b"]}},
        {"fixed": str(fixed)},
    )
    assert f"graph join-{name} created: 3 jobs" in _ok(cli("submit", str(graph)))

    # The join fails: status --watch ends with 1, the error shown by status and jobs.
    failed = json.loads(_ok(cli("status", f"join-{name}", "--watch", "--interval", "0.3", "--json"), code=1))
    assert failed["status"] == "failed"
    assert {job: view["status"] for job, view in failed["jobs"].items()} == {
        "a": "finished",
        "b": "finished",
        "c": "failed",
    }
    assert failed["jobs"]["c"]["error"] == "ValueError: join is broken"
    assert "join is broken" in _ok(cli("status", f"join-{name}"))

    # What each job printed, and the failed one's traceback, attempt by attempt.
    logs_a = _ok(cli("logs", f"join-{name}", "a"))
    assert f"making a for join-{name}" in logs_a
    assert f"join-{name}/a attempt 1" in logs_a
    logs_c = _ok(cli("logs", f"join-{name}", "c"))
    assert "Traceback" in logs_c and "ValueError: join is broken" in logs_c
    assert "making" not in logs_c  # only c's lines
    assert "graph 'join-" in _ok(cli("logs", f"join-{name}", "nope"), code=1)

    # Fixed: the rerun runs the failed job again, the finished ones are kept.
    fixed.write_text("yes")
    assert "1 failed or aborted jobs go again" in _ok(cli("rerun", f"join-{name}"))
    done = json.loads(_ok(cli("status", f"join-{name}", "--watch", "--interval", "0.3", "--json")))
    assert done["status"] == "finished"
    # A rerun starts the job's attempts again; its log keeps the earlier run's lines first.
    assert {job: view["attempts"] for job, view in done["jobs"].items()} == {"a": 1, "b": 1, "c": 1}
    assert done["jobs"]["c"]["artifacts"][0]["key"] == f"join-{name}/joined.txt"
    again = _ok(cli("logs", f"join-{name}", "c", "--attempt", "1"))
    assert again.index("join is broken") < again.index("joined ['a', 'b']")
    assert "no log lines" in _ok(cli("logs", f"join-{name}", "c", "--attempt", "2"))

    # A running job cancelled: the graph is aborted.
    slow = _graph_file(tmp_path / "slow.json", f"slow-{name}", {"w": {"type": "wait"}}, {})
    _ok(cli("submit", str(slow)))

    def running() -> bool:
        return json.loads(_ok(cli("jobs", f"slow-{name}", "--json")))["w"]["status"] == "running"

    _wait_for(running, "the slow job to run")
    assert "1 jobs aborted" in _ok(cli("cancel", f"slow-{name}"))
    assert json.loads(_ok(cli("status", f"slow-{name}", "--json")))["status"] == "aborted"

    # Both graphs, newest first.
    listed = json.loads(_ok(cli("graphs", "--json")))
    assert [(g["graph_id"], g["status"]) for g in listed["graphs"]] == [
        (f"slow-{name}", "aborted"),
        (f"join-{name}", "finished"),
    ]
    assert listed["next"] is None
    assert f"join-{name}" in _ok(cli("graphs", "--status", "finished"))


def test_api_and_stack_together_are_refused(tmp_path: Path) -> None:
    result = overseer("status", "g", "--api", "http://127.0.0.1:9/v1", "--stack", "s", cwd=tmp_path)
    assert result.returncode == 2
    assert "--api and --stack name two targets" in result.stderr


def test_a_stack_without_overseer_outputs_is_named(tmp_path: Path, aws_env: dict[str, str]) -> None:
    result = overseer("graphs", "--stack", "no-such-stack", cwd=tmp_path, env=dict(os.environ))
    assert result.returncode == 1
    assert "cannot read stack 'no-such-stack'" in result.stderr
