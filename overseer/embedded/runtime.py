"""``overseer run`` on the embedded backend: SQLite and local files, no emulator.

The same loop as ``overseer.runtime.run_on_emulator``: submit the graph (idempotent on
its id), start N ``python -m overseer worker`` processes on the same state directory,
and pump the change feed into the scheduler until the graph is terminal.

State lives in ``state_dir`` and survives a crash of the runner: running the same graph
id again resumes it. The feed reader resumes from its saved position (records not yet
handled are handled again, idempotently), queued messages are still queued, and jobs
left ``running`` by workers that died with the old runner are taken back once their
lease expires (by ``overseer.sweep``, which ``pump_until_done`` runs every
``sweep_interval_seconds``; one machine has one clock, so the clock-skew margin is small).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import Settings
from ..graph import GraphSpec
from ..handlers import HandlerSpec
from ..runtime import (
    Progress,
    RunResult,
    _handlers_env,
    download_artifacts,
    pump_until_done,
    worker_processes,
)
from ..scheduler import Scheduler
from . import db_path, embedded_services, feed_reader

log = logging.getLogger("overseer.embedded.runtime")
DEFAULT_STATE_DIR = Path(".overseer")
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
        # The worker command still insists on a queue URL; it names the SQLite file.
        queue_url=base.queue_url or f"sqlite://{db_path(Path(state_dir).resolve())}",
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
    env = _handlers_env(handlers_path)
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
