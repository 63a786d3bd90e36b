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
- ``fan_out``: a graph that grows at run time: one ``write_item`` child per entry of args
  ``items`` (the worker's finish commits it with the graph's new job count; the scheduler
  writes the children, reads the items and, when the job ran more than once, deletes the
  items files of its other attempts). With ``fail_first`` its first attempt fails and is
  retried, so that last step runs too.
- ``write_item``: a child of ``fan_out``: an artifact holding its ``item``;
- ``list_inputs``: a join: an artifact listing its inputs, job by job in the order it got
  them, each with the text of its artifacts (a ``fan_out``'s children in item order).
"""

from __future__ import annotations

import json
import time

import overseer
from examples.daily_report.handlers import HANDLERS as DAILY_REPORT


def write_artifact(job: overseer.Job) -> list[overseer.Artifact]:
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.bin", data=job.random.randbytes(64))]


def read_inputs(job: overseer.Job) -> list[overseer.Artifact]:
    sizes = [artifact.size for artifacts in job.inputs.values() for artifact in artifacts
             if len(artifact.read()) == artifact.size]  # fmt: skip
    print(f"read {len(sizes)} inputs of sizes {sorted(sizes)}")  # in the job's log lines
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=str(sorted(sizes)).encode())]


def write_elsewhere(job: overseer.Job) -> list[overseer.Artifact]:
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=b"hello", bucket=job.args["bucket"])]


def write_rows(job: overseer.Job) -> list[overseer.Rows]:
    return [overseer.Rows(table=job.args["table"], items=[{"id": job.id, "attempt": job.attempt}])]


def wait(job: overseer.Job) -> list[overseer.Artifact]:
    time.sleep(float(job.args.get("seconds", 20)))
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=b"waited")]


class FirstAttemptFailed(Exception):
    """``fan_out``'s first attempt, asked to fail (args ``fail_first``); it is retried."""


def fan_out(job: overseer.Job) -> list[overseer.Artifact | overseer.Expand]:
    if job.args.get("fail_first") and job.attempt == 1:
        raise FirstAttemptFailed(f"{job.id} fails its first attempt, as asked")
    items = [{"item": item} for item in job.args["items"]]
    return [
        overseer.Artifact(key=f"{job.graph_id}/{job.name}.json", data=json.dumps(items).encode()),
        overseer.Expand(type="write_item", items=items),
    ]


def write_item(job: overseer.Job) -> list[overseer.Artifact]:
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=str(job.args["item"]).encode())]


def list_inputs(job: overseer.Job) -> list[overseer.Artifact]:
    listing = [
        {"job": name, "artifacts": [artifact.read().decode() for artifact in artifacts]}
        for name, artifacts in job.inputs.items()
    ]
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.json", data=json.dumps(listing).encode())]


HANDLERS = {
    **DAILY_REPORT,
    "write_artifact": write_artifact,
    "read_inputs": read_inputs,
    "write_elsewhere": write_elsewhere,
    "write_rows": write_rows,
    "wait": {"process": wait, "max_attempts": 3},
    "fan_out": {"process": fan_out, "max_attempts": 2, "retry_on": FirstAttemptFailed, "backoff_seconds": 1},
    "write_item": write_item,
    "list_inputs": list_inputs,
}
