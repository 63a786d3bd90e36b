"""``overseer local up`` itself: supervised workers, one stack per directory, clean stop, state kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.conftest import start_stack, stop_stack, write_handlers

pytestmark = pytest.mark.e2e


def test_local_stack_restarts_workers_stops_cleanly_and_keeps_state(tmp_path) -> None:  # type: ignore[no-untyped-def]
    handlers = tmp_path / "pipeline_handlers.py"
    write_handlers(handlers, broken=False)
    state = tmp_path / "state"
    stack = start_stack(tmp_path, state, handlers, workers=2)
    try:
        graph = "id: ops-kept\njobs:\n  one: {type: make}\n  two: {type: make, deps: [one]}\n"
        (tmp_path / "g.yaml").write_text(graph)
        stack.cli("submit", str(tmp_path / "g.yaml"))
        stack.cli("status", "ops-kept", "--watch", "--interval", "0.2")

        # A dead worker is replaced.
        first = stack.info()["workers"]
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        stack.wait_for(lambda: first[0] not in stack.info()["workers"] and len(stack.info()["workers"]) == 2,
                       timeout=10, what="the killed worker to be replaced")  # fmt: skip
        assert stack.info()["worker_restarts"] == 1

        # One stack per state directory.
        command = [sys.executable, "-m", "overseer", "local", "up", "--state-dir", str(state)]
        second = subprocess.run(
            [*command, "--handlers", str(handlers)], capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1 and "already runs" in second.stderr
    finally:
        assert stop_stack(stack) == 0
    assert not (state / "local.json").exists()
    workers_alive = [pid for pid in first[1:] if _alive(pid)]
    assert not workers_alive, "workers outlived the stack"
    # Nor the killed worker's handler process (forked: it must not hold the worker's end of
    # their pipe, or it waits on it for ever).
    assert not _processes_of(state), "a process of the stack outlived it"

    # Started again on the same directory: the graph is still there, and new ones run.
    again = start_stack(tmp_path, state, handlers, workers=1)
    try:
        assert "graph ops-kept finished" in again.cli("status", "ops-kept").output
        (tmp_path / "h.yaml").write_text("id: ops-after\njobs:\n  x: {type: make}\n")
        again.cli("submit", str(tmp_path / "h.yaml"))
        again.cli("status", "ops-after", "--watch", "--interval", "0.2")
    finally:
        stop_stack(again)
    down = again.cli("local", "down", expect=None)
    assert "no local stack runs" in down.output


def _processes_of(state_dir: Path) -> list[int]:
    """The processes (Linux's /proc) whose environment names ``state_dir``."""
    marker = f"OVERSEER_STATE_DIR={state_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
