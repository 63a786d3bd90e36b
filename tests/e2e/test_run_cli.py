"""`overseer run` as a user runs it: exit codes, the --json object, --out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.e2e.cli import overseer

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent
HANDLERS = str(HERE / "data" / "handlers.py")


@pytest.mark.parametrize(
    "backend", [["--backend", "embedded"], ["--backend", "aws"]], ids=["embedded", "aws"]
)
def test_a_diamond_runs_to_the_end_with_json_and_out(tmp_path, backend):
    graph = tmp_path / "diamond.yaml"
    graph.write_text(
        "id: e2e-diamond\njobs:\n  top: {type: write}\n  left: {type: write, deps: [top]}\n"
        "  right: {type: write, deps: [top]}\n  join: [left, right]\n"
    )
    done = overseer(
        "run",
        str(graph),
        "--handlers",
        HANDLERS,
        "--workers",
        "2",
        "--json",
        "--out",
        str(tmp_path / "out"),
        *backend,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["graph_id"] == "e2e-diamond" and result["status"] == "finished"
    assert {n: j["status"] for n, j in result["jobs"].items()} == dict.fromkeys(
        ["join", "left", "right", "top"], "finished"
    )
    (artifact,) = result["jobs"]["join"]["artifacts"]
    stored = tmp_path / "out" / artifact["bucket"] / artifact["key"]
    assert stored.read_bytes() == b"left+right"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == artifact["sha256"]


def test_a_failing_graph_exits_1_and_names_the_error(tmp_path):
    graph = tmp_path / "failing.json"
    graph.write_text(
        json.dumps(
            {
                "id": "e2e-failing",
                "jobs": {
                    "a": {"type": "broken"},
                    "b": {"type": "write", "deps": ["a"]},
                    "c": {"type": "write"},
                },
            }
        )
    )
    done = overseer("run", str(graph), "--handlers", HANDLERS, "--workers", "1", "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    jobs = json.loads(done.stdout.strip().splitlines()[-1])["jobs"]
    assert jobs["a"]["status"] == "failed" and jobs["a"]["error"] == "RuntimeError: disk full"
    assert jobs["b"]["status"] == "aborted" and jobs["b"]["error"] == "upstream job 'a' failed"
    assert jobs["c"]["status"] == "finished"


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ("jobs:\n  a: {type: write, deps: [b]}\n  b: {type: write, deps: [a]}\n", "dependency cycle"),
        ("jobs:\n  a: {type: write, deps: [ghost]}\n", "unknown job(s) ['ghost']"),
        ("jobs:\n  a: {type: nope}\n", "no handler for job type 'nope'"),
        ("jobs:\n  write: []\n  write: []\n", "duplicate key 'write'"),
        ("jobs: {}\n", "graph has no jobs"),
        ("jobs:\n  a: {type: write, args: {x: .nan}}\n", "are not JSON"),
        ("jobs:\n  a: {type: write, args: {x: " + "y" * 40000 + "}}\n", "larger than 32768 bytes"),
    ],
)
def test_invalid_input_exits_2_with_its_message_and_writes_nothing(tmp_path, graph, message):
    path = tmp_path / "bad.yaml"
    path.write_text(graph)
    out = tmp_path / "out"
    done = overseer("run", str(path), "--handlers", HANDLERS, "--out", str(out), "--json", cwd=tmp_path)
    assert done.returncode == 2
    assert message in " ".join(done.stderr.split())
    assert done.stdout == ""
    assert not out.exists()
    assert not (tmp_path / ".overseer").exists()


def test_an_unknown_handlers_module_exits_2(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("jobs:\n  a: []\n")
    done = overseer("run", str(path), "--handlers", "no_such_module_here", cwd=tmp_path)
    assert done.returncode == 2
    assert "cannot import handlers module 'no_such_module_here'" in done.stderr
