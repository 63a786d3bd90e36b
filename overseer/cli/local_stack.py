"""``overseer local up``: a long-running local stack on the embedded backend.

One process per state directory runs what the AWS stack runs as managed services:

* the **scheduler** on the whole change feed (every graph, not one), as the stream Lambda;
* the **sweep** every ``sweep_interval_seconds`` (expired leases, lost messages, dead letters);
* N **workers** (``python -m overseer worker`` processes), restarted when they die.

The other commands (``overseer submit``, ``status``, ``cancel``, ``rerun``...) need no
server: they open the same SQLite file in the state directory, and what they write reaches
this process through the feed. State lives on disk; stopping the stack (SIGINT / SIGTERM)
and starting it again carries on where it stopped.

Files in the state directory besides the backend's own::

    local.lock          held (flock) while a stack runs: one stack per directory
    local.json          the running stack: pid, workers' pids, handlers, pools, concurrency
                        limits, start time (``overseer submit`` checks graphs against them)
    logs/<graph>/<job>.<attempt>.log   each job's output (written by the handler process)
    logs/workers/worker-<n>.log        each worker process's own log
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from .. import timeutil
from ..config import Settings, logs_dir
from ..errors import EXIT_INVALID, HandlersModuleError, StackAlreadyRunning
from ..handlers import load_handlers
from ..limits import parse_limits
from ..pools import DEFAULT_POOL, Pools, parse_worker_counts
from .targets import STATE_FILE, limit_option, pid_alive, read_stack_info, state_dir_option
from .views import err, fail, out

if TYPE_CHECKING:
    from ..runner import WorkerPool

# The runner and the embedded backend (which loads boto3) are imported where a stack is
# configured or started, not by every ``overseer`` command that registers this group.

log = logging.getLogger("overseer.cli.local_stack")
LOCK_FILE = "local.lock"
WORKER_LOGS = "workers"
# Trim the feed of records every reader has passed this often.
TRIM_INTERVAL_SECONDS = 60.0


@dataclass
class LocalStack:
    """The scheduler, sweep and supervised workers of one state directory.

    ``run()`` blocks until ``stop()`` (or SIGINT / SIGTERM when started by ``run_stack``).
    """

    state_dir: Path
    handlers: str
    # Worker processes: a number (the default pool's), or per worker pool (overseer.pools).
    workers: int | Mapping[str, int] = 2
    settings: Settings | None = None
    # Concurrency limits, name -> size (``overseer.limits``); None: those of ``settings``.
    limits: Mapping[str, int] | None = None
    poll_seconds: float = 0.02
    on_event: Callable[[str], None] = lambda _message: None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        from ..runner import handlers_env, limits_json, local_settings

        self.state_dir = Path(self.state_dir).resolve()
        env = handlers_env(self.handlers)
        self.counts = {DEFAULT_POOL: self.workers} if isinstance(self.workers, int) else dict(self.workers)
        handler_pools = {t: spec.pool for t, spec in load_handlers(self.handlers).items()}
        self.pools = Pools.local(self.counts, handler_pools).to_json()
        self.configured = local_settings(
            self.state_dir,
            self.settings,
            handlers=env["OVERSEER_HANDLERS"],
            # Workers live as long as the stack: they die with it (Linux's parent-death
            # signal), and exit when they see it gone (``parent_pid``), never for want of work.
            idle_exit_seconds=0,
            parent_pid=os.getpid(),
            pools=self.pools,
            limits=None if self.limits is None else limits_json(self.limits),
        )
        self.limits = parse_limits(self.configured.limits)
        self.worker_env = {**env, **self.configured.to_env()}

    def _write_info(self, pool: WorkerPool) -> None:
        info = {
            "pid": os.getpid(),
            "started_at": self._started_at,
            "handlers": self.configured.handlers,
            "workers": pool.pids,
            "worker_pools": self.counts,
            "pools": self.pools,
            "limits": self.limits,
            "worker_restarts": pool.restarts,
            "lease_seconds": self.configured.lease_seconds,
        }
        path = self.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(path)

    def stop(self) -> None:
        self._stop.set()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[IO[str]]:
        import fcntl

        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = (self.state_dir / LOCK_FILE).open("a+")
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = read_stack_info(self.state_dir)
                who = f" (pid {info['pid']})" if info else ""
                raise StackAlreadyRunning(
                    f"a local stack already runs on {self.state_dir}{who}; stop it first"
                ) from None
            yield handle
        finally:
            handle.close()

    def run(self) -> None:
        """Run until stopped: pump the feed, sweep, keep the workers alive."""
        from ..backends.embedded import embedded_services, feed_reader
        from ..runner import Pump, WorkerPool

        with self._lock():
            services = embedded_services(self.state_dir, self.configured)
            reader = feed_reader(self.state_dir)
            self._started_at = timeutil.iso()
            pool = WorkerPool(
                self.counts,
                self.worker_env,
                logs_dir(self.state_dir) / WORKER_LOGS,
                restart=True,
                die_with_parent=True,
                on_event=self.on_event,
            )

            def supervise() -> None:
                if pool.supervise():
                    self._write_info(pool)

            # A batch that keeps failing is skipped: the stack goes on, the sweep repairs.
            pump = Pump(
                services,
                reader,
                skip_failed_batches=True,
                trim_seconds=TRIM_INTERVAL_SECONDS,
                on_sweep=supervise,
                wait=self._stop.wait,
            )
            pool.start()
            self._write_info(pool)
            self.on_event(
                f"local stack on {self.state_dir}: workers "
                f"{','.join(f'{name}={n}' for name, n in self.counts.items())}, "
                + "".join(f"limit {name}={size}, " for name, size in (self.limits or {}).items())
                + f"handlers {self.configured.handlers}"
            )
            try:
                while not self._stop.is_set():
                    pump.tick()
                    if not pump.feed():
                        reader.wait(self.poll_seconds)  # its bell: a record committed
            finally:
                with contextlib.suppress(Exception):
                    reader.commit()
                pool.stop(timeout=float(self.configured.shutdown_grace_seconds) + 5)
                with contextlib.suppress(OSError):
                    (self.state_dir / STATE_FILE).unlink()
                self.on_event("local stack stopped")


def run_stack(
    state_dir: Path,
    handlers: str,
    workers: int | Mapping[str, int],
    *,
    settings: Settings | None = None,
    limits: Mapping[str, int] | None = None,
    on_event: Callable[[str], None] = lambda _message: None,
) -> None:
    """Run a local stack in the foreground until SIGINT or SIGTERM."""
    stack = LocalStack(state_dir, handlers, workers, settings=settings, limits=limits, on_event=on_event)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stack.stop())
    try:
        stack.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_stack(state_dir: Path, *, timeout: float = 60.0) -> int | None:
    """Stop the stack running on ``state_dir`` (SIGTERM, then wait). Returns its pid or None."""
    info = read_stack_info(state_dir)
    if info is None:
        return None
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pid


# -- the commands ----------------------------------------------------------------------------
@click.group()
def local() -> None:
    """A long-running local stack (embedded backend): scheduler, sweep and workers."""


@local.command()
@state_dir_option("Where the stack keeps its state (kept between runs).")
@click.option(
    "--workers",
    "workers_text",
    default="2",
    show_default=True,
    help="Worker processes: a number (the default pool's), or per worker pool: default=4,gpu=1.",
)
@click.option(
    "--handlers",
    "handlers_path",
    envvar="OVERSEER_HANDLERS",
    required=True,
    help="Handlers module: an import path or a .py file exposing HANDLERS.",
)
@limit_option(
    "A concurrency limit: at most SIZE jobs holding NAME run at once (repeat for each limit); "
    "submitted graphs may name only these, e.g. --limit geo_api=5."
)
def up(state_dir: Path, workers_text: str, handlers_path: str, limits: dict[str, int]) -> None:
    """Run the local stack in the foreground until Ctrl-C / SIGTERM."""
    from ..limits import unconfigured_limits

    try:
        workers = parse_worker_counts(workers_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--workers") from None
    try:
        handlers = load_handlers(handlers_path)
    except HandlersModuleError as exc:
        fail(str(exc), EXIT_INVALID)
    # A handler spec's limit must be given: its jobs would fail with UnknownLimit otherwise.
    problem = unconfigured_limits(limits, handlers)
    if problem:
        fail(problem, EXIT_INVALID)

    def event(message: str) -> None:
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        err.print(f"[dim]{stamp}[/] {message}")

    try:
        run_stack(state_dir, handlers_path, workers, limits=limits, on_event=event)
    except StackAlreadyRunning as exc:
        fail(str(exc))


@local.command()
@state_dir_option("The stack's state directory.")
def down(state_dir: Path) -> None:
    """Stop the local stack running on --state-dir (its state is kept)."""
    pid = stop_stack(state_dir)
    if pid is None:
        out.print(f"no local stack runs on {state_dir}")
    else:
        out.print(f"stopped the local stack on {state_dir} (pid {pid})")
