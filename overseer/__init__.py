"""Overseer for AWS: job graphs on DynamoDB, SQS, Lambda, Batch and S3.

The handler API::

    import overseer

    def fetch(job: overseer.Job):
        data = generate(job.random, job.args["company_id"])
        return [overseer.Artifact(key=f"{job.graph_id}/fetch.csv", data=data)]

    HANDLERS = {"fetch": fetch}
"""

from .errors import AbortJob, FaultJob, InvalidArtifact, InvalidGraph, OverseerError, abort, fault
from .graph import GraphSpec, JobSpec, parse_graph
from .job import Artifact, Expand, Job, Rows, StoredArtifact, harness

__all__ = [
    "AbortJob", "Artifact", "Expand", "FaultJob", "GraphSpec", "InvalidArtifact", "InvalidGraph", "Job",
    "JobSpec", "OverseerError", "Rows", "StoredArtifact", "abort", "fault", "harness", "parse_graph",
]  # fmt: skip
