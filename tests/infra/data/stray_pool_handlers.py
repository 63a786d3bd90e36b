"""A handler whose spec names a pool the stack does not have."""

from typing import Any


def _run(job: Any) -> None:
    return None


HANDLERS = {"render": {"process": _run, "pool": "nowhere"}}
