"""A job records the version of the handler code that ran it (the worker's
``code_version``: on AWS its image's), with its outcome, on both backends."""

from __future__ import annotations

import dataclasses

from overseer import Artifact, Job, fault

from .driver import Backend


def flaky(job: Job) -> list[Artifact]:
    if job.attempt == 1:
        fault("the partner API timed out")
    return [Artifact(key=f"{job.graph_id}/{job.name}", data=b"ok")]


def test_each_outcome_records_the_code_version_of_the_worker_that_ran_it(backend: Backend) -> None:
    old = dataclasses.replace(
        backend,
        services=dataclasses.replace(
            backend.services, settings=backend.settings.with_(code_version="image:aaa")
        ),
    )
    new = dataclasses.replace(
        backend,
        services=dataclasses.replace(
            backend.services, settings=backend.settings.with_(code_version="image:bbb")
        ),
    )
    gid = backend.gid("code-version")
    backend.submit({"id": gid, "jobs": {"a": {"type": "flaky", "max_attempts": 3}}})
    backend.pump()
    old_worker, new_worker = old.worker({"flaky": flaky}), new.worker({"flaky": flaky})

    old.work_once(old_worker)  # attempt 1 faults on the old image
    faulted = backend.jobs(gid)["a"]
    assert (faulted.status.value, faulted.code_version) == ("ready", "image:aaa")
    for _ in range(20):  # attempt 2, retried after its backoff, runs on the new image
        backend.pump()
        if new.work_once(new_worker) and backend.jobs(gid)["a"].status.value == "finished":
            break
    finished = backend.jobs(gid)["a"]
    assert (finished.status.value, finished.attempts, finished.code_version) == ("finished", 2, "image:bbb")
    assert finished.summary()["code_version"] == "image:bbb"
