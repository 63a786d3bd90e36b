"""A real ``overseer local up`` process on a temporary state directory, with real workers.

The stack runs with a 3 s lease (heartbeat every second), so cancelling is seen within a
second. Commands run in-process through click's runner (the same code as the console
script) against the stack's state directory; a few run as real subprocesses too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from overseer.cli import main

LEASE_SECONDS = 3
HANDLERS = """
import logging
import pathlib
import time

import overseer

BROKEN = {broken}


def make(job):
    print(f"making {{job.name}}")
    logging.getLogger("pipeline").info("args %s", sorted(job.args))
    return [overseer.Artifact(key=f"{{job.graph_id}}/{{job.name}}.txt", data=job.name.encode() * 3)]


def join(job):
    parts = [a.read() for deps in job.inputs.values() for a in deps]
    if BROKEN:
        raise ValueError("join is broken")
    return [overseer.Artifact(key=f"{{job.graph_id}}/joined.txt", data=b"+".join(sorted(parts)))]


def slow(job):
    beat = pathlib.Path(job.args["beat"])
    partial = beat.with_name(beat.name + ".partial")
    for i in range(3000):
        # Written aside and renamed, so a kill never leaves the beat file empty.
        partial.write_text(repr(time.time()))
        partial.replace(beat)
        print("tick", i, flush=True)
        time.sleep(0.05)


HANDLERS = {{"make": make, "join": join, "slow": slow}}
"""


def write_handlers(path: Path, *, broken: bool) -> None:
    path.write_text(HANDLERS.format(broken=broken))


@dataclass
class Stack:
    root: Path
    state_dir: Path
    handlers: Path
    process: subprocess.Popen[bytes]
    log: Path

    def cli(self, *args: str, expect: int | None = 0) -> Result:
        result = CliRunner().invoke(main, [*args, "--state-dir", str(self.state_dir)], catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, (args, result.exit_code, result.output)
        return result

    def jobs(self, graph_id: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.cli("jobs", graph_id, "--json").stdout)
        return found

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = json.loads((self.state_dir / "local.json").read_text())
        return info

    def wait_for(self, condition: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or condition}; stack log:\n{self.log.read_text()}")


def start_stack(
    root: Path, state_dir: Path, handlers: Path, workers: int = 2, args: Sequence[str] = ()
) -> Stack:
    """``overseer local up`` on ``state_dir`` with ``workers`` (and ``args``, e.g. ``--limit``)."""
    log = root / f"local-up-{time.monotonic_ns()}.log"
    env = {
        **os.environ,
        "OVERSEER_LEASE_SECONDS": str(LEASE_SECONDS),
        "OVERSEER_SHUTDOWN_GRACE_SECONDS": "2",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH", "")])),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "overseer", "local", "up", "--state-dir", str(state_dir),
             "--handlers", str(handlers), "--workers", str(workers), *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root,
        )  # fmt: skip
    stack = Stack(root, state_dir, handlers, process, log)
    stack.wait_for(lambda: (state_dir / "local.json").exists(), what="local up to start")
    return stack


def stop_stack(stack: Stack, timeout: float = 30.0) -> int:
    if stack.process.poll() is None:
        stack.process.send_signal(signal.SIGTERM)
    try:
        return stack.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stack.process.kill()
        stack.process.wait()
        raise


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("local-stack")
    handlers = root / "pipeline_handlers.py"
    write_handlers(handlers, broken=True)
    running = start_stack(root, root / "state", handlers)
    try:
        yield running
    finally:
        stop_stack(running)
