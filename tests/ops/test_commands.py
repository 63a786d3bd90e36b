"""Every operating command end to end against a real ``overseer local up`` process."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ops.conftest import LEASE_SECONDS, Stack, write_handlers

pytestmark = pytest.mark.e2e

GRAPH = """
id: ops-happy
args: {company_id: 42}
jobs:
  left: {type: make}
  right: {type: make}
  joined: {type: make, deps: [left, right]}
"""


def test_submit_status_jobs_logs_and_graph(stack: Stack) -> None:
    graph = stack.root / "happy.yaml"
    graph.write_text(GRAPH)
    first = stack.cli("submit", str(graph))
    assert "graph ops-happy created: 3 jobs" in first.output
    again = stack.cli("submit", str(graph))
    assert "exists already" in again.output

    watched = stack.cli("status", "ops-happy", "--watch", "--interval", "0.2")
    assert "graph ops-happy finished" in watched.output
    assert "3/3 done" in watched.output and "finished 3" in watched.output

    jobs = stack.jobs("ops-happy")
    assert {name: job["status"] for name, job in jobs.items()} == dict.fromkeys(
        ("joined", "left", "right"), "finished"
    )
    assert jobs["joined"]["deps"] == ["left", "right"]
    assert stack.cli("jobs", "ops-happy", "--status", "failed", "--json").stdout.strip() == "{}"
    table = stack.cli("jobs", "ops-happy", "--status", "finished").output
    assert "3 finished jobs of ops-happy" in table

    logs = stack.cli("logs", "ops-happy", "left")
    assert "making left" in logs.stdout
    assert "INFO pipeline: args ['company_id']" in logs.stdout

    mermaid = stack.cli("graph", "ops-happy").stdout
    assert mermaid.startswith("flowchart LR")
    assert mermaid.count(":::finished") == 3 and mermaid.count(" --> ") == 2
    dot = stack.cli("graph", "ops-happy", "--format", "dot").stdout
    assert '"left" -> "joined";' in dot and "#dcfce7" in dot
    from_file = stack.cli("graph", str(graph), "--format", "dot").stdout
    assert "waiting" in from_file and "finished" not in from_file


def test_graph_exports_a_png(stack: Stack) -> None:
    graph = stack.root / "png.yaml"
    graph.write_text("id: ops-png\njobs:\n  one: {type: make}\n  two: {type: make, deps: [one]}\n")
    stack.cli("submit", str(graph))
    png = stack.root / "ops-png.png"
    if shutil.which("dot") is None:
        missing = stack.cli("graph", "ops-png", "--format", "png", "--output", str(png), expect=1)
        assert "Graphviz is not installed" in missing.output and not png.exists()
        pytest.skip(
            "Graphviz's `dot` is not on PATH (apt-get install graphviz): the PNG itself is not checked"
        )
    stack.cli("graph", "ops-png", "--format", "png", "--output", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_template_submit_and_errors(stack: Stack) -> None:
    templates = stack.root / "templates"
    templates.mkdir()
    (templates / "report.yaml").write_text(
        'id: "report-{company_id}"\njobs:\n  one: {type: make}\n  two: {type: make, deps: [one]}\n'
    )
    result = stack.cli(
        "submit", "--template", "report", "--arg", "company_id=7", "--templates-dir", str(templates)
    )
    assert "graph report-7 created: 2 jobs" in result.output
    stack.cli("status", "report-7", "--watch", "--interval", "0.2")
    assert stack.jobs("report-7")["one"]["status"] == "finished"
    unknown = stack.cli("submit", "--template", "nope", "--templates-dir", str(templates), expect=2)
    assert "report" in unknown.output  # names the known templates
    bad = stack.root / "cyclic.yaml"
    bad.write_text("jobs:\n  a: [b]\n  b: [a]\n")
    assert "cycle" in stack.cli("submit", str(bad), expect=2).output.lower()
    assert "no graph" in stack.cli("status", "never-submitted", expect=1).output


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_failed_graph_fixed_and_rerun_keeps_finished_jobs(stack: Stack) -> None:
    graph = stack.root / "fixme.yaml"
    graph.write_text("id: ops-fixme\njobs:\n  a: {type: make}\n  b: {type: join, deps: [a]}\n"
                     "  c: {type: make, deps: [b]}\n  d: {type: make}\n")  # fmt: skip
    stack.cli("submit", str(graph))
    failed = stack.cli("status", "ops-fixme", "--watch", "--interval", "0.2", expect=1)
    assert "graph ops-fixme failed" in failed.output and "ValueError: join" in failed.output
    only_failed = json.loads(stack.cli("jobs", "ops-fixme", "--status", "failed", "--json").stdout)
    assert list(only_failed) == ["b"]
    assert only_failed["b"]["error"] == "ValueError: join is broken"
    before = stack.jobs("ops-fixme")
    assert before["c"]["status"] == "aborted" and "upstream" in before["c"]["error"]
    assert "join is broken" in stack.cli("logs", "ops-fixme", "b").stdout  # the traceback is logged

    kept = {}
    for name in ("a", "d"):
        (artifact,) = before[name]["artifacts"]
        path = stack.state_dir / "artifacts" / artifact["bucket"] / artifact["key"]
        kept[name] = (path, _sha256(path), path.stat().st_mtime_ns, before[name]["attempts"])

    write_handlers(stack.handlers, broken=False)  # the fix; the running stack is not restarted
    rerun = stack.cli("rerun", "ops-fixme")
    assert "2 failed or aborted jobs go again" in rerun.output
    done = stack.cli("status", "ops-fixme", "--watch", "--interval", "0.2")
    assert "graph ops-fixme finished" in done.output

    after = stack.jobs("ops-fixme")
    assert {n: j["status"] for n, j in after.items()} == dict.fromkeys("abcd", "finished")
    for name, (path, digest, mtime, attempts) in kept.items():
        assert _sha256(path) == digest
        assert path.stat().st_mtime_ns == mtime
        assert after[name]["attempts"] == attempts == 1
        assert after[name]["finished_at"] == before[name]["finished_at"]
        log = stack.state_dir / "logs" / "ops-fixme" / f"{name}.1.log"
        assert log.read_text().count("attempt 1 started") == 1  # it did not run again
    joined = [a for a in after["b"]["artifacts"] if a["key"].endswith("joined.txt")]
    assert joined and joined[0]["size"] == len(b"aaa")
    nothing = stack.cli("rerun", "ops-fixme")
    assert "nothing to rerun" in nothing.output


def test_cancel_stops_a_running_graph_within_a_heartbeat(stack: Stack) -> None:
    beat = stack.root / "beat"
    graph = stack.root / "slow.yaml"
    graph.write_text(f"id: ops-slow\nargs: {{beat: {beat}}}\njobs:\n  long: {{type: slow}}\n"
                     "  later: {type: make, deps: [long]}\n")  # fmt: skip
    stack.cli("submit", str(graph))
    stack.wait_for(lambda: beat.exists(), what="the slow job to start")
    assert stack.jobs("ops-slow")["long"]["status"] == "running"

    result = stack.cli("cancel", "ops-slow")
    cancelled_at = time.time()
    assert "graph ops-slow aborted: 2 jobs aborted" in result.output

    def stopped() -> bool:
        return time.time() - float(beat.read_text() or 0) > 0.5

    stack.wait_for(stopped, timeout=LEASE_SECONDS, what="the cancelled handler to stop")
    last_beat = float(beat.read_text())
    assert last_beat - cancelled_at < LEASE_SECONDS / 3 + 0.5, "stopped later than one heartbeat"
    jobs = stack.jobs("ops-slow")
    assert {n: (j["status"], j["error"]) for n, j in jobs.items()} == {
        "long": ("aborted", "graph cancelled"),
        "later": ("aborted", "graph cancelled"),
    }
    assert jobs["later"]["attempts"] == 0  # no new job started
    assert not (stack.state_dir / "logs" / "ops-slow" / "later.1.log").exists()
    final = stack.cli("status", "ops-slow", "--watch", expect=1)
    assert "graph ops-slow aborted" in final.output


def test_the_console_script_talks_to_the_stack(stack: Stack) -> None:
    graph = stack.root / "script.yaml"
    graph.write_text("id: ops-script\njobs:\n  only: {type: make}\n")
    env = {**os.environ, "OVERSEER_STATE_DIR": str(stack.state_dir)}
    command = [sys.executable, "-m", "overseer"]
    submitted = subprocess.run(
        [*command, "submit", str(graph), "--json"], env=env, capture_output=True, text=True
    )
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout)["created"] is True
    watched = subprocess.run(
        [*command, "status", "ops-script", "--watch", "--json", "--interval", "0.2"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert json.loads(watched.stdout.strip().splitlines()[-1])["jobs"]["only"]["status"] == "finished"
