"""``overseer run``: the whole system on one machine, on either backend.

On the AWS backend (``run_on_emulator``) it starts the local AWS emulator, creates the
same tables, queues and bucket the stack declares, submits the graph, runs N ``overseer
worker`` processes, and pumps the jobs table's stream into the scheduler as Lambda-shaped
events until the graph is done.

On the embedded backend (``run_embedded``): SQLite and local files, no emulator; the same
loop, with the change feed in place of the stream. State lives in ``state_dir`` and
survives a crash of the runner: running the same graph id again resumes it. The feed
reader resumes from its saved position (records not yet handled are handled again,
idempotently), queued messages are still queued, and jobs left ``running`` by workers that
died with the old runner are taken back once their lease expires (by ``overseer.sweep``,
which ``pump_until_done`` runs every ``sweep_interval_seconds``; one machine has one clock,
so the clock-skew margin is small).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import build_services
from .backends.embedded import embedded_services, feed_reader
from .config import DEFAULT_STATE_DIR, Settings
from .errors import EXIT_FAILED
from .graph import GraphSpec
from .handlers import HandlerSpec
from .scheduler import Scheduler
from .states import GraphStatus, terminal_counts
from .store import GraphRecord, Services

log = logging.getLogger("overseer.runner")
# How often a run's progress is shown (counted from the jobs: a read of the whole graph).
PROGRESS_SECONDS = 0.5


@dataclass
class RunResult:
    graph_id: str
    status: str
    jobs: dict[str, dict[str, Any]]
    seconds: float
    created: bool = True
    requests: Counter[str] = field(default_factory=Counter)

    @property
    def exit_code(self) -> int:
        return 0 if self.status == GraphStatus.FINISHED else EXIT_FAILED

    def to_json(self) -> dict[str, Any]:
        total = sum(self.requests.values())
        return {
            "graph_id": self.graph_id,
            "status": self.status,
            "jobs": self.jobs,
            "stats": {
                "seconds": round(self.seconds, 3),
                "aws_requests": total,
                "aws_requests_per_job": round(total / max(1, len(self.jobs)), 2),
            },
        }


Progress = Callable[[GraphRecord], None]


def handlers_env(handlers_path: str) -> dict[str, str]:
    """Make the handlers importable the same way in the worker processes."""
    path = handlers_path
    if path.endswith(".py"):
        path = str(Path(path).resolve())
    pythonpath = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
    return {"OVERSEER_HANDLERS": path, "PYTHONPATH": pythonpath}


@contextlib.contextmanager
def worker_processes(
    count: int, env: dict[str, str], log_dir: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes = []
    try:
        for n in range(count):
            log_file = (log_dir / f"worker-{n + 1}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "overseer", "worker"],
                    env={**os.environ, **env},
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            )
            log_file.close()
        yield processes
    finally:
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + 10
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


def _current(store: Any, graph_id: str, known: GraphRecord) -> GraphRecord:
    """The graph's record, or the last one known when the store cannot be read right now."""
    try:
        return store.get_graph(graph_id) or known
    except Exception:
        log.warning("cannot read graph %s; retrying", graph_id, exc_info=True)
        return known


def _with_live_counts(store: Any, graph: GraphRecord) -> GraphRecord:
    """The graph with its counts taken from the jobs while it runs (the graph's counters
    count a chain's jobs when it ends; see ``overseer.scheduler``)."""
    if graph.status.terminal:
        return graph
    counts = terminal_counts(job.status for job in store.list_jobs(graph.graph_id))
    return dataclasses.replace(graph, counts=counts)


def pump_until_done(
    services: Services,
    scheduler: Scheduler,
    reader: Any,
    graph_id: str,
    *,
    progress: Progress | None = None,
    poll_seconds: float = 0.05,
    alive: Callable[[], bool] = lambda: True,
) -> GraphRecord:
    """Feed stream records to the scheduler until the graph reaches a terminal status."""
    from .sweep import sweep

    store = services.store
    graph = store.get_graph(graph_id)
    assert graph is not None
    last_sweep = time.monotonic()
    shown = 0.0
    while not graph.status.terminal:
        if time.monotonic() - last_sweep > services.settings.sweep_interval_seconds:
            last_sweep = time.monotonic()
            try:
                sweep(services)
            except Exception:
                log.warning("sweep failed", exc_info=True)
        records = reader.poll()
        if records:
            for attempt in range(1, 6):
                try:
                    scheduler.process_stream_event({"Records": records})
                    break
                except Exception:
                    # As Lambda does: the same batch again, after a pause.
                    log.warning("scheduler failed on a batch (attempt %d)", attempt, exc_info=True)
                    if attempt == 5:
                        raise
                    time.sleep(0.2 * attempt)
            graph = _current(store, graph_id, graph)
            if progress and (graph.status.terminal or time.monotonic() - shown > PROGRESS_SECONDS):
                shown = time.monotonic()
                progress(_with_live_counts(store, graph))
        else:
            if not alive():
                raise RuntimeError("every worker process exited before the graph finished")
            time.sleep(poll_seconds)
            graph = _current(store, graph_id, graph)
    return graph


def download_artifacts(services: Services, jobs: dict[str, dict[str, Any]], out: Path) -> int:
    count = 0
    for job in jobs.values():
        for artifact in job.get("artifacts", []):
            target = out / artifact["bucket"] / artifact["key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            services.artifacts.download(artifact["bucket"], artifact["key"], target)
            count += 1
    return count


def run_on_emulator(
    spec: GraphSpec,
    handlers_path: str,
    handlers: dict[str, HandlerSpec],
    *,
    workers: int = 4,
    out: Path | None = None,
    progress: Progress | None = None,
    settings: Settings | None = None,
    start_emulator: bool = True,
) -> RunResult:
    """Run ``spec`` to the end on the AWS adapters: on a fresh local AWS emulator, or
    (``start_emulator=False``) on the endpoint the standard AWS configuration names,
    creating the resources named by the ``OVERSEER_*`` settings where they are missing."""
    from .backends.aws import clients
    from .backends.aws.emulator import emulator, environment
    from .backends.aws.resources import provision, stream_arn
    from .backends.aws.stream import StreamReader

    started = time.monotonic()
    endpoint: contextlib.AbstractContextManager[dict[str, str]] = (
        emulator() if start_emulator else contextlib.nullcontext({})
    )
    with tempfile.TemporaryDirectory(prefix="overseer-run-") as workdir, endpoint as aws_env:
        request_dir = Path(workdir) / "requests"
        request_dir.mkdir()
        env = {**aws_env, "OVERSEER_REQUEST_LOG": str(request_dir), **handlers_env(handlers_path)}
        with environment(env):
            base = settings or Settings.from_env(receive_wait_seconds=2, lease_seconds=60)
            configured = provision(base.with_(handlers=env["OVERSEER_HANDLERS"]))
            services = build_services(configured)
            scheduler = Scheduler(services.store, services.queue)
            reader = StreamReader(clients.client("dynamodbstreams"), stream_arn(configured))
            defaults = {t: h.max_attempts for t, h in handlers.items() if h.max_attempts}
            graph, created = services.store.create_graph(spec, max_attempts=defaults)
            if progress:
                progress(graph)
            worker_env = {**env, **configured.to_env()}
            with worker_processes(workers, worker_env, Path(workdir)) as processes:
                graph = pump_until_done(
                    services,
                    scheduler,
                    reader,
                    spec.id,
                    progress=progress,
                    alive=lambda: any(p.poll() is None for p in processes),
                )
            jobs = {job.name: job.summary() for job in services.store.list_jobs(spec.id)}
            if out is not None:
                download_artifacts(services, jobs, out)
            requests = clients.read_request_logs(request_dir)
            counter = clients.process_counter()
            if counter is not None:
                requests.update(counter.counts)
                counter.counts.clear()
    return RunResult(spec.id, graph.status.value, jobs, time.monotonic() - started, created, requests)


# Short leases locally: a job of a killed runner is taken back within this many seconds.
LOCAL_LEASE_SECONDS = 15
SWEEP_INTERVAL_SECONDS = 1
CLOCK_SKEW_SECONDS = 1
# Workers orphaned by a killed runner exit after this long without work.
WORKER_IDLE_EXIT_SECONDS = 30


def embedded_settings(state_dir: Path, base: Settings | None = None, handlers: str = "") -> Settings:
    if base is None:
        local_defaults: dict[str, Any] = {"receive_wait_seconds": 1, "lease_seconds": LOCAL_LEASE_SECONDS}
        # Local defaults, unless the environment says otherwise.
        base = Settings.from_env(
            **{k: v for k, v in local_defaults.items() if f"OVERSEER_{k.upper()}" not in os.environ}
        )
    return base.with_(
        backend="embedded",
        state_dir=str(Path(state_dir).resolve()),
        handlers=handlers or base.handlers,
        idle_exit_seconds=base.idle_exit_seconds or WORKER_IDLE_EXIT_SECONDS,
        sweep_interval_seconds=SWEEP_INTERVAL_SECONDS,
        clock_skew_seconds=CLOCK_SKEW_SECONDS,
    )


def run_embedded(
    spec: GraphSpec,
    handlers_path: str,
    handlers: dict[str, HandlerSpec],
    *,
    workers: int = 4,
    out: Path | None = None,
    progress: Progress | None = None,
    state_dir: Path | None = None,
    settings: Settings | None = None,
) -> RunResult:
    """Run ``spec`` to the end on the embedded backend in ``state_dir`` (default
    ``./.overseer``); an existing graph id resumes instead of starting over."""
    started = time.monotonic()
    state_dir = Path(state_dir or DEFAULT_STATE_DIR)
    env = handlers_env(handlers_path)
    configured = embedded_settings(state_dir, settings, env["OVERSEER_HANDLERS"])
    services = embedded_services(state_dir, configured)
    scheduler = Scheduler(services.store, services.queue)
    reader = feed_reader(state_dir)
    defaults = {t: h.max_attempts for t, h in handlers.items() if h.max_attempts}
    graph, created = services.store.create_graph(spec, max_attempts=defaults)
    if progress:
        progress(graph)
    if not graph.status.terminal:
        with tempfile.TemporaryDirectory(prefix="overseer-run-") as logs:
            worker_env = {**env, **configured.to_env()}
            with worker_processes(workers, worker_env, Path(logs)) as processes:
                graph = pump_until_done(
                    services,
                    scheduler,
                    reader,
                    spec.id,
                    progress=progress,
                    poll_seconds=0.005,
                    alive=lambda: any(p.poll() is None for p in processes),
                )
    reader.commit()
    reader.trim()  # records every reader has passed are not needed again
    jobs = {job.name: job.summary() for job in services.store.list_jobs(spec.id)}
    if out is not None:
        download_artifacts(services, jobs, out)
    return RunResult(spec.id, graph.status.value, jobs, time.monotonic() - started, created)
