"""N worker processes over one SQLite file: no double claim, no lost update."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path

from overseer.graph import parse_graph
from overseer.states import JobStatus

from .claimers import claim_all
from .conftest import embedded_backend

JOBS = 200
PROCESSES = 4


def test_four_processes_claim_every_job_exactly_once(tmp_path: Path) -> None:
    directory = tmp_path / "stack"
    backend = embedded_backend(directory)
    names = [f"j{i}" for i in range(JOBS)]
    spec = parse_graph({"id": "race", "jobs": {**{n: [] for n in names}, "join": names}})
    backend.store.create_graph(spec, max_attempts={})
    assert backend.pump() == JOBS
    # Every message twice: the duplicate must claim nothing.
    (taken,) = backend.queue.receive(max_messages=1, wait_seconds=0)
    backend.queue.send([taken.message])
    backend.queue.extend_visibility(taken.receipt, 0)
    assert backend.queue.depth() == JOBS + 1

    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCESSES) as pool:
        results = pool.starmap(claim_all, [(str(directory), f"p{n}") for n in range(PROCESSES)])

    claims = Counter(name for claimed in results for name in claimed)
    assert sorted(claims) == sorted(names)
    assert set(claims.values()) == {1}  # no double claim
    assert sum(1 for claimed in results if claimed) >= 2  # they really ran side by side
    jobs = backend.jobs("race")
    owners = {name: f"p{n}" for n, claimed in enumerate(results) for name in claimed}
    for name in names:
        assert (jobs[name].status, jobs[name].attempts, jobs[name].lease_owner) == (
            JobStatus.FINISHED,
            1,
            owners[name],
        )
    # No lost update: every concurrent set-add and counter-add landed.
    assert jobs["join"].finished_deps == JOBS
    assert backend.store.get_graph("race").counts["finished"] == JOBS
    assert backend.queue.depth() == 0
