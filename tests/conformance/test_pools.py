"""Worker pools on both backends: each job is stored with its pool, sent to its pool's queue
by the scheduler and the sweep, run by a worker of that pool, and a graph naming an unknown
pool is refused before anything is stored."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from overseer import Artifact, Expand, Job
from overseer.errors import InvalidGraph
from overseer.handlers import to_spec
from overseer.operations import submit_graph
from overseer.store import Services
from overseer.sweep import sweep
from overseer.worker import Worker

from .driver import Backend

# "aggregate" is routed to the large pool (as its handler's spec would say); "score" is
# served by the gpu pool only (its manifest), so its jobs and children go there.
POOLS = {
    "pools": {
        "default": {"types": ["fetch", "aggregate", "report"]},
        "large": {"types": ["fetch", "aggregate", "report"]},
        "gpu": {"types": ["score", "train"]},
    },
    "routes": {"aggregate": "large"},
}


def written(job: Job) -> Artifact:
    return Artifact(key=f"{job.graph_id}/{job.name}", data=job.name.encode())


def fan_out(job: Job) -> list[Any]:
    return [written(job), Expand(type="score", items=[{"n": n} for n in range(3)])]


HANDLERS = {name: written for name in ("fetch", "aggregate", "report", "score", "train")}


def _queues(backend: Backend) -> tuple[dict[str, Any], dict[str, Any]]:
    """Dispatch and dead-letter queues of the large and gpu pools, next to the backend's own."""
    if backend.kind == "embedded":
        from overseer.backends.embedded.queue import SqliteDispatchQueue

        queue = backend.services.queue.normal  # type: ignore[attr-defined]
        assert isinstance(queue, SqliteDispatchQueue)
        made = {
            pool: SqliteDispatchQueue(queue.db.path, name=f"dispatch-{pool}", db=queue.db)
            for pool in ("large", "gpu")
        }
        return made, {pool: q.dead_letter_queue() for pool, q in made.items()}
    from overseer.backends.aws.queue import SqsDispatchQueue
    from overseer.backends.aws.resources import create_queues

    sqs = backend.services.queue.normal.client  # type: ignore[attr-defined]
    queues, dead = {}, {}
    for pool in ("large", "gpu"):
        url, dlq = create_queues(sqs, f"p{uuid.uuid4().hex[:8]}-{pool}", backend.settings.lease_seconds)
        queues[pool], dead[pool] = SqsDispatchQueue(sqs, url), SqsDispatchQueue(sqs, dlq)
    return queues, dead


@pytest.fixture
def pooled(backend: Backend) -> Backend:
    """``backend`` with three pools: its own queue is the default pool's."""
    queues, dead = _queues(backend)
    settings = backend.settings.with_(pools=json.dumps(POOLS))
    services = dataclasses.replace(
        backend.services,
        settings=settings,
        pool_queues={"default": backend.services.queue, **queues},
        pool_dead_letters=dead,
    )
    return dataclasses.replace(backend, settings=settings, services=services)


def pool_worker(backend: Backend, pool: str, handlers: Mapping[str, Any] = HANDLERS) -> Worker:
    """A worker of ``pool``: its settings say so, it takes jobs from that pool's queue."""
    services = backend.services
    own = dataclasses.replace(
        services, settings=services.settings.with_(pool=pool), queue=services.queue_for(pool)
    )
    return Worker(own, {t: to_spec(t, h) for t, h in handlers.items()}, worker_id=f"{pool}-worker")


def work(backend: Backend, services: Services, worker: Worker) -> list[str]:
    deliveries = services.queue.receive(max_messages=10, wait_seconds=0, visibility_seconds=30)
    return [worker.process(d).job_name for d in deliveries]


def depths(backend: Backend) -> dict[str, int]:
    return {pool: queue.depth() for pool, queue in backend.services.queues().items()}


def test_each_job_goes_to_its_pools_queue_and_runs_on_a_worker_of_that_pool(pooled: Backend) -> None:
    gid = pooled.gid("pools-route")
    document = {
        "id": gid,
        "jobs": {
            "fetch": [],
            "aggregate": ["fetch"],
            "train": {"deps": ["aggregate"], "pool": "gpu"},
            "report": ["train"],
        },
    }
    submit_graph(pooled.services, document)
    stored = pooled.jobs(gid)
    assert {name: job.pool for name, job in stored.items()} == {
        "fetch": None,  # the default pool is not stored
        "aggregate": "large",  # its type's route
        "train": "gpu",  # the graph's pool
        "report": None,
    }
    workers = {pool: pool_worker(pooled, pool) for pool in ("default", "large", "gpu")}
    ran: dict[str, list[str]] = {pool: [] for pool in workers}
    for _ in range(40):
        pooled.pump()
        for pool, worker in workers.items():
            ran[pool] += work(pooled, worker.services, worker)
        if pooled.store.get_graph(gid).status.terminal:
            break
    assert pooled.store.get_graph(gid).status.value == "finished"
    assert ran == {"default": ["fetch", "report"], "large": ["aggregate"], "gpu": ["train"]}
    records = pooled.jobs(gid)
    assert {name: (job.worker_pool, job.worker) for name, job in records.items()} == {
        "fetch": ("default", "default-worker"),
        "aggregate": ("large", "large-worker"),
        "train": ("gpu", "gpu-worker"),
        "report": ("default", "default-worker"),
    }
    assert {name: job.summary()["pool"] for name, job in records.items()} == {
        "fetch": "default",
        "aggregate": "large",
        "train": "gpu",
        "report": "default",
    }
    assert depths(pooled) == {"default": 0, "large": 0, "gpu": 0}


def test_an_unknown_pool_or_a_type_no_pool_serves_is_refused_naming_the_pools(pooled: Backend) -> None:
    unknown = pooled.gid("pools-unknown")
    with pytest.raises(
        InvalidGraph, match=r"asks for pool 'tpu', which does not exist; pools: \['default', 'large', 'gpu'\]"
    ):
        submit_graph(pooled.services, {"id": unknown, "jobs": {"a": {"type": "fetch", "pool": "tpu"}}})
    with pytest.raises(
        InvalidGraph, match=r"no pool serves job type 'render'; pools: \['default', 'large', 'gpu'\]"
    ):
        submit_graph(pooled.services, {"id": unknown, "jobs": {"a": {"type": "render"}}})
    with pytest.raises(InvalidGraph, match=r"asks for pool 'gpu', whose handlers do not serve type 'fetch'"):
        submit_graph(pooled.services, {"id": unknown, "jobs": {"a": {"type": "fetch", "pool": "gpu"}}})
    assert pooled.store.get_graph(unknown) is None  # nothing stored


def test_the_sweep_resends_a_lost_message_to_its_pools_queue(pooled: Backend) -> None:
    gid = pooled.gid("pools-lost")
    submit_graph(pooled.services, {"id": gid, "jobs": {"train": {"type": "train"}, "fetch": []}})
    pooled.pump()
    assert depths(pooled) == {"default": 1, "large": 0, "gpu": 1}
    gpu = pooled.services.queue_for("gpu")
    (lost,) = gpu.receive(max_messages=10, wait_seconds=0, visibility_seconds=30)
    gpu.delete([lost.receipt])  # the gpu pool's message is lost; the default pool's is queued

    report = sweep(pooled.services, stale_ready_seconds=0)

    assert (report.lost_messages_resent, report.queue_depths) == (1, {"default": 1, "large": 0, "gpu": 0})
    assert depths(pooled) == {"default": 1, "large": 0, "gpu": 1}
    (again,) = gpu.receive(max_messages=10, wait_seconds=0, visibility_seconds=30)
    assert again.message.job_name == "train"


def test_an_expansions_children_go_to_the_pool_serving_their_type(pooled: Backend) -> None:
    gid = pooled.gid("pools-expand")
    submit_graph(pooled.services, {"id": gid, "jobs": {"fetch": [], "report": ["fetch"]}})
    pooled.pump()
    default = pool_worker(pooled, "default", {**HANDLERS, "fetch": fan_out})
    assert work(pooled, default.services, default) == ["fetch"]
    for _ in range(5):
        pooled.pump()
    children = {name: job.pool for name, job in pooled.jobs(gid).items() if job.parent == "fetch"}
    assert children == {"fetch.0": "gpu", "fetch.1": "gpu", "fetch.2": "gpu"}
    assert depths(pooled) == {"default": 0, "large": 0, "gpu": 3}
    gpu = pool_worker(pooled, "gpu")
    assert sorted(work(pooled, gpu.services, gpu)) == ["fetch.0", "fetch.1", "fetch.2"]
    for _ in range(5):
        pooled.pump()
    assert work(pooled, default.services, default) == ["report"]
    pooled.pump()
    assert pooled.store.get_graph(gid).status.value == "finished"


def test_a_worker_hands_back_a_job_it_could_not_finish_before_its_deadline(backend: Backend) -> None:
    """AWS Batch stops a worker at its timeout: a job whose timeout reaches past that goes
    back to the queue (attempt not counted) for a younger worker; one no worker could
    finish fails, instead of going round the queue for ever."""
    gid = backend.gid("deadline")
    backend.submit(
        {
            "id": gid,
            "jobs": {
                "long": {"type": "fetch", "timeout_seconds": 60},
                "longer": {"type": "fetch", "timeout_seconds": 200},
            },
        }
    )
    backend.pump()
    services = dataclasses.replace(
        backend.services, settings=backend.settings.with_(worker_deadline_seconds=100)
    )
    old = Worker(services, {"fetch": to_spec("fetch", written)}, worker_id="old")
    old.started -= 50  # 50 s left: "long" (60 s) does not fit, "longer" (200 s) fits no worker
    outcomes = {
        d.message.job_name: old.process(d) for d in backend.queue.receive(max_messages=10, wait_seconds=0)
    }
    assert {name: o.kind for name, o in outcomes.items()} == {"long": "released", "longer": "failed"}
    jobs = backend.jobs(gid)
    assert (jobs["long"].status.value, jobs["long"].attempts) == ("ready", 0)
    assert jobs["long"].reason == "released: this worker had 50 s left, the job may take 60 s"
    assert jobs["longer"].error is not None and jobs["longer"].error["type"] == "JobTooLong"
    assert (
        "its timeout of 200 s is longer than a worker of pool 'default' may run (100 s)"
        in jobs["longer"].error["message"]
    )
    assert old.run() == 0  # it takes no more jobs

    young = Worker(services, {"fetch": to_spec("fetch", written)}, worker_id="young")
    (delivery,) = backend.queue.receive(max_messages=10, wait_seconds=0)
    assert young.process(delivery).kind == "finished"
    assert backend.jobs(gid)["long"].attempts == 1


def test_a_worker_past_its_lifetime_takes_no_job(backend: Backend) -> None:
    backend.submit({"id": backend.gid("lifetime"), "jobs": {"a": {"type": "fetch"}}})
    backend.pump()
    services = dataclasses.replace(
        backend.services, settings=backend.settings.with_(worker_lifetime_seconds=5)
    )
    worker = Worker(services, {"fetch": to_spec("fetch", written)})
    worker.started -= 5
    assert worker.run() == 0
    assert backend.queue.depth() == 1  # still queued, for another worker
