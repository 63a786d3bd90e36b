"""Killing `overseer run` mid-graph and running it again finishes the graph, each job once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

HANDLERS = """
import os, time
import overseer

def step(job):
    time.sleep(0.3)
    with open(os.environ["RUNS_LOG"], "a") as log:
        log.write(job.name + "\\n")
    return [overseer.Artifact(key=f"{job.name}.txt", data=str(job.random.random()).encode())]

HANDLERS = {"step": step}
"""


def test_a_killed_runner_resumes_and_every_job_is_recorded_once(tmp_path: Path) -> None:
    (tmp_path / "handlers.py").write_text(HANDLERS)
    jobs = {
        f"c{c}-{i}": {"type": "step", "deps": [f"c{c}-{i - 1}"] if i else []}
        for c in range(3)
        for i in range(6)
    }
    (tmp_path / "graph.json").write_text(json.dumps({"id": "killed-runner", "jobs": jobs}))
    runs = tmp_path / "runs.log"
    env = {**os.environ, "RUNS_LOG": str(runs), "OVERSEER_LEASE_SECONDS": "3"}
    command = [
        sys.executable,
        "-m",
        "overseer",
        "run",
        "graph.json",
        "--handlers",
        "handlers.py",
        "--workers",
        "2",
        "--json",
        "--out",
        "out",
    ]

    # The whole process group dies at once, as on a crash: runner, workers, handler processes.
    first = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not runs.exists() or len(runs.read_text().split()) < 5):
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    ran_before = Counter(runs.read_text().split())
    assert 5 <= sum(ran_before.values()) < len(jobs), "the kill should land mid-graph"

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-2000:]
    result = json.loads(second.stdout.strip().splitlines()[-1])
    assert result["status"] == "finished"
    assert sorted(result["jobs"]) == sorted(jobs)
    assert all(job["status"] == "finished" for job in result["jobs"].values())

    ran = Counter(runs.read_text().split())
    assert set(ran) == set(jobs)
    # Only the jobs in flight at the kill (at most one per worker) ran twice.
    assert sum(1 for n in ran.values() if n > 1) <= 2
    for name, job in result["jobs"].items():
        (artifact,) = job["artifacts"]
        assert (tmp_path / "out" / artifact["bucket"] / artifact["key"]).stat().st_size == artifact["size"]
        # A job claimed when the kill came has a second attempt, after its lease expired.
        assert ran[name] <= job["attempts"] <= 2
    assert sum(1 for job in result["jobs"].values() if job["attempts"] == 2) <= 2


def test_a_runner_killed_in_a_sweep_leaves_its_lease_and_the_resumed_run_outlasts_it(tmp_path: Path) -> None:
    """A kill in the middle of a sweep leaves the sweep's lease held. The run started again
    sweeps once that lease passes, before its idle workers give up waiting, and so takes
    back the job the killed run's worker held."""
    from overseer import timeutil
    from overseer.backends.embedded import embedded_services
    from overseer.runner import local_settings
    from overseer.states import CLAIM
    from overseer.store import Fence
    from overseer.sweep import SWEEP_LEASE

    (tmp_path / "handlers.py").write_text(HANDLERS)
    jobs = {"a": {"type": "step"}, "b": {"type": "step", "deps": ["a"]}}
    (tmp_path / "graph.json").write_text(json.dumps({"id": "killed-in-a-sweep", "jobs": jobs}))
    runs = tmp_path / "runs.log"
    env = {**os.environ, "RUNS_LOG": str(runs)}
    submitted = subprocess.run(
        [sys.executable, "-m", "overseer", "submit", "graph.json"], cwd=tmp_path, env=env, capture_output=True
    )
    assert submitted.returncode == 0, submitted.stderr
    # What the killed run leaves: job a claimed by its worker, and the lease of its sweep,
    # each taken for as long as that run's settings say (the local defaults).
    state = tmp_path / ".overseer"
    settings = local_settings(state)
    store = embedded_services(state, settings).store
    claimed = store.transition(
        "killed-in-a-sweep",
        "a",
        CLAIM,
        fence=Fence(0),
        changes={"attempts": 1, "lease_owner": "dead", "lease_expires_at": timeutil.iso_in(1)},
    )
    assert claimed is not None
    assert store.acquire_lease(SWEEP_LEASE, "sweep:dead", seconds=settings.sweep_lease_seconds)

    again = subprocess.run(
        [sys.executable, "-m", "overseer", "run", "graph.json", "--handlers", "handlers.py", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip

    assert again.returncode == 0, again.stderr[-2000:]
    result = json.loads(again.stdout.strip().splitlines()[-1])
    assert result["status"] == "finished"
    assert {name: job["attempts"] for name, job in result["jobs"].items()} == {"a": 2, "b": 1}
    assert Counter(runs.read_text().split()) == {"a": 1, "b": 1}


def _descendants(pid: int) -> set[int]:
    """The processes under ``pid`` (Linux's /proc), its children's children included."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found |= {child, *_descendants(child)}
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever adopted it to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads Linux's /proc")
def test_the_workers_of_a_killed_runner_exit_and_leave_no_process(tmp_path: Path) -> None:
    """Only the runner is killed (not its process group): its workers, which never exit
    for want of work, see their parent gone and exit, with their handler processes."""
    (tmp_path / "handlers.py").write_text(HANDLERS)
    jobs = {f"j{i}": {"type": "step"} for i in range(40)}
    (tmp_path / "graph.json").write_text(json.dumps({"id": "orphans", "jobs": jobs}))
    runs = tmp_path / "runs.log"
    runner = subprocess.Popen(
        [sys.executable, "-m", "overseer", "run", "graph.json", "--handlers", "handlers.py",
         "--workers", "2"],
        cwd=tmp_path, env={**os.environ, "RUNS_LOG": str(runs)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not runs.exists() or len(runs.read_text().split()) < 2):
        time.sleep(0.05)
    left = _descendants(runner.pid)
    assert len(left) >= 2, "the workers and their handler processes should be running"

    runner.kill()
    runner.wait()

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_running(pid) for pid in left):
        time.sleep(0.1)
    assert not [pid for pid in left if _running(pid)], "processes of the killed run outlived it"
