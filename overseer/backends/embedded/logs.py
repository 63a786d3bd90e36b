"""Job logs of a local stack: one file per attempt, ``<logs dir>/<graph>/<job>.<attempt>.log``
(``overseer.config.job_log_path``), written by the handler process."""

from __future__ import annotations

import itertools
from pathlib import Path

from ...config import job_log_path
from ...store import LogPage


class FileJobLogs:
    """``overseer.store.JobLogs`` over the attempt files under ``log_dir``. A page's ``next``
    is ``<attempt>:<lines read of it>``."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)

    def attempt_files(self, graph_id: str, job: str) -> list[tuple[int, Path]]:
        """The job's log files by attempt, first attempt first."""
        first = job_log_path(self.log_dir, graph_id, job, 1)
        stem = first.name[: -len(".1.log")]
        found = []
        for path in first.parent.glob(f"{stem}.*.log"):
            number = path.name[len(stem) + 1 : -len(".log")]
            if number.isdigit():
                found.append((int(number), path))
        return sorted(found)

    def page(
        self,
        graph_id: str,
        job: str,
        *,
        attempt: int | None = None,
        after: str | None = None,
        limit: int = 1000,
    ) -> LogPage:
        start_attempt, start_line = _position(after)
        lines: list[tuple[int, str]] = []
        for number, path in self.attempt_files(graph_id, job):
            if (attempt is not None and number != attempt) or number < start_attempt:
                continue
            skip = start_line if number == start_attempt else 0
            with path.open(errors="replace") as file:
                for text in itertools.islice(file, skip, skip + limit - len(lines) + 1):
                    if len(lines) == limit:
                        return LogPage(lines, f"{number}:{skip}")
                    lines.append((number, text.rstrip("\n")))
                    skip += 1
        return LogPage(lines)


def _position(after: str | None) -> tuple[int, int]:
    if not after:
        return 0, 0
    attempt, _, line = after.partition(":")
    if not (attempt.isdigit() and line.isdigit()):
        raise ValueError(f"not a position in the logs: {after!r}")
    return int(attempt), int(line)
