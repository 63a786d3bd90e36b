"""Handlers whose specs hold concurrency limits: ``geocode`` holds ``geo_api``, ``enrich``
holds ``crm_api``; ``summarise`` holds none."""

from typing import Any


def _run(job: Any) -> None:
    return None


HANDLERS = {
    "geocode": {"process": _run, "limit": "geo_api"},
    "enrich": {"process": _run, "limit": "crm_api"},
    "summarise": _run,
}
