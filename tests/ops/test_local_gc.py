"""``overseer gc`` on the directory of a running ``overseer local up``: it deletes the graphs
that have ended, whole, while the stack goes on creating, running and ending others."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from overseer.backends.embedded import db_path
from tests.ops.conftest import Stack, start_stack, stop_stack, write_handlers

pytestmark = pytest.mark.e2e


def submit(stack: Stack, graph_id: str, jobs: dict[str, object]) -> None:
    path = stack.root / f"{graph_id}.json"
    path.write_text(json.dumps({"id": graph_id, "jobs": jobs}))
    stack.cli("submit", str(path))


def status(stack: Stack, graph_id: str) -> str | None:
    shown = stack.cli("status", graph_id, "--json", expect=None)
    return str(json.loads(shown.stdout)["status"]) if shown.exit_code == 0 else None


DIAMOND = {
    "top": {"type": "make"},
    "left": {"type": "make", "deps": ["top"]},
    "right": {"type": "make", "deps": ["top"]},
    "join": {"type": "join", "deps": ["left", "right"]},
}


def test_gc_while_the_stack_runs_deletes_ended_graphs_whole_and_the_stack_goes_on(tmp_path: Path) -> None:
    handlers = tmp_path / "pipeline_handlers.py"
    write_handlers(handlers, broken=False)
    state = tmp_path / "state"
    stack = start_stack(tmp_path, state, handlers, workers=2)
    try:
        for n in range(8):
            submit(stack, f"ended-{n}", DIAMOND)
        stack.wait_for(
            lambda: all(status(stack, f"ended-{n}") == "finished" for n in range(8)), what="8 graphs to end"
        )
        beat = tmp_path / "beat"
        slow = {"type": "slow", "args": {"beat": str(beat)}}
        submit(stack, "long", {"slow": slow, "after": {"type": "make", "deps": ["slow"]}})
        stack.wait_for(beat.exists, what="the long job to run")

        # gc as its own process, while graphs go on being submitted, run and ended.
        gc = subprocess.Popen(
            [sys.executable, "-m", "overseer", "gc", "--state-dir", str(state), "--older-than", "0",
             "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(Path.cwd())},
        )  # fmt: skip
        during = []
        while gc.poll() is None or len(during) < 3:
            during.append(f"during-{len(during)}")
            submit(stack, during[-1], DIAMOND)
        out, err = gc.communicate(timeout=60)
        assert gc.returncode == 0, err
        deleted = json.loads(out)["graphs"]

        assert {f"ended-{n}" for n in range(8)} <= set(deleted)
        assert "long" not in deleted and set(deleted) <= {f"ended-{n}" for n in range(8)} | set(during)
        # What it deleted is gone whole; everything else runs to its end.
        with sqlite3.connect(db_path(state)) as db:
            for graph_id in deleted:
                assert db.execute("SELECT COUNT(*) FROM jobs WHERE graph_id = ?", (graph_id,)).fetchone() == (
                    0,
                )
                assert not (state / "logs" / graph_id).exists()
        for graph_id in during:
            if graph_id not in deleted:
                stack.wait_for(
                    lambda g=graph_id: status(stack, g) == "finished", what=f"{graph_id} to finish"
                )
                assert {job["status"] for job in stack.jobs(graph_id).values()} == {"finished"}
        assert status(stack, "long") == "running"
        stack.cli("cancel", "long")
        stack.wait_for(lambda: status(stack, "long") == "aborted", what="long to end aborted")
        # A deleted graph's id runs again, from nothing.
        submit(stack, "ended-0", DIAMOND)
        stack.wait_for(lambda: status(stack, "ended-0") == "finished", what="ended-0 to run again")
    finally:
        assert stop_stack(stack) == 0
    assert "Traceback" not in stack.log.read_text()
