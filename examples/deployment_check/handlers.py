"""A pipeline to run right after a first deploy: the daily report, plus one job for each
permission a real pipeline needs, so a missing grant shows on the first graph rather than
in production.

Deploy with ``-c handlersModule=examples.deployment_check.handlers`` (the worker image
carries ``examples/``), then submit ``examples/deployment_check/graph.yaml``. The
deployment rehearsal (tests/rehearsal) runs this graph against the synthesized stack.

- ``write_artifact``: an artifact in the stack's bucket (PutObject, and HeadObject first);
- ``read_inputs``: reads its dependency's artifacts back (GetObject, checked by SHA-256);
- ``write_elsewhere``: an artifact in a bucket of ``allowedBuckets`` (args ``bucket``);
- ``write_rows``: rows into a table of ``rowsTables`` (args ``table``; key ``id``);
- ``wait``: sleeps ``seconds`` (default 20) and then writes an artifact: long enough to
  watch a worker being stopped or lost mid-job.
"""

from __future__ import annotations

import time

import overseer
from examples.daily_report.handlers import HANDLERS as DAILY_REPORT


def write_artifact(job: overseer.Job) -> list[overseer.Artifact]:
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.bin", data=job.random.randbytes(64))]


def read_inputs(job: overseer.Job) -> list[overseer.Artifact]:
    sizes = [artifact.size for artifacts in job.inputs.values() for artifact in artifacts
             if len(artifact.read()) == artifact.size]  # fmt: skip
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=str(sorted(sizes)).encode())]


def write_elsewhere(job: overseer.Job) -> list[overseer.Artifact]:
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=b"hello", bucket=job.args["bucket"])]


def write_rows(job: overseer.Job) -> list[overseer.Rows]:
    return [overseer.Rows(table=job.args["table"], items=[{"id": job.id, "attempt": job.attempt}])]


def wait(job: overseer.Job) -> list[overseer.Artifact]:
    time.sleep(float(job.args.get("seconds", 20)))
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=b"waited")]


HANDLERS = {
    **DAILY_REPORT,
    "write_artifact": write_artifact,
    "read_inputs": read_inputs,
    "write_elsewhere": write_elsewhere,
    "write_rows": write_rows,
    "wait": {"process": wait, "max_attempts": 3},
}
