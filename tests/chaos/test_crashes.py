"""Every way a handler can die, beside healthy jobs on the same workers."""

from __future__ import annotations

from collections import Counter

import pytest

from overseer.handlers import load_handlers
from overseer.job import Job
from overseer.states import GraphStatus, JobStatus

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

CRASHES = {
    "hog": "out of memory (the limit is 300 MB)",
    "segfault": "killed by SIGSEGV (segmentation fault)",
    "exit3": "exited with code 3",
    "suicide": "killed by SIGKILL",
    "hang": "longer than its timeout of 1 s",
}

# A handlers module slow to import (a model loaded at start-up), whose handler is quick.
SLOW_IMPORT = """
import time
time.sleep(2)
HANDLERS = {"quick": {"process": lambda job: None, "timeout_seconds": 1}}
"""


def test_crashing_handlers_fail_their_jobs_and_the_workers_go_on(chaos_stack):
    jobs = {f"crash-{kind}": {"type": kind} for kind in CRASHES}
    jobs.update({f"ok-{i}": {"type": "write"} for i in range(20)})
    jobs["after-ok"] = {"type": "write", "deps": [f"ok-{i}" for i in range(20)]}
    chaos_stack.submit({"id": "crashes", "jobs": jobs})
    pool = chaos_stack.pool(2, OVERSEER_HANDLER_MEMORY_MB="300").start()
    workers = {p.pid for p in pool.processes}
    try:
        graph = chaos_stack.drive("crashes", timeout=120)
        alive = {p.pid for p in pool.alive()}
    finally:
        pool.stop()

    assert graph.status == GraphStatus.FAILED
    records = chaos_stack.jobs("crashes")
    for kind, reason in CRASHES.items():
        job = records[f"crash-{kind}"]
        assert (job.status, job.attempts) == (JobStatus.FAILED, 2), (kind, job.error)
        assert job.error["type"] == "HandlerCrashed"
        assert reason in job.error["message"], (kind, job.error["message"])
        assert job.error["message"].endswith("(gave up after 2 attempts)")
    healthy = [j for n, j in records.items() if not n.startswith("crash-")]
    assert {j.name: j.status for j in healthy} == dict.fromkeys((j.name for j in healthy), JobStatus.FINISHED)
    # The same two workers ran everything and are still alive: no handler took one down.
    assert alive == workers and pool.started == 2
    runs = chaos_stack.runs()
    assert {pid for *_, pid in runs} <= workers
    ran = Counter(name for _, name, _, _ in runs if name.startswith("crash-"))
    assert ran == Counter({f"crash-{kind}": 2 for kind in CRASHES})  # each attempt ran its handler


def test_a_handler_timeout_does_not_count_the_handler_process_start_up(tmp_path):
    from overseer.errors import HandlerCrashed  # noqa: F401
    from overseer.isolation import IsolatedRunner

    handlers = tmp_path / "slow_import.py"
    handlers.write_text(SLOW_IMPORT)
    runner = IsolatedRunner(str(handlers))
    spec = load_handlers(str(handlers))["quick"]
    job = Job("g", "quick", "quick", {}, 1, 1, tmp_path)
    try:
        assert runner(spec, job) == []
    finally:
        runner.close()
