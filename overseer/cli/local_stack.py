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
    local.json          the running stack: pid, workers' pids, handlers, start time
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
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click

from .. import timeutil
from ..config import DEFAULT_STATE_DIR, Settings
from ..errors import EXIT_INVALID, HandlersModuleError, StackAlreadyRunning
from ..handlers import load_handlers
from .views import err, fail, out

# The runner and the embedded backend (which loads boto3) are imported where a stack is
# configured or started, not by every ``overseer`` command that registers this group.

log = logging.getLogger("overseer.cli.local_stack")
LOCK_FILE = "local.lock"
STATE_FILE = "local.json"
LOGS_DIR = "logs"
WORKER_LOGS = "workers"
# Trim the feed of records every reader has passed this often.
TRIM_INTERVAL_SECONDS = 60.0
# A worker that dies sooner than this after its start counts as crash-looping: back off.
QUICK_DEATH_SECONDS = 5.0
MAX_RESTART_DELAY_SECONDS = 30.0
# Without a parent-death signal (not Linux), workers exit after this long without work.
ORPHAN_IDLE_EXIT_SECONDS = 120


def local_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings for a local stack: the environment's, with local defaults where it says
    nothing (a 15 s lease, a 1 s receive wait); ``overrides`` (not None) win."""
    from ..runner import LOCAL_LEASE_SECONDS

    env = dict(os.environ if environ is None else environ)
    env.setdefault("OVERSEER_LEASE_SECONDS", str(LOCAL_LEASE_SECONDS))
    env.setdefault("OVERSEER_RECEIVE_WAIT_SECONDS", "1")
    return Settings.from_env(env, **overrides)


def logs_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / LOGS_DIR


def read_stack_info(state_dir: str | Path) -> dict[str, Any] | None:
    """What ``local.json`` says about the running stack, or None when none runs."""
    path = Path(state_dir) / STATE_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(info.get("pid", 0))
    if not pid or not _alive(pid):
        return None
    return info


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the worker gets SIGTERM when the stack process dies, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@dataclass
class _WorkerSlot:
    number: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    quick_deaths: int = 0


@dataclass
class LocalStack:
    """The scheduler, sweep and supervised workers of one state directory.

    ``run()`` blocks until ``stop()`` (or SIGINT / SIGTERM when started by ``run_stack``).
    """

    state_dir: Path
    handlers: str
    workers: int = 2
    settings: Settings | None = None
    poll_seconds: float = 0.02
    on_event: Callable[[str], None] = lambda _message: None
    _stop: threading.Event = field(default_factory=threading.Event)
    _slots: list[_WorkerSlot] = field(default_factory=list)

    def __post_init__(self) -> None:
        from ..runner import embedded_settings, handlers_env

        self.state_dir = Path(self.state_dir).resolve()
        env = handlers_env(self.handlers)
        base = self.settings or local_settings()
        linux = sys.platform.startswith("linux")
        configured = embedded_settings(self.state_dir, base, env["OVERSEER_HANDLERS"])
        # Workers live as long as the stack; they die with it (Linux), else exit when idle.
        self.configured = configured.with_(idle_exit_seconds=0 if linux else ORPHAN_IDLE_EXIT_SECONDS)
        self.worker_env = {**os.environ, **env, **self.configured.to_env()}
        self._linux = linux

    # -- workers ------------------------------------------------------------------------
    def _start_worker(self, slot: _WorkerSlot) -> None:
        path = logs_dir(self.state_dir) / WORKER_LOGS / f"worker-{slot.number}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as out:
            slot.process = subprocess.Popen(
                [sys.executable, "-m", "overseer", "worker"],
                env=self.worker_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if self._linux else None,
            )
        slot.started = time.monotonic()

    def _supervise(self) -> None:
        now = time.monotonic()
        changed = False
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
                slot.restarts += 1
                self.on_event(
                    f"worker {slot.number} exited with code {process.returncode}; "
                    f"restarting{f' in {delay:g}s' if delay else ''}"
                )
            if now >= slot.next_start:
                self._start_worker(slot)
                changed = True
        if changed:
            self._write_info()

    def _stop_workers(self, timeout: float) -> None:
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

    def _write_info(self) -> None:
        info = {
            "pid": os.getpid(),
            "started_at": self._started_at,
            "handlers": self.configured.handlers,
            "workers": [s.process.pid for s in self._slots if s.process is not None],
            "worker_restarts": sum(s.restarts for s in self._slots),
            "lease_seconds": self.configured.lease_seconds,
        }
        path = self.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(path)

    # -- the loop -----------------------------------------------------------------------
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
        from ..scheduler import Scheduler
        from ..sweep import sweep

        with self._lock():
            services = embedded_services(self.state_dir, self.configured)
            scheduler = Scheduler(services.store, services.queue)
            reader = feed_reader(self.state_dir)
            self._started_at = timeutil.iso()
            self._slots = [_WorkerSlot(n + 1) for n in range(self.workers)]
            self._supervise()
            self.on_event(
                f"local stack on {self.state_dir}: {self.workers} workers, "
                f"handlers {self.configured.handlers}"
            )
            last_sweep = last_trim = time.monotonic()
            try:
                while not self._stop.is_set():
                    now = time.monotonic()
                    if now - last_sweep >= self.configured.sweep_interval_seconds:
                        last_sweep = now
                        try:
                            sweep(services)
                        except Exception:
                            log.warning("sweep failed", exc_info=True)
                        self._supervise()
                    if now - last_trim >= TRIM_INTERVAL_SECONDS:
                        last_trim = now
                        with contextlib.suppress(Exception):
                            reader.commit()
                            reader.trim()
                    records = reader.poll()
                    if not records:
                        self._stop.wait(self.poll_seconds)
                        continue
                    for attempt in range(1, 6):
                        try:
                            scheduler.process_stream_event({"Records": records})
                            break
                        except Exception:
                            # As Lambda does: the same batch again after a pause; a batch that
                            # keeps failing is skipped (the sweep repairs what it left).
                            log.warning("scheduler failed on a batch (attempt %d)", attempt, exc_info=True)
                            if self._stop.wait(0.2 * attempt):
                                break
            finally:
                with contextlib.suppress(Exception):
                    reader.commit()
                self._stop_workers(timeout=float(self.configured.shutdown_grace_seconds) + 5)
                with contextlib.suppress(OSError):
                    (self.state_dir / STATE_FILE).unlink()
                self.on_event("local stack stopped")


def run_stack(
    state_dir: Path,
    handlers: str,
    workers: int,
    *,
    settings: Settings | None = None,
    on_event: Callable[[str], None] = lambda _message: None,
) -> None:
    """Run a local stack in the foreground until SIGINT or SIGTERM."""
    stack = LocalStack(state_dir, handlers, workers, settings=settings, on_event=on_event)
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
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pid


# -- the commands ----------------------------------------------------------------------------
@click.group()
def local() -> None:
    """A long-running local stack (embedded backend): scheduler, sweep and workers."""


@local.command()
@click.option(
    "--state-dir",
    envvar="OVERSEER_STATE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Where the stack keeps its state (kept between runs).",
)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--handlers",
    "handlers_path",
    envvar="OVERSEER_HANDLERS",
    required=True,
    help="Handlers module: an import path or a .py file exposing HANDLERS.",
)
def up(state_dir: Path, workers: int, handlers_path: str) -> None:
    """Run the local stack in the foreground until Ctrl-C / SIGTERM."""
    try:
        load_handlers(handlers_path)
    except HandlersModuleError as exc:
        fail(str(exc), EXIT_INVALID)

    def event(message: str) -> None:
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        err.print(f"[dim]{stamp}[/] {message}")

    try:
        run_stack(state_dir, handlers_path, workers, on_event=event)
    except StackAlreadyRunning as exc:
        fail(str(exc))


@local.command()
@click.option(
    "--state-dir",
    envvar="OVERSEER_STATE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
)
def down(state_dir: Path) -> None:
    """Stop the local stack running on --state-dir (its state is kept)."""
    pid = stop_stack(state_dir)
    if pid is None:
        out.print(f"no local stack runs on {state_dir}")
    else:
        out.print(f"stopped the local stack on {state_dir} (pid {pid})")
