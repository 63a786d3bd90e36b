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

from boto3.dynamodb.types import TypeDeserializer

from .items import JOB_PREFIX, record_from_item
from .states import RELEASED_BY_EXPANSION, RELEASED_BY_RERUN, RELEASED_BY_SUBMISSION, JobStatus
from .store import JobRecord

_deserializer = TypeDeserializer()


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
    # Released by the graph's submission (its roots) or by a rerun, or written ready as a
    # child of an expansion.
    _job_records(
        {
            "NewImage": {
                "status": {"S": ["ready"]},
                "released_by": {"S": [RELEASED_BY_SUBMISSION, RELEASED_BY_RERUN, RELEASED_BY_EXPANSION]},
            }
        }
    ),
]


def matches(pattern: Any, value: Any) -> bool:
    """EventBridge-style filter matching, enough for the scheduler's filter pattern."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(matches(p, value.get(k)) for k, p in pattern.items())
    if isinstance(pattern, list):
        for option in pattern:
            if isinstance(option, dict) and "prefix" in option:
                if isinstance(value, str) and value.startswith(option["prefix"]):
                    return True
            elif value == option:
                return True
        return False
    return bool(pattern == value)


def passes_stream_filters(record: Mapping[str, Any]) -> bool:
    """Whether Lambda would deliver ``record`` to the scheduler (it passes any filter)."""
    return any(matches(pattern, record) for pattern in STREAM_FILTER_PATTERNS)


@dataclass(frozen=True)
class StatusChange:
    previous: JobStatus | None
    job: JobRecord


def _image(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in (body.get(key) or {}).items()}


def _expansion_moved(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a write to a finished job moved its expansion on (children made, tree ended):
    the scheduler carries on from such records (``overseer.expansion``)."""
    return any(old.get(key) != new.get(key) for key in ("expand_made", "expand_done_at"))


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
        if old.get("status") == new.get("status") and not _expansion_moved(old, new):
            continue
        previous = JobStatus(old["status"]) if old.get("status") else None
        changes.append(StatusChange(previous, record_from_item(new)))
    return len(records), changes
