"""Running handlers in a supervised child process, so no handler can take a worker down.

The worker keeps one warm child (the handlers module is imported once) and sends it one
job at a time over a pipe. The child runs the handler's stages and sends back either
the returned artifacts or the signal or exception the handler raised. Whatever else
happens to the child (out of memory, a segfault, ``os._exit``, a kill, a timeout), the
worker sees it die or overrun, records what happened on the job, starts a new child for
the next job, and goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from . import timeutil
from .artifacts import load_inputs
from .config import job_log_path
from .errors import AbortJob, FaultJob, HandlerCrashed, RemoteHandlerError
from .handlers import HandlerSpec, load_handlers
from .job import Artifact, Job, Rows
from .store import Services

log = logging.getLogger("overseer.isolation")
TRACEBACK_LINES = 12
_SPAWN = multiprocessing.get_context("spawn")
# A child forked from the worker starts in milliseconds (nothing to import again); only a
# process with no other thread may fork safely (a lock held by another thread would stay
# held in the child), so a child started while a job's heartbeat runs is spawned.
_FORK = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None


def _start_method() -> Any:
    return _FORK if _FORK is not None and threading.active_count() == 1 else _SPAWN


@dataclass(frozen=True)
class _Request:
    job_type: str
    job: Job  # without its inputs loader; the child builds its own


def describe_exit(exitcode: int | None, memory_limit_mb: int) -> str:
    """Say in words why a child process ended."""
    if exitcode is None:
        return "the handler process did not exit"
    if exitcode < 0:
        number = -exitcode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        text = f"the handler process was killed by {name}"
        if number == signal.SIGKILL:
            text += " (killed from outside, or out of memory"
            text += f": its limit is {memory_limit_mb} MB)" if memory_limit_mb else ")"
        elif number == signal.SIGSEGV:
            text += " (segmentation fault)"
        return text
    return f"the handler process exited with code {exitcode}"


def short_traceback(exc: BaseException) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(lines)
    tail = text.splitlines()[-TRACEBACK_LINES:]
    return "\n".join(tail)[-4000:]


def _limit_memory(megabytes: int) -> None:
    if megabytes <= 0:
        return
    import resource

    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


# How long a fresh handler process may take to start (import the handlers) and take a job.
STARTUP_LIMIT_SECONDS = 300
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Most source files looked at when deciding whether the handlers changed.
_MAX_SOURCE_FILES = 2000


class _Prefixed:
    """A text stream that starts every line with ``prefix`` (job output in a shared log)."""

    def __init__(self, stream: TextIO, prefix: str) -> None:
        self.stream, self.prefix, self._at_line_start = stream, prefix, True

    def write(self, text: str) -> int:
        out = []
        for piece in text.splitlines(keepends=True):
            if self._at_line_start:
                out.append(self.prefix)
            out.append(piece)
            self._at_line_start = piece.endswith("\n")
        self.stream.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def _log_records_to_stderr() -> Iterator[None]:
    """Log records at INFO and above go to ``sys.stderr`` as it is now, then as before."""
    root = logging.getLogger()
    level = root.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        sys.stdout.flush()
        sys.stderr.flush()


@contextlib.contextmanager
def capture_job_output(job: Job, log_dir: str | None) -> Iterator[None]:
    """Around one job in the child: its stdout, stderr and logging.

    With ``log_dir`` (local stacks) everything the job writes, including what its
    subprocesses write to fds 1 and 2, goes to ``job_log_path(...)``. Without it (AWS:
    the container's stdout is CloudWatch Logs) the job's Python output and log records go
    to stdout/stderr with every line prefixed by ``<graph_id>/<job>#<attempt>``, so a
    filter pattern on the job id finds them.
    """
    if sys.stdout is None or sys.stderr is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    if log_dir:
        path = job_log_path(log_dir, job.graph_id, job.name, job.attempt)
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = [os.dup(1), os.dup(2)]
        with path.open("ab", buffering=0) as target:
            target.write(f"--- {job.id} attempt {job.attempt} started {timeutil.iso()} ---\n".encode())
            os.dup2(target.fileno(), 1)
            os.dup2(target.fileno(), 2)
            try:
                with _log_records_to_stderr():
                    yield
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                for fd in saved:
                    os.close(fd)
        return
    prefix = f"{job.graph_id}/{job.name}#{job.attempt} "
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Prefixed(out, prefix), _Prefixed(err, prefix)
    try:
        with _log_records_to_stderr():
            yield
    finally:
        sys.stdout, sys.stderr = out, err


def handlers_source_files(handlers_path: str) -> list[Path]:
    """The source files whose change should reload the handlers.

    A ``.py`` file or a plain module: it and the ``.py`` files beside it (its siblings it may
    import); a package: every ``.py`` file under its directory. Empty when not found.
    """
    try:
        if handlers_path.endswith(".py"):
            origin: str | None = str(Path(handlers_path).resolve())
        else:
            spec = importlib.util.find_spec(handlers_path)
            origin = spec.origin if spec is not None else None
    except Exception:
        return []
    if not origin or not origin.endswith(".py"):
        return []
    file = Path(origin)
    if file.name == "__init__.py":
        files = []
        for path in sorted(file.parent.rglob("*.py")):
            if "__pycache__" not in path.parts:
                files.append(path)
            if len(files) >= _MAX_SOURCE_FILES:
                break
        return files
    return sorted(file.parent.glob("*.py"))[:_MAX_SOURCE_FILES] or [file]


def code_version(handlers_path: str) -> str:
    """The version of the handler code at ``handlers_path``: ``sha256:`` and the first 12
    hex digits of a hash of its source files' names and bytes (the files whose change
    reloads the handlers), or "" when they cannot be found."""
    files = handlers_source_files(handlers_path)
    if not files:
        return ""
    digest = hashlib.sha256()
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        digest.update(path.name.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return f"sha256:{digest.hexdigest()[:12]}"


def source_stamp(files: list[Path]) -> tuple[int, int]:
    """(newest mtime in ns, number of files): changes when a file is edited, added or removed."""
    newest, count = 0, 0
    for path in files:
        try:
            newest = max(newest, path.stat().st_mtime_ns)
            count += 1
        except OSError:
            pass
    return newest, count


def _child_main(
    conn: multiprocessing.connection.Connection,
    handlers_path: str,
    memory_limit_mb: int,
    inputs_factory: Callable[[Job], Callable[[], Any]] | None,
    log_dir: str | None = None,
    worker_end: multiprocessing.connection.Connection | None = None,
) -> None:
    """The child's loop: one job in, one outcome out, until the pipe closes.

    ``worker_end``: the worker's end of the pipe, which a forked child holds too; closed at
    once, so that the worker's death (even by SIGKILL) closes the pipe and ends this loop.
    """
    if worker_end is not None:
        worker_end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    handlers = load_handlers(handlers_path)
    _limit_memory(memory_limit_mb)
    while True:
        try:
            request: _Request = conn.recv()
        except (EOFError, OSError):
            return
        job = request.job
        # The job's timeout runs from here, not from the hand-off: a fresh process's
        # start-up (spawn, importing the handlers) is not the job's time.
        conn.send(("started",))
        if inputs_factory is not None:
            job.inputs_loader = inputs_factory(job)
        try:
            with capture_job_output(job, log_dir):
                try:
                    results = handlers[request.job_type].run(job)
                except (AbortJob, FaultJob) as signal_:
                    log.warning("%s: %s", type(signal_).__name__, signal_.message)
                    raise
                except BaseException:
                    log.exception("the handler of %s raised", job.id)
                    raise
            outcome: tuple[Any, ...] = ("ok", results)
        except AbortJob as signal_:
            outcome = ("abort", signal_.message)
        except FaultJob as signal_:
            outcome = ("fault", signal_.message)
        except MemoryError:
            outcome = ("oom", f"out of memory (the limit is {memory_limit_mb} MB)")
        except BaseException as exc:
            # Matched here, where the exception's classes are: the verdict crosses the pipe.
            retryable = handlers[request.job_type].retries(exc, job.retry_on)
            outcome = ("error", type(exc).__name__, str(exc)[:2000], short_traceback(exc), retryable)
        try:
            conn.send(outcome)
        except Exception as exc:  # e.g. results that cannot be pickled
            conn.send(("error", type(exc).__name__, f"cannot return the handler's result: {exc}", "", False))


_child_services: Services | None = None


def inputs_in_child(services_factory: Callable[[], Services], job: Job) -> Callable[[], Any]:
    """In the child: read a job's inputs through services of its own, built once by
    ``services_factory`` (picklable: the parent passes e.g. ``partial(build_services, settings)``)."""

    def load() -> Any:
        global _child_services
        if _child_services is None:
            _child_services = services_factory()
        services = _child_services
        record = services.store.get_job(job.graph_id, job.name)
        return load_inputs(services, record) if record else {}

    return load


class IsolatedRunner:
    """Runs ``HandlerSpec`` stages in a warm child process. Callable like ``spec.run``."""

    def __init__(
        self,
        handlers_path: str,
        *,
        memory_limit_mb: int = 0,
        default_timeout_seconds: float = 0,
        inputs_factory: Callable[[Job], Callable[[], Any]] | None = None,
        log_dir: str | Path | None = None,
        reload_on_change: bool = True,
    ) -> None:
        self.handlers_path = handlers_path
        self.log_dir = str(log_dir) if log_dir else None
        # The child is restarted before a job when the handlers' source files changed
        # since it started, so a fixed handler is picked up by a rerun.
        self._sources = handlers_source_files(handlers_path) if reload_on_change else []
        self._stamp = source_stamp(self._sources)
        self._changed: bool | None = None  # this job's answer, until the child is next used
        self.memory_limit_mb = memory_limit_mb
        self.default_timeout = default_timeout_seconds
        self.inputs_factory = inputs_factory
        self._process: Any = None
        self._conn: multiprocessing.connection.Connection | None = None
        self.started = 0

    def handlers_changed(self) -> bool:
        """Whether the handlers' source files changed since the child started (the files are
        looked at once per job: the worker asks before the child is used)."""
        if self._changed is None:
            self._changed = bool(self._sources) and source_stamp(self._sources) != self._stamp
        return self._changed

    def _ensure_child(self) -> multiprocessing.connection.Connection:
        changed, self._changed = self.handlers_changed(), None
        if self._process is not None and changed:
            log.info("handlers in %s changed: restarting the handler process", self.handlers_path)
            self.close()
        if self._process is not None and self._process.is_alive() and self._conn is not None:
            return self._conn
        self.close()
        if self._sources:
            self._sources = handlers_source_files(self.handlers_path)
            self._stamp = source_stamp(self._sources)
        context = _start_method()
        parent, child = context.Pipe()
        forked = context.get_start_method() == "fork"
        self._process = context.Process(
            target=_child_main,
            name="overseer-handler",
            daemon=True,
            args=(
                child,
                self.handlers_path,
                self.memory_limit_mb,
                self.inputs_factory,
                self.log_dir,
                parent if forked else None,
            ),
        )
        self._process.start()
        child.close()
        self._conn = parent
        self.started += 1
        return parent

    def warm(self) -> None:
        """Start the child now (a worker starting up, before it takes a job), so that the
        first job does not wait for it."""
        self._ensure_child()

    def close(self) -> None:
        """Stop the child (if any)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=5)
            self._process = None

    def __call__(
        self,
        spec: HandlerSpec,
        job: Job,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> list[Artifact | Rows]:
        conn = self._ensure_child()
        timeout = float(spec.timeout_seconds or self.default_timeout or 0)
        loader, job.inputs_loader = job.inputs_loader, None
        try:
            conn.send(_Request(spec.job_type, job))
        except (OSError, ValueError) as exc:
            self.close()
            raise HandlerCrashed(f"cannot hand the job to the handler process: {exc}") from exc
        finally:
            job.inputs_loader = loader
        handed_over = time.monotonic()
        started: float | None = None
        while True:
            try:
                ready = conn.poll(0.05)
            except (OSError, EOFError):
                ready = False
            if ready:
                try:
                    outcome = conn.recv()
                    if outcome == ("started",):
                        started = time.monotonic()
                        continue
                    break
                except (EOFError, OSError):
                    pass  # the child died mid-answer: reported below
            if not self._process.is_alive() or (ready and self._process is None):
                self._process.join(timeout=1)
                code = self._process.exitcode
                self._process = None
                self.close()
                raise HandlerCrashed(describe_exit(code, self.memory_limit_mb))
            if started is None and time.monotonic() - handed_over > STARTUP_LIMIT_SECONDS:
                self.close()
                raise HandlerCrashed(
                    f"the handler process did not start the job within {STARTUP_LIMIT_SECONDS} s"
                )
            if timeout and started is not None and time.monotonic() - started > timeout:
                self.close()
                raise HandlerCrashed(
                    f"the handler ran longer than its timeout of {timeout:g} s and was killed"
                )
            if should_stop():
                self.close()
                raise HandlerCrashed("the handler was stopped: the job was cancelled or its lease was lost")
        kind = outcome[0]
        if kind == "ok":
            return list(outcome[1])
        if kind == "abort":
            raise AbortJob(outcome[1])
        if kind == "fault":
            raise FaultJob(outcome[1])
        if kind == "oom":
            # The child's heap may be in a bad state: start a fresh one for the next job.
            self.close()
            raise HandlerCrashed(outcome[1])
        raise RemoteHandlerError(outcome[1], outcome[2], outcome[3], retryable=outcome[4])


__all__ = [
    "IsolatedRunner",
    "capture_job_output",
    "describe_exit",
    "handlers_source_files",
    "inputs_in_child",
    "job_log_path",
    "os",
    "short_traceback",
    "source_stamp",
]
