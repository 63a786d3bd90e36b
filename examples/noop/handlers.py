"""Handlers that do (almost) nothing: for measuring the engine's own cost per job.

``noop`` returns no artifact, ``tiny`` stores one 16-byte artifact, so a benchmark can
show the cost of the artifact path (S3 put + manifest) separately from bare scheduling.
"""

import overseer


def tiny(job: overseer.Job) -> list[overseer.Artifact]:
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.bin", data=job.random.randbytes(16))]


HANDLERS = {
    "noop": lambda job: None,
    "tiny": tiny,
}
