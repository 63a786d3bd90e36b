"""A GPU pool's handlers: ``embed`` names its pool in its spec, ``train`` is served by this
module only; their timeouts make the pool's longest job (5400 s)."""

from typing import Any


def _run(job: Any) -> None:
    return None


HANDLERS = {
    "embed": {"process": _run, "pool": "gpu", "timeout_seconds": 5400},
    "train": {"process": _run, "timeout_seconds": 1800},
}
