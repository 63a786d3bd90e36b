"""Running handlers in a supervised child process, so no handler can take a worker down.

The worker keeps one warm child (the handlers module is imported once) and sends it one
job at a time over a pipe. The child runs the handler's stages and sends back either
the returned artifacts or the signal or exception the handler raised. Whatever else
happens to the child (out of memory, a segfault, ``os._exit``, a kill, a timeout), the
worker sees it die or overrun, records what happened on the job, starts a new child for
the next job, and goes on.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import AbortJob, FaultJob, OverseerError
from .handlers import HandlerSpec, load_handlers
from .job import Artifact, Job, Rows

log = logging.getLogger("overseer.isolation")
_SPAWN = multiprocessing.get_context("spawn")


class HandlerCrashed(OverseerError):
    """The handler's process died or overran its time: the job is faulted (tried again)."""


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


def _limit_memory(megabytes: int) -> None:
    if megabytes <= 0:
        return
    import resource

    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _child_main(
    conn: multiprocessing.connection.Connection,
    handlers_path: str,
    memory_limit_mb: int,
    inputs_factory: Callable[[Job], Callable[[], Any]] | None,
) -> None:
    """The child's loop: one job in, one outcome out, until the pipe closes."""
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
        if inputs_factory is not None:
            job.inputs_loader = inputs_factory(job)
        try:
            results = handlers[request.job_type].run(job)
            outcome: tuple[Any, ...] = ("ok", results)
        except AbortJob as signal_:
            outcome = ("abort", signal_.message)
        except FaultJob as signal_:
            outcome = ("fault", signal_.message)
        except MemoryError:
            outcome = ("oom", f"out of memory (the limit is {memory_limit_mb} MB)")
        except BaseException as exc:
            from .worker import short_traceback

            outcome = ("error", type(exc).__name__, str(exc)[:2000], short_traceback(exc))
        try:
            conn.send(outcome)
        except Exception as exc:  # e.g. results that cannot be pickled
            conn.send(("error", type(exc).__name__, f"cannot return the handler's result: {exc}", ""))


_child_services: Any = None


def default_inputs_factory(job: Job) -> Callable[[], Any]:
    """In the child: read a job's inputs through this process's own services."""

    def load() -> Any:
        from .services import Services
        from .worker import load_inputs

        global _child_services
        if _child_services is None:
            _child_services = Services.from_env()
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
        inputs_factory: Callable[[Job], Callable[[], Any]] | None = default_inputs_factory,
    ) -> None:
        self.handlers_path = handlers_path
        self.memory_limit_mb = memory_limit_mb
        self.default_timeout = default_timeout_seconds
        self.inputs_factory = inputs_factory
        self._process: Any = None
        self._conn: multiprocessing.connection.Connection | None = None
        self.started = 0

    def _ensure_child(self) -> multiprocessing.connection.Connection:
        if self._process is not None and self._process.is_alive() and self._conn is not None:
            return self._conn
        self.close()
        parent, child = _SPAWN.Pipe()
        self._process = _SPAWN.Process(
            target=_child_main,
            name="overseer-handler",
            daemon=True,
            args=(child, self.handlers_path, self.memory_limit_mb, self.inputs_factory),
        )
        self._process.start()
        child.close()
        self._conn = parent
        self.started += 1
        return parent

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

    def kill(self) -> None:
        """Stop the running handler now (cancellation, shutdown)."""
        self.close()

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
        started = time.monotonic()
        while True:
            try:
                ready = conn.poll(0.05)
            except (OSError, EOFError):
                ready = False
            if ready:
                try:
                    outcome = conn.recv()
                    break
                except (EOFError, OSError):
                    pass  # the child died mid-answer: reported below
            if not self._process.is_alive() or (ready and self._process is None):
                self._process.join(timeout=1)
                code = self._process.exitcode
                self._process = None
                self.close()
                raise HandlerCrashed(describe_exit(code, self.memory_limit_mb))
            if timeout and time.monotonic() - started > timeout:
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
        raise RemoteHandlerError(outcome[1], outcome[2], outcome[3])


class RemoteHandlerError(Exception):
    """An exception raised by the handler in the child process (type name kept for the job)."""

    def __init__(self, type_name: str, message: str, traceback_text: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text


def child_pid(runner: IsolatedRunner) -> int | None:
    return runner._process.pid if runner._process is not None else None


__all__ = ["HandlerCrashed", "IsolatedRunner", "RemoteHandlerError", "describe_exit", "os"]
