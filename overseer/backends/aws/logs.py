"""Job logs on AWS: CloudWatch Logs, where the worker container's output goes.

The handler process starts each of a job's lines with ``<graph_id>/<job>#<attempt> ``
(``overseer.isolation``), so ``FilterLogEvents`` with that term finds them in the workers'
log group, whichever worker and stream wrote them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from ...store import LogPage


def log_filter_pattern(graph_id: str, job_name: str, attempt: int | None = None) -> str:
    """A CloudWatch Logs filter pattern matching the job's lines (a quoted term)."""
    term = f"{graph_id}/{job_name}#" + (str(attempt) if attempt else "")
    return '"' + term.replace('"', '\\"') + '"'


def split_prefix(graph_id: str, job_name: str, message: str) -> tuple[int, str] | None:
    """(attempt, the line without its prefix) for a line of that job, else None (the
    filter's term also matches other jobs' lines that contain it)."""
    head = f"{graph_id}/{job_name}#"
    if not message.startswith(head):
        return None
    number, _, line = message[len(head) :].partition(" ")
    return (int(number), line) if number.isdigit() else None


class CloudWatchJobLogs:
    """``overseer.store.JobLogs`` on a log group; a page's ``next`` is CloudWatch's token.
    ``client``: a CloudWatch Logs client, or what makes one when first needed (most
    processes never read logs)."""

    def __init__(self, client: Any | Callable[[], Any], log_group: str) -> None:
        self._client = client
        self.log_group = log_group

    @cached_property
    def client(self) -> Any:
        return self._client() if callable(self._client) else self._client

    def page(
        self,
        graph_id: str,
        job: str,
        *,
        attempt: int | None = None,
        after: str | None = None,
        limit: int = 1000,
    ) -> LogPage:
        kwargs: dict[str, Any] = {
            "logGroupName": self.log_group,
            "filterPattern": log_filter_pattern(graph_id, job, attempt),
        }
        lines: list[tuple[int, str]] = []
        token = after
        # A page of FilterLogEvents may hold fewer events than asked (even none) and a token:
        # it searches the group a stretch of time at a time.
        while len(lines) < limit:
            page = self.client.filter_log_events(
                **kwargs, limit=min(10_000, limit - len(lines)), **({"nextToken": token} if token else {})
            )
            for event in page.get("events", []):
                found = split_prefix(graph_id, job, str(event.get("message", "")).rstrip("\n"))
                if found is not None and (attempt is None or found[0] == attempt):
                    lines.append(found)
            token = page.get("nextToken")
            if not token:
                break
        return LogPage(lines, token)
