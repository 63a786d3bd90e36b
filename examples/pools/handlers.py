"""Handlers of the worker-pools example: each job type on the machine it needs.

``aggregate`` names its pool in its spec (``"pool": "large"``); ``train`` gets its pool from
the graph (``pool: gpu``); the others run on the default pool. Each job writes which pool's
worker ran it (``OVERSEER_POOL``, set for every worker of a pool), so a run shows it.

    overseer run examples/pools/graph.yaml --handlers examples/pools/handlers.py \\
        --workers default=2,large=1,gpu=1 --json
"""

from __future__ import annotations

import json
import os

from overseer import Artifact, Job


def _ran_on(job: Job, **extra: object) -> Artifact:
    body = {"job": job.name, "pool": os.environ.get("OVERSEER_POOL", "default"), **extra}
    return Artifact(key=f"pools/{job.graph_id}/{job.name}.json", data=json.dumps(body).encode())


def fetch(job: Job) -> Artifact:
    return _ran_on(job, rows=list(range(10)))


def aggregate(job: Job) -> Artifact:
    rows = json.loads(job.inputs["fetch"][0].read())["rows"]
    return _ran_on(job, total=sum(rows))


def train(job: Job) -> Artifact:
    total = json.loads(job.inputs["aggregate"][0].read())["total"]
    return _ran_on(job, model=f"weights-{total}")


def report(job: Job) -> Artifact:
    return _ran_on(job, model=json.loads(job.inputs["train"][0].read())["model"])


HANDLERS = {
    "fetch": fetch,
    "aggregate": {"process": aggregate, "pool": "large"},
    "train": train,
    "report": report,
}
