"""``overseer run`` and ``overseer local up``: the whole system on one machine.

What the stack runs as managed services runs here in one process and its children:

* ``Pump``: one loop that feeds the change feed (the jobs table's stream on the AWS
  backend, the embedded backend's feed) to the scheduler, as the stream-triggered Lambda
  does, and runs the sweep every ``sweep_interval_seconds``, as the scheduled Lambda does;
* ``WorkerPool``: N ``overseer worker`` processes, each with its log file; ``overseer local
  up`` has them restarted when they die.

``run_graph`` runs one graph to its end on the AWS adapters (a fresh local emulator, or
the endpoint the AWS configuration names) or on SQLite and local files. On the embedded
backend, state lives in ``state_dir`` and survives a crash of the runner: running the
same graph id again resumes it. The feed reader resumes from its saved position (records
not yet handled are handled again, idempotently), queued messages are still queued, and
jobs left ``running`` by workers that died with the old runner are taken back once their
lease expires (by the sweep; one machine has one clock, so the clock-skew margin is
small).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .backends import build_services
from .backends.embedded import embedded_services, feed_reader
from .backends.embedded.bells import SUPPORTED as BELLS
from .config import DEFAULT_STATE_DIR, Settings
from .errors import EXIT_FAILED, EXIT_INVALID, HandlersModuleError, InvalidGraph
from .graph import GraphSpec
from .handlers import HandlerSpec, load_handlers
from .items import natural_order
from .limits import parse_limits, unconfigured_limits
from .operations import rerun_graph
from .pools import DEFAULT_POOL, Pools, plan_local_run
from .scheduler import Scheduler
from .states import GraphStatus, terminal_counts
from .store import GraphRecord, Services
from .sweep import sweep

log = logging.getLogger("overseer.runner")
# How often a run's progress is shown (counted from the jobs: a read of the whole graph).
PROGRESS_SECONDS = 0.5
# A batch the scheduler fails on is tried this often (as Lambda retries a stream batch).
BATCH_ATTEMPTS = 5
# A worker that dies sooner than this after its start counts as crash-looping: back off.
QUICK_DEATH_SECONDS = 5.0
MAX_RESTART_DELAY_SECONDS = 30.0
# Settings of a local run where the environment says nothing: short leases (a job of a
# killed runner is taken back within seconds, and so is the lease of a sweep it was
# running), a frequent sweep and one clock. Its workers never exit for want of work (a job
# may back off for minutes while they wait), but exit when the run is gone (``parent_pid``).
LOCAL_DEFAULTS: Mapping[str, Any] = {
    "receive_wait_seconds": 1,
    "lease_seconds": 15,
    "sweep_interval_seconds": 1,
    "sweep_lease_seconds": 10,
    "clock_skew_seconds": 1,
}


@dataclass
class RunResult:
    graph_id: str
    status: str
    jobs: dict[str, dict[str, Any]]
    seconds: float
    created: bool = True
    requests: Counter[str] = field(default_factory=Counter)
    # Failed and aborted jobs of a stored graph that ended badly taken back by --rerun-failed.
    rerun: int = 0
    # Why the graph ended as it did, when not by its jobs ("deadline of 3 s passed").
    reason: str | None = None
    # When the graph was submitted and when it ended (ISO 8601 UTC).
    created_at: str | None = None
    finished_at: str | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.status == GraphStatus.FINISHED else EXIT_FAILED

    def to_json(self) -> dict[str, Any]:
        total = sum(self.requests.values())
        return {
            "graph_id": self.graph_id,
            "status": self.status,
            "jobs": self.jobs,
            # Failed and aborted jobs of the stored graph that --rerun-failed ran again.
            "rerun": self.rerun,
            **({"reason": self.reason} if self.reason else {}),
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "stats": {
                "seconds": round(self.seconds, 3),
                "aws_requests": total,
                "aws_requests_per_job": round(total / max(1, len(self.jobs)), 2),
            },
        }


Progress = Callable[[GraphRecord], None]


def local_settings(state_dir: str | Path, base: Settings | None = None, **overrides: Any) -> Settings:
    """Settings of the embedded backend in ``state_dir``: ``base`` (default: the
    environment's, with ``LOCAL_DEFAULTS`` where it says nothing) and ``overrides``."""
    base = base or Settings.from_env(defaults=LOCAL_DEFAULTS)
    changes = {k: v for k, v in overrides.items() if v is not None}
    return base.with_(backend="embedded", state_dir=str(Path(state_dir).resolve()), **changes)


def handlers_env(handlers_path: str) -> dict[str, str]:
    """Make the handlers importable the same way in the worker processes."""
    path = handlers_path
    if path.endswith(".py"):
        path = str(Path(path).resolve())
    pythonpath = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
    return {"OVERSEER_HANDLERS": path, "PYTHONPATH": pythonpath}


def limits_json(limits: Mapping[str, int]) -> str:
    """``Settings.limits`` for these limits ("" for none)."""
    return json.dumps(dict(limits)) if limits else ""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the worker gets SIGTERM when its parent dies, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class ForkedWorker:
    """A worker forked from this process (``WorkerPool(fork=True)``), with the part of
    ``subprocess.Popen``'s interface the pool uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
            time.sleep(0.002)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _can_fork() -> bool:
    """Whether a worker may be forked from this process: POSIX, and no other thread (a lock
    another thread holds would stay held in the child); no SQLite connection must be open
    either, which the caller ensures (``_on_embedded`` forks before it opens the store)."""
    return hasattr(os, "fork") and threading.active_count() == 1


def run_worker(handlers_path: str | None = None, idle_exit: int | None = None) -> int:
    """The worker loop with the environment's settings, until stopped (SIGTERM, SIGINT) or
    idle: ``overseer worker``, and the body of a worker forked by a local run. Returns the
    process's exit code."""
    from .worker import Worker

    logging.getLogger().setLevel(logging.INFO)
    settings = Settings.from_env(handlers=handlers_path, idle_exit_seconds=idle_exit)
    try:
        handlers = load_handlers(settings.handlers)
    except HandlersModuleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if not settings.queue_url and settings.backend != "embedded":
        print("error: OVERSEER_QUEUE_URL is not set", file=sys.stderr)
        return EXIT_INVALID
    loop = Worker(build_services(settings), handlers, services_factory=partial(build_services, settings))
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    signal.signal(signal.SIGINT, lambda *_: loop.stop())
    try:
        loop.run()
    finally:
        loop.close()
    return 0


def _forked_worker_main(env: Mapping[str, str], log_path: Path, die_with_parent: bool) -> None:
    """The child's side of a forked worker: its own output, environment and signals, then
    the worker loop; it never returns (``os._exit``, so nothing of the parent's is torn down)."""
    code = 1
    try:
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.close(null)
        # Fresh text streams: the parent's may have been locked by a thread at the fork.
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        if die_with_parent:
            _die_with_parent()
        os.environ.clear()
        os.environ.update(env)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for handler in logging.root.handlers[:]:
            logging.root.removeHandler(handler)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        code = run_worker()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


@dataclass
class _Slot:
    number: int
    pool: str = DEFAULT_POOL
    process: subprocess.Popen[bytes] | ForkedWorker | None = None
    started: float = 0.0
    next_start: float = 0.0
    quick_deaths: int = 0


class WorkerPool:
    """``count`` ``overseer worker`` processes, each logging to ``log_dir/worker-<n>.log``;
    or, with ``count`` a mapping of worker pool -> count (``overseer.pools``), that many of
    each pool (``OVERSEER_POOL``), logging to ``worker-<n>.log`` (default pool) or
    ``worker-<pool>-<n>.log``.

    With ``restart``, ``supervise()`` starts a dead worker again (backing off while one
    keeps dying within ``QUICK_DEATH_SECONDS`` of its start); without it a dead worker
    stays dead and ``alive()`` says whether any still runs. With ``die_with_parent``
    (Linux), the workers get SIGTERM when this process dies, even by SIGKILL. With
    ``fork``, the workers are forked from this process, which has imported the engine and
    the handlers already: ready in milliseconds instead of a new interpreter's start-up
    (only while this process has no other thread and no store open; otherwise, and for
    restarts, they are started as ``overseer worker`` processes).
    """

    def __init__(
        self,
        count: int | Mapping[str, int],
        env: Mapping[str, str],
        log_dir: Path,
        *,
        restart: bool = False,
        die_with_parent: bool = False,
        on_event: Callable[[str], None] = lambda _message: None,
        fork: bool = False,
    ) -> None:
        self.env = {**os.environ, **env}
        self.fork = fork
        self.log_dir = log_dir
        self.restart = restart
        self.die_with_parent = die_with_parent and sys.platform.startswith("linux")
        self.on_event = on_event
        self.restarts = 0
        counts = {DEFAULT_POOL: count} if isinstance(count, int) else count
        self._slots = [_Slot(n + 1, pool) for pool, number in counts.items() for n in range(number)]

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        for slot in self._slots:
            self._start(slot)

    def _start(self, slot: _Slot) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = f"worker-{slot.number}" if slot.pool == DEFAULT_POOL else f"worker-{slot.pool}-{slot.number}"
        env = {**self.env, "OVERSEER_POOL": slot.pool}
        if self.fork and _can_fork():
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                _forked_worker_main(env, self.log_dir / f"{name}.log", self.die_with_parent)
            slot.process = ForkedWorker(pid)
            slot.started = time.monotonic()
            return
        with (self.log_dir / f"{name}.log").open("ab") as log_file:
            slot.process = subprocess.Popen(
                [sys.executable, "-m", "overseer", "worker"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        slot.started = time.monotonic()

    @property
    def pids(self) -> list[int]:
        return [s.process.pid for s in self._slots if s.process is not None]

    def alive(self) -> bool:
        return any(s.process is not None and s.process.poll() is None for s in self._slots)

    def supervise(self) -> bool:
        """Start the workers that died again (with ``restart``); True when one was started."""
        if not self.restart:
            return False
        now = time.monotonic()
        started = False
        for slot in self._slots:
            process = slot.process
            if process is not None and process.poll() is None:
                continue
            if process is not None:
                lived = now - slot.started
                slot.quick_deaths = slot.quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 0
                delay = min(MAX_RESTART_DELAY_SECONDS, 0.5 * 2**slot.quick_deaths) if slot.quick_deaths else 0
                slot.next_start = now + delay
                slot.process = None
                self.restarts += 1
                pool = "" if slot.pool == DEFAULT_POOL else f" of pool {slot.pool}"
                which = f"worker {slot.number}{pool}"
                self.on_event(
                    f"{which} exited with code {process.returncode}; "
                    f"restarting{f' in {delay:g}s' if delay else ''}"
                )
            if now >= slot.next_start:
                self._start(slot)
                started = True
        return started

    def terminate(self) -> None:
        """SIGTERM every worker (each releases its job and exits), without waiting."""
        for slot in self._slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.terminate()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every worker (each releases its job), then SIGKILL those still running."""
        running = [s.process for s in self._slots if s.process is not None and s.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Pump:
    """The change feed into the scheduler, and the sweep on its period.

    ``feed()`` hands the records of one poll to the scheduler; a batch it fails on is
    tried again after a pause, as Lambda does, ``BATCH_ATTEMPTS`` times in all; then it
    raises, or with ``skip_failed_batches`` hands it to the reader's ``give_up`` (which
    notes it for the sweep to replay, as Lambda's on-failure destination) and goes on.
    ``tick()`` runs the sweep when due (and ``on_sweep``, e.g. supervising workers) and
    trims the feed every ``trim_seconds`` when the reader can.
    """

    def __init__(
        self,
        services: Services,
        reader: Any,
        *,
        scheduler: Scheduler | None = None,
        skip_failed_batches: bool = False,
        trim_seconds: float | None = None,
        on_sweep: Callable[[], object] = lambda: None,
        wait: Callable[[float], object] = time.sleep,
    ) -> None:
        self.services = services
        self.reader = reader
        self.scheduler = scheduler or Scheduler.for_services(services)
        self.skip_failed_batches = skip_failed_batches
        self.trim_seconds = trim_seconds
        self.on_sweep = on_sweep
        self.wait = wait
        self._last_sweep = self._last_trim = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= self.services.settings.sweep_interval_seconds:
            self._last_sweep = now
            try:
                sweep(self.services)
            except Exception:
                log.warning("sweep failed", exc_info=True)
            self.on_sweep()
        if self.trim_seconds is not None and now - self._last_trim >= self.trim_seconds:
            self._last_trim = now
            self.trim()

    def trim(self) -> None:
        """Save the reader's position and drop the records every reader has passed."""
        with contextlib.suppress(Exception):
            self.reader.commit()
            self.reader.trim()

    def feed(self) -> int:
        """Hand one poll's records to the scheduler; returns how many there were."""
        records = self.reader.poll()
        if not records:
            return 0
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            try:
                self.scheduler.process_stream_event({"Records": records})
                break
            except Exception as exc:
                log.warning("scheduler failed on a batch (attempt %d)", attempt, exc_info=True)
                if attempt == BATCH_ATTEMPTS:
                    if not self.skip_failed_batches:
                        raise
                    # As Lambda's on-failure destination: the reader notes the batch's range,
                    # which the sweep replays (``overseer.sweep``).
                    self.reader.give_up(records, exc)
                    log.error("gave up a batch of %d records after %d attempts", len(records), attempt)
                elif self.wait(0.2 * attempt):
                    break  # told to stop while pausing
        return len(records)


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
    """Pump until the graph reaches a terminal status; raise when ``alive()`` says no
    worker is left to run its jobs."""
    pump = Pump(services, reader, scheduler=scheduler)
    store = services.store
    graph = store.get_graph(graph_id)
    assert graph is not None
    shown = 0.0
    while not graph.status.terminal:
        pump.tick()
        if pump.feed():
            graph = _current(store, graph_id, graph)
            if progress and (graph.status.terminal or time.monotonic() - shown > PROGRESS_SECONDS):
                shown = time.monotonic()
                progress(_with_live_counts(store, graph))
        else:
            if not alive():
                raise RuntimeError("every worker process exited before the graph finished")
            # The embedded feed's bell ends the wait as soon as a record is committed.
            wait = getattr(reader, "wait", None)
            if wait is not None:
                wait(poll_seconds)
            else:
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


@dataclass
class _Place:
    """Where a run happens: the backend's services and change feed, and the workers' setup."""

    services: Services
    reader: Any
    worker_env: dict[str, str]
    log_dir: Path
    poll_seconds: float = 0.05
    # The AWS requests every process of the run made, by operation (AWS backend only).
    requests: Callable[[], Counter[str]] = Counter
    # The run's workers, when the place started them itself (``_on_embedded`` forks them).
    pool: WorkerPool | None = None


@contextlib.contextmanager
def _on_aws(
    settings: Settings | None, env: dict[str, str], start_emulator: bool, pools: Pools, limits: str
) -> Iterator[_Place]:
    """A fresh local AWS emulator, or (``start_emulator=False``) the endpoint the standard
    AWS configuration names, with the resources the ``OVERSEER_*`` settings name created
    where they are missing."""
    from .backends.aws import clients
    from .backends.aws.emulator import emulator, environment
    from .backends.aws.resources import provision, stream_arn
    from .backends.aws.stream import StreamReader

    endpoint: contextlib.AbstractContextManager[dict[str, str]] = (
        emulator() if start_emulator else contextlib.nullcontext({})
    )
    with tempfile.TemporaryDirectory(prefix="overseer-run-") as workdir, endpoint as aws_env:
        request_dir = Path(workdir) / "requests"
        request_dir.mkdir()
        env = {**aws_env, "OVERSEER_REQUEST_LOG": str(request_dir), **env}
        with environment(env):
            base = settings or Settings.from_env(defaults={"receive_wait_seconds": 2, "lease_seconds": 60})
            configured = provision(
                base.with_(handlers=env["OVERSEER_HANDLERS"], pools=pools.to_json(), limits=limits)
            )

            def requests() -> Counter[str]:
                counted = clients.read_request_logs(request_dir)
                counter = clients.process_counter()
                if counter is not None:
                    counted.update(counter.counts)
                    counter.counts.clear()
                return counted

            yield _Place(
                build_services(configured),
                StreamReader(clients.client("dynamodbstreams"), stream_arn(configured)),
                {**env, **configured.with_(parent_pid=os.getpid()).to_env()},
                Path(workdir),
                requests=requests,
            )


@contextlib.contextmanager
def _on_embedded(
    state_dir: Path,
    settings: Settings | None,
    env: dict[str, str],
    pools: Pools,
    limits: str,
    workers: Mapping[str, int] | None = None,
) -> Iterator[_Place]:
    """SQLite and files in ``state_dir``, kept between runs. With ``workers`` (per pool), the
    run's workers are forked first, before this process opens the store (``WorkerPool``),
    so that they start up while the graph is stored."""
    configured = local_settings(
        state_dir, settings, handlers=env["OVERSEER_HANDLERS"], pools=pools.to_json(), limits=limits
    )
    worker_env = {**env, **configured.with_(parent_pid=os.getpid()).to_env()}
    with tempfile.TemporaryDirectory(prefix="overseer-run-") as logs, contextlib.ExitStack() as stack:
        pool = None
        if workers is not None:
            pool = stack.enter_context(WorkerPool(workers, worker_env, Path(logs), fork=True))
        reader = feed_reader(state_dir)
        services = embedded_services(state_dir, configured)
        # With bells, the feed's wait ends when a record is committed: the poll is a fallback.
        poll = 0.1 if BELLS else 0.005
        try:
            yield _Place(services, reader, worker_env, Path(logs), poll_seconds=poll, pool=pool)
        finally:
            if pool is not None:
                pool.stop()
            reader.commit()
            reader.trim()  # records every reader has passed are not needed again
            reader.close()


def _with_handler_limit(job: dict[str, Any], handlers: Mapping[str, HandlerSpec]) -> dict[str, Any]:
    """A job's summary naming the concurrency limit it held: its graph's (stored on the job),
    else its handler spec's (known here, where the handlers are)."""
    handler = handlers.get(job["type"])
    if "limit" not in job and handler is not None and handler.limit:
        job["limit"] = handler.limit
    return job


def run_graph(
    spec: GraphSpec,
    handlers_path: str,
    handlers: dict[str, HandlerSpec],
    *,
    backend: str = "aws",
    workers: int | Mapping[str, int] = 4,
    out: Path | None = None,
    progress: Progress | None = None,
    settings: Settings | None = None,
    state_dir: Path | None = None,
    start_emulator: bool = True,
    rerun_failed: bool = False,
    limits: Mapping[str, int] | None = None,
) -> RunResult:
    """Run ``spec`` to its end on ``workers`` worker processes (or that many per worker pool:
    ``{"default": 4, "gpu": 1}``, see ``overseer.pools``) and download its artifacts under
    ``out``. Raises ``InvalidGraph`` when a job's pool has no workers, or a job holds a
    concurrency limit (its graph's or its handler spec's) that ``limits`` does not give
    (``overseer.limits``; None: the limits of ``settings``, else of the environment).

    ``backend="aws"``: the AWS adapters, on a fresh local emulator (or, with
    ``start_emulator=False``, the endpoint the AWS configuration names). ``"embedded"``:
    SQLite and files in ``state_dir`` (default ``./.overseer``), where a graph id already
    stored resumes instead of starting over. A stored graph that ended failed or aborted
    is shown as it ended, or with ``rerun_failed`` its failed and aborted jobs run again
    (``operations.rerun_graph``; finished jobs are kept).
    """
    started = time.monotonic()
    counts = {DEFAULT_POOL: workers} if isinstance(workers, int) else dict(workers)
    pools, spec = plan_local_run(spec, counts, {t: h.pool for t, h in handlers.items()})
    if limits is None:
        limits = parse_limits((settings or Settings.from_env()).limits)
    problem = unconfigured_limits(limits, handlers, spec)
    if problem:
        raise InvalidGraph(f"invalid graph: {problem}")
    env = handlers_env(handlers_path)
    place = (
        _on_embedded(Path(state_dir or DEFAULT_STATE_DIR), settings, env, pools, limits_json(limits), counts)
        if backend == "embedded"
        else _on_aws(settings, env, start_emulator, pools, limits_json(limits))
    )
    with place as where, contextlib.ExitStack() as stack:
        # The workers start up while the graph is stored (a graph stored already and ended
        # needs none: they are stopped at once).
        pool = where.pool or stack.enter_context(WorkerPool(counts, where.worker_env, where.log_dir))
        store = where.services.store
        defaults = {t: h.max_attempts for t, h in handlers.items() if h.max_attempts}
        graph, created = store.create_graph(spec, max_attempts=defaults)
        rerun = 0
        if rerun_failed and graph.status in (GraphStatus.FAILED, GraphStatus.ABORTED):
            change = rerun_graph(where.services, spec.id)
            graph, rerun = change.graph, change.jobs_changed
        if progress:
            progress(graph)
        if not graph.status.terminal:
            graph = pump_until_done(
                where.services,
                Scheduler.for_services(where.services),
                where.reader,
                spec.id,
                progress=progress,
                poll_seconds=where.poll_seconds,
                alive=pool.alive,
            )
        # The workers are told to stop now and exit while the jobs are read back.
        pool.terminate()
        # Children in item order (``p.2`` before ``p.10``), not in the store's string order.
        ordered = sorted(store.list_jobs(spec.id), key=lambda job: natural_order(job.name))
        jobs = {job.name: _with_handler_limit(job.summary(), handlers) for job in ordered}
        if out is not None:
            download_artifacts(where.services, jobs, out)
        pool.stop()  # each counts its AWS requests as it exits
        requests = where.requests()
    seconds = time.monotonic() - started
    return RunResult(
        spec.id,
        graph.status.value,
        jobs,
        seconds,
        created,
        requests,
        rerun,
        graph.reason,
        graph.created_at,
        graph.finished_at,
    )
