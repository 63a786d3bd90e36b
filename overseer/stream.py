"""The jobs table's change records, read as the scheduler needs them.

One place for both sides of the stream: which records reach the scheduler (the filter
patterns, given to Lambda's event source mapping by ``infra/scheduler.py`` and applied by
the local readers, ``passes_stream_filters``), and what a delivered batch says
(``status_changes``). Records have the shape of a DynamoDB stream record with
``NEW_AND_OLD_IMAGES`` as Lambda delivers it, images in DynamoDB JSON; the embedded
backend's change feed writes the same shape, so the scheduler runs on either backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .dynamodb_json import deserialize
from .items import JOB_PREFIX, record_from_item
from .states import (
    RELEASED_BY_EXPANSION,
    RELEASED_BY_LIMIT,
    RELEASED_BY_RERUN,
    RELEASED_BY_SUBMISSION,
    JobStatus,
)
from .store import JobRecord


def _job_records(images: dict[str, Any]) -> dict[str, Any]:
    return {
        "eventName": ["INSERT", "MODIFY"],
        "dynamodb": {"Keys": {"entry": {"S": [{"prefix": JOB_PREFIX}]}}, **images},
    }


# The records the scheduler acts on, as Lambda event source mapping filters (a record
# passing any of them is delivered). Every other change (claims, heartbeats, dependency
# counts, the scheduler's own releases) never invokes it.
STREAM_FILTER_PATTERNS: list[dict[str, Any]] = [
    # A job ended: release or abort its dependents, count it.
    _job_records({"NewImage": {"status": {"S": ["finished", "failed", "aborted"]}}}),
    # Ready again after running (a retry, an expired lease, a worker shutting down).
    _job_records({"NewImage": {"status": {"S": ["ready"]}}, "OldImage": {"status": {"S": ["running"]}}}),
    # Released by the graph's submission (its roots) or by a rerun, written ready as a child
    # of an expansion, or woken by a slot of its concurrency limit given back; not while it
    # waits for that limit (parked, outside the queue).
    _job_records(
        {
            "NewImage": {
                "status": {"S": ["ready"]},
                "released_by": {
                    "S": [RELEASED_BY_SUBMISSION, RELEASED_BY_RERUN, RELEASED_BY_EXPANSION, RELEASED_BY_LIMIT]
                },
                "limit_wait": {"S": [{"exists": False}]},
            }
        }
    ),
]


def _image_attributes(side: str) -> frozenset[str]:
    return frozenset(name for pattern in STREAM_FILTER_PATTERNS for name in pattern["dynamodb"].get(side, {}))


# The attributes of each image the filter patterns look at (all strings).
FILTERED_ATTRIBUTES = {side: _image_attributes(side) for side in ("NewImage", "OldImage")}


def matches(pattern: Any, value: Any) -> bool:
    """EventBridge-style filter matching, enough for the scheduler's filter patterns."""
    if isinstance(pattern, dict):
        if value is None and _only_absence(pattern):
            return True  # {"x": {"S": [{"exists": false}]}} matches an image without x
        return isinstance(value, dict) and all(matches(p, value.get(k)) for k, p in pattern.items())
    if isinstance(pattern, list):
        for option in pattern:
            if isinstance(option, dict) and "exists" in option:
                if (value is not None) == bool(option["exists"]):
                    return True
            elif isinstance(option, dict) and "prefix" in option:
                if isinstance(value, str) and value.startswith(option["prefix"]):
                    return True
            elif value == option:
                return True
        return False
    return bool(pattern == value)


def _only_absence(pattern: Any) -> bool:
    """Whether ``pattern`` is satisfied by a missing value (an ``exists: false`` leaf)."""
    if isinstance(pattern, dict):
        return all(_only_absence(p) for p in pattern.values())
    return isinstance(pattern, list) and any(
        isinstance(option, dict) and option.get("exists") is False for option in pattern
    )


def passes_stream_filters(record: Mapping[str, Any]) -> bool:
    """Whether Lambda would deliver ``record`` to the scheduler (it passes any filter)."""
    return any(matches(pattern, record) for pattern in STREAM_FILTER_PATTERNS)


def write_passes_stream_filters(
    keys: Mapping[str, str], new: Mapping[str, Any], old: Mapping[str, Any] | None
) -> bool:
    """``passes_stream_filters`` of the record a write of ``old`` -> ``new`` (plain item
    values) makes, looking only at what the patterns look at: cheaper than building the
    record (most writes are not for the scheduler)."""

    def view(item: Mapping[str, Any], side: str) -> dict[str, Any]:
        return {
            name: {"S": item[name]} for name in FILTERED_ATTRIBUTES[side] if isinstance(item.get(name), str)
        }

    body: dict[str, Any] = {"Keys": {k: {"S": v} for k, v in keys.items()}, "NewImage": view(new, "NewImage")}
    if old is not None:
        body["OldImage"] = view(old, "OldImage")
    return passes_stream_filters({"eventName": "INSERT" if old is None else "MODIFY", "dynamodb": body})


@dataclass(frozen=True)
class StatusChange:
    previous: JobStatus | None
    job: JobRecord


def _image(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {name: deserialize(value) for name, value in (body.get(key) or {}).items()}


def _expansion_moved(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a write to a finished job moved its expansion on (children made, tree ended):
    the scheduler carries on from such records (``overseer.expansion``)."""
    return any(old.get(key) != new.get(key) for key in ("expand_made", "expand_done_at"))


def _woken(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a write woke a job that waited for its concurrency limit (``overseer.limits``):
    still ready, it is to be enqueued again."""
    return bool(old.get("limit_wait")) and not new.get("limit_wait")


def status_changes(event: Mapping[str, Any]) -> tuple[int, list[StatusChange]]:
    """The job status changes in a Lambda DynamoDB stream event (``{"Records": [...]}``), and
    the moves of finished jobs' expansions, in record order; and the number of records."""
    changes: list[StatusChange] = []
    records = event["Records"]
    for record in records:
        body = record.get("dynamodb")
        if record.get("eventName") == "REMOVE" or body is None:
            continue
        new = _image(body, "NewImage")
        if not new or not str(new.get("entry", "")).startswith(JOB_PREFIX):
            continue
        old = _image(body, "OldImage")
        if old.get("status") == new.get("status") and not _expansion_moved(old, new) and not _woken(old, new):
            continue
        previous = JobStatus(old["status"]) if old.get("status") else None
        changes.append(StatusChange(previous, record_from_item(new)))
    return len(records), changes
