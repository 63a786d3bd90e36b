"""The chaos suite: real ``overseer worker`` processes on the session's emulator, a fresh
stack per test with short leases, and a pump loop in the test process (scheduler fed
from the jobs stream, sweep every second), as ``overseer run`` does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from overseer.config import Settings
from overseer.graph import parse_graph
from overseer.handlers import load_handlers
from overseer.runner import pump_until_done
from overseer.scheduler import Scheduler
from overseer.store import GraphRecord, JobRecord, Services
from tests.chaos import toolkit
from tests.support import LocalStack

CHAOS_SETTINGS = {
    "receive_wait_seconds": 1,
    "lease_seconds": 3,
    "clock_skew_seconds": 1,
    "sweep_interval_seconds": 1,
    "fault_backoff_seconds": 0.1,
    "fault_backoff_max_seconds": 1.0,
    "shutdown_grace_seconds": 2,
    "isolation": "process",
    "handlers": toolkit.HANDLERS_MODULE,
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: kills, duplicates, replays and faults against real worker processes"
    )


class GraphStuck(AssertionError):
    pass


@dataclass
class ChaosStack:
    stack: LocalStack
    worker_env: dict[str, str]
    tmp: Path
    runs_path: Path

    @property
    def services(self) -> Services:
        return self.stack.services

    @property
    def settings(self) -> Settings:
        return self.stack.settings

    def submit(self, document: Mapping[str, Any]) -> GraphRecord:
        handlers = load_handlers(toolkit.HANDLERS_MODULE)
        spec = parse_graph(document, handler_types=handlers.keys())
        defaults = {t: h.max_attempts for t, h in handlers.items() if h.max_attempts}
        graph, created = self.services.store.create_graph(spec, max_attempts=defaults)
        assert created
        return graph

    def pool(self, count: int, **env: str) -> toolkit.WorkerPool:
        log_dir = self.tmp / f"workers-{uuid.uuid4().hex[:6]}"
        log_dir.mkdir()
        return toolkit.WorkerPool(count, {**self.worker_env, **env}, log_dir)

    def drive(
        self,
        graph_id: str,
        *,
        timeout: float,
        scheduler: Scheduler | None = None,
        services: Services | None = None,
        reader: Any = None,
    ) -> GraphRecord:
        """Pump the stream into the scheduler (and sweep) until the graph is terminal."""
        import time

        services = services or self.services
        deadline = time.monotonic() + timeout

        def in_time(*_: Any) -> bool:
            if time.monotonic() > deadline:
                jobs = self.jobs(graph_id)
                stuck = {n: (str(j.status), j.attempts) for n, j in jobs.items() if not j.status.terminal}
                raise GraphStuck(f"graph {graph_id} not done after {timeout} s; not terminal: {stuck}")
            return True

        return pump_until_done(
            services,
            scheduler or Scheduler.for_services(services),
            reader or self.stack.reader,
            graph_id,
            progress=in_time,
            alive=in_time,
        )

    def store_graph(self, graph_id: str) -> GraphRecord:
        graph = self.services.store.get_graph(graph_id)
        assert graph is not None
        return graph

    def jobs(self, graph_id: str) -> dict[str, JobRecord]:
        return {job.name: job for job in self.services.store.list_jobs(graph_id)}

    def stream(self) -> list[dict[str, Any]]:
        return toolkit.stream_records(self.stack.reader.client, self.stack.reader.stream_arn)

    def runs(self) -> list[tuple[str, str, int, int]]:
        return toolkit.read_runs(self.runs_path)


@pytest.fixture
def chaos_stack(aws_env: dict[str, str], tmp_path: Path) -> Iterator[ChaosStack]:
    name = f"c{uuid.uuid4().hex[:10]}"
    settings = Settings(
        graphs_table=f"{name}-graphs",
        jobs_table=f"{name}-jobs",
        artifact_bucket=f"{name}-artifacts",
        scratch_dir=str(tmp_path / "scratch"),
        **CHAOS_SETTINGS,
    )
    stack = LocalStack.provisioned(settings)
    runs = tmp_path / "runs.log"
    # The settings' empty client hook keeps the workers free of faults unless a test asks.
    env = {**aws_env, **stack.settings.to_env(), toolkit.ENV_RUNS: str(runs)}
    yield ChaosStack(stack, env, tmp_path, runs)
