"""The failure policy through the command line, on the embedded backend and on the AWS
adapters (the emulator): retry on named exceptions, rerun a job with its downstream, and
`overseer run --rerun-failed` after a fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.api_server import SIGNING_ENV, signed_api
from tests.e2e.cli import overseer as run_command

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


def relay(job):
    if job.attempt < 2:
        raise Gateway502("502 from the relay")


def picky(job):
    raise ValueError("bad row 7")


HANDLERS = {
    "flaky": {"process": flaky, "backoff_seconds": 0.1},
    "gateway": {
        "process": gateway, "retry_on": [UpstreamUnavailable], "max_attempts": 2, "backoff_seconds": 0.1,
    },
    "relay": relay,
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
  relay: {type: relay, retry_on: [UpstreamUnavailable], max_attempts: 2}
"""


def command_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "250", "OVERSEER_FAULT_BACKOFF_SECONDS": "0.1", **(extra or {})}


def overseer(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_command(*args, cwd=cwd, env={"OVERSEER_FAULT_BACKOFF_SECONDS": "0.1", **(env or {})})


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
        yield Place("aws", url)


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
    # The graph names a class of the handlers module: resolved in the handler's process.
    assert (jobs["relay"]["status"], jobs["relay"]["attempts"]) == ("finished", 2)
    if backend == "embedded":  # every attempt's error shows in `overseer jobs` (state in tmp_path)
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


STEP_HANDLERS = """
import os
import pathlib
import time

import overseer

BROKEN = {broken}


def step(job):
    with open(os.environ["RUNS_LOG"], "a") as log:
        log.write(job.name + "\\n")
    if BROKEN and job.name == "c":
        raise ValueError("c is broken")
    data = f"{{job.name}} {{job.random.random()}} {{sorted(job.inputs)}}".encode()
    return [overseer.Artifact(key=f"{{job.graph_id}}/{{job.name}}.txt", data=data)]


def hold(job):
    pathlib.Path(os.environ["HOLD_STARTED"]).write_text("started")
    while not pathlib.Path(os.environ["HOLD_RELEASE"]).exists():
        time.sleep(0.05)


HANDLERS = {{"step": step, "hold": hold}}
"""

STEP_GRAPH = """
id: {graph_id}
jobs:
  a: {{type: step}}
  b: {{type: step, deps: [a]}}
  c: {{type: step, deps: [b]}}
  d: {{type: step, deps: [c]}}
  side: {{type: step, deps: [a]}}
  hold: {{type: hold}}
"""


def runs(tmp_path: Path) -> list[str]:
    log = tmp_path / "runs.log"
    return log.read_text().split() if log.exists() else []


def step_env(tmp_path: Path) -> dict[str, str]:
    return {
        "RUNS_LOG": str(tmp_path / "runs.log"),
        "HOLD_STARTED": str(tmp_path / "hold.started"),
        "HOLD_RELEASE": str(tmp_path / "hold.release"),
    }


def test_rerun_a_job_with_its_downstream_then_run_again(tmp_path: Path, place: Place) -> None:
    graph_id = f"rerun-{place.backend}"
    (tmp_path / "handlers.py").write_text(STEP_HANDLERS.format(broken=False))
    (tmp_path / "graph.yaml").write_text(STEP_GRAPH.format(graph_id=graph_id))
    env = step_env(tmp_path)
    run = [sys.executable, "-m", "overseer", "run", "graph.yaml", "--handlers", "handlers.py", "--json"]
    first = subprocess.Popen(
        [*run, *place.run_args()],
        cwd=tmp_path,
        env=command_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while (
            not (tmp_path / "hold.started").exists() and first.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        # Refused while the job runs: exit 1, nothing changed.
        assert first.poll() is None, first.communicate()[1][-3000:]
        refused = overseer(tmp_path, "rerun", graph_id, "--job", "hold", *place.target_args(), env=env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert (
            f"cannot rerun 'hold' in graph '{graph_id}': 1 of those jobs is running ('hold')"
            in refused.stderr
        )
    finally:
        (tmp_path / "hold.release").write_text("go")
        out, err = first.communicate(timeout=240)
    assert first.returncode == 0, err[-3000:]
    before = json.loads(out.strip().splitlines()[-1])["jobs"]
    assert Counter(runs(tmp_path)) == dict.fromkeys(["a", "b", "c", "d", "side"], 1)

    rerun = overseer(tmp_path, "rerun", graph_id, "--job", "b", "--downstream", *place.target_args(), env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert f"graph {graph_id} running: job 'b' and its downstream (3 jobs) go again" in rerun.stdout
    listed = json.loads(overseer(tmp_path, "jobs", graph_id, "--json", *place.target_args(), env=env).stdout)
    assert {n: j["status"] for n, j in listed.items()} == {
        "a": "finished", "b": "ready", "c": "waiting", "d": "waiting", "side": "finished", "hold": "finished",
    }  # fmt: skip

    # The same `overseer run` carries the graph on: b, c and d run again, in order.
    code, result, stderr = run_json(
        tmp_path, "graph.yaml", "--handlers", "handlers.py", *place.run_args(), env=env
    )
    assert code == 0 and result["status"] == "finished", stderr[-3000:]
    assert runs(tmp_path)[5:] == ["b", "c", "d"]
    after = result["jobs"]
    for name in ("a", "side", "hold"):  # kept: attempts, end, artifacts
        assert {k: after[name][k] for k in ("attempts", "finished_at", "artifacts")} == {
            k: before[name][k] for k in ("attempts", "finished_at", "artifacts")
        }
    for name in ("b", "c", "d"):
        assert after[name]["attempts"] == 1 and after[name]["finished_at"] > before["hold"]["finished_at"]

    unknown = overseer(tmp_path, "rerun", graph_id, "--job", "nope", *place.target_args(), env=env)
    assert unknown.returncode == 1 and "has no job 'nope'" in unknown.stderr
    alone = overseer(tmp_path, "rerun", graph_id, "--downstream", *place.target_args(), env=env)
    assert alone.returncode == 2 and "--downstream needs --job NAME" in alone.stderr


def test_a_fixed_graph_runs_again_with_rerun_failed(tmp_path: Path, place: Place) -> None:
    graph_id = f"fix-{place.backend}"
    handlers = tmp_path / "handlers.py"
    handlers.write_text(STEP_HANDLERS.format(broken=True))
    (tmp_path / "graph.yaml").write_text(
        STEP_GRAPH.format(graph_id=graph_id).replace("  hold: {type: hold}\n", "")
    )
    env = step_env(tmp_path)
    args = ["graph.yaml", "--handlers", "handlers.py", *place.run_args()]
    code, failed, _ = run_json(tmp_path, *args, env=env)
    assert (code, failed["status"], failed["rerun"]) == (1, "failed", 0)
    assert {n: j["status"] for n, j in failed["jobs"].items()} == {
        "a": "finished", "b": "finished", "c": "failed", "d": "aborted", "side": "finished",
    }  # fmt: skip

    # Run again unchanged: the stored failure is shown, and how to carry on.
    code, shown, stderr = run_json(tmp_path, *args, env=env)
    assert (code, shown["status"]) == (1, "failed")
    assert "ended failed: run again with --rerun-failed to rerun its 2 failed and aborted jobs" in " ".join(
        stderr.split()
    )
    assert len(runs(tmp_path)) == 4  # nothing ran

    handlers.write_text(STEP_HANDLERS.format(broken=False))  # the fix
    code, fixed, stderr = run_json(tmp_path, *args, "--rerun-failed", env=env)
    assert (code, fixed["status"], fixed["rerun"]) == (0, "finished", 2), stderr[-3000:]
    assert Counter(runs(tmp_path)) == {"a": 1, "b": 1, "side": 1, "c": 2, "d": 1}
    for name in ("a", "b", "side"):
        assert fixed["jobs"][name] == failed["jobs"][name]  # kept as they were
    assert fixed["jobs"]["c"]["attempts"] == 1 and fixed["jobs"]["c"]["error"] is None
    assert "its 2 failed and aborted jobs ran again" in " ".join(stderr.split())


SLOW_HANDLERS = """
import time

import overseer


def slow(job):
    time.sleep(1)
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=b"12345678")]


HANDLERS = {"slow": slow}
"""


@BACKENDS
def test_a_graph_past_its_timeout_ends_aborted_with_the_reason(tmp_path, backend):
    (tmp_path / "handlers.py").write_text(SLOW_HANDLERS)
    chain = {f"s{i}": {"type": "slow", "deps": [f"s{i - 1}"] if i else []} for i in range(10)}
    (tmp_path / "graph.json").write_text(json.dumps({"id": "deadline", "timeout": 3, "jobs": chain}))
    code, result, err = run_json(tmp_path, "graph.json", "--handlers", "handlers.py", "--backend", backend)
    assert (code, result["status"], result["reason"]) == (1, "aborted", "deadline of 3 s passed")
    assert "aborted (deadline of 3 s passed)" in err
    jobs = result["jobs"]
    finished = [n for n, j in jobs.items() if j["status"] == "finished"]
    aborted = [n for n, j in jobs.items() if j["status"] == "aborted"]
    # Ten one-second links do not fit in 3 s: what had not finished was aborted, saying why.
    assert len(finished) < 10 and aborted and len(finished) + len(aborted) == 10, jobs
    assert {jobs[n]["error"] for n in aborted} == {"deadline of 3 s passed"}
    # Ended after its deadline, and not by running on: the deadline plus a sweep period (5 s)
    # is the design; the bound is loose because a loaded machine (and moto) may be slow.
    started, ended = parse_time(result["created_at"]), parse_time(result["finished_at"])
    assert 3 <= ended - started < 30, (result["created_at"], result["finished_at"])
    assert max(parse_time(jobs[n]["finished_at"]) for n in aborted) <= ended
    if backend == "embedded":  # the stored graph says why it ended
        shown = overseer(tmp_path, "status", "deadline")
        assert "aborted" in shown.stdout and "deadline of 3 s passed" in shown.stdout, shown.stdout


def parse_time(text: str) -> float:
    from overseer import timeutil

    return timeutil.parse(text).timestamp()
