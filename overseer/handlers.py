"""Loading the user's handlers module and running a handler's stages."""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HandlersModuleError, InvalidArtifact
from .job import Artifact, Expand, Job, Rows
from .limits import check_name as check_limit_name
from .pools import POOL_NAME

_STAGE_KEYS = {
    "process", "pre_process", "post_process", "max_attempts", "timeout_seconds",
    "retry_on", "backoff_seconds", "backoff_max_seconds", "pool", "limit",
}  # fmt: skip
# A name in ``retry_on``: a dotted path of Python identifiers (``requests.ConnectionError``).
EXCEPTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

RetryOn = tuple[type[BaseException] | str, ...]


@dataclass(frozen=True)
class HandlerSpec:
    """A handler with its stages and per-type settings."""

    job_type: str
    process: Callable[[Job], Any]
    pre_process: Callable[[Job], Any] | None = None
    post_process: Callable[[Job, Any], Any] | None = None
    max_attempts: int | None = None
    timeout_seconds: int | None = None
    # Exceptions that make the job try again (with backoff) instead of failing at once:
    # classes, or dotted names resolved in the handler's process (see ``retry_matches``).
    retry_on: RetryOn = ()
    # Backoff of this type's retries (None: the settings' fault_backoff_*).
    backoff_seconds: float | None = None
    backoff_max_seconds: float | None = None
    # The worker pool its jobs run on unless the graph says otherwise (``overseer.pools``).
    pool: str | None = None
    # The concurrency limit its jobs hold while they run unless the graph names another
    # (``overseer.limits``).
    limit: str | None = None

    def retries(self, exc: BaseException, job_retry_on: Sequence[str] = ()) -> bool:
        """Whether ``exc`` is retried: it is an instance of one of the job's ``retry_on``
        names (from the graph) or, when the job sets none, of this handler's ``retry_on``."""
        return retry_matches(exc, tuple(job_retry_on) or self.retry_on, home=self.process.__module__)

    def run(self, job: Job) -> list[Result]:
        """pre_process(job) may return a replacement job; post_process(job, result) may
        return a replacement result (None keeps process's result)."""
        if self.pre_process is not None:
            replaced = self.pre_process(job)
            if isinstance(replaced, Job):
                job = replaced
        result = self.process(job)
        if self.post_process is not None:
            post = self.post_process(job, result)
            if post is not None:
                result = post
        return normalize_result(result, job.type)


Result = Artifact | Rows | Expand


def normalize_result(result: Any, job_type: str) -> list[Result]:
    if result is None:
        return []
    if isinstance(result, Result):
        return [result]
    if isinstance(result, list | tuple) and all(isinstance(a, Result) for a in result):
        return list(result)
    raise InvalidArtifact(
        f"handler {job_type!r} returned {type(result).__name__}; "
        "return None or a list of overseer.Artifact / overseer.Rows / overseer.Expand"
    )


def resolve_exception(name: str, home: str | None = None) -> type[BaseException] | None:
    """The exception class ``name`` names, or None when it names none.

    A plain name is a builtin (``ConnectionError``) or a class of the module ``home`` (the
    handlers module); a dotted name is imported: the longest importable module prefix,
    then attributes (``requests.ConnectionError``, ``botocore.exceptions.ClientError``).
    """
    found: Any = None
    if "." not in name:
        found = getattr(builtins, name, None)
        module = sys.modules.get(home or "")
        if found is None and module is not None:
            found = getattr(module, name, None)
    else:
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                found = importlib.import_module(".".join(parts[:cut]))
            except Exception:
                continue
            for attr in parts[cut:]:
                found = getattr(found, attr, None)
            break
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def retry_matches(
    exc: BaseException, retry_on: Sequence[type[BaseException] | str], *, home: str | None = None
) -> bool:
    """Whether ``exc`` is an instance of a class in ``retry_on`` (its subclasses match too).

    Run in the handler's process, where the classes are: ``requests.ConnectionError`` is
    not the builtin ``ConnectionError``. A name that resolves to no class (its module is
    not installed here) matches a class of the raised exception's hierarchy by its
    qualified name (``module.Class``) or its plain name.
    """
    names = set()
    for entry in retry_on:
        cls = resolve_exception(entry, home) if isinstance(entry, str) else entry
        if cls is not None and isinstance(exc, cls):
            return True
        if cls is None and isinstance(entry, str):
            names.add(entry)
    if names:
        for cls in type(exc).__mro__:
            if {cls.__qualname__, f"{cls.__module__}.{cls.__qualname__}"} & names:
                return True
    return False


def _retry_on(job_type: str, value: Any, home: str) -> RetryOn:
    """A handler's ``retry_on``, checked when the handlers are loaded: a class or dotted name,
    or a list of them; every name resolves to an exception class here."""
    entries = list(value) if isinstance(value, list | tuple) else [value]
    for entry in entries:
        if isinstance(entry, type) and issubclass(entry, BaseException):
            continue
        if not isinstance(entry, str) or not EXCEPTION_NAME.match(entry):
            raise HandlersModuleError(
                f"handler {job_type!r} retry_on must hold exception classes or dotted names "
                f"such as 'requests.ConnectionError', got {entry!r}"
            )
        if resolve_exception(entry, home) is None:
            raise HandlersModuleError(
                f"handler {job_type!r} retry_on names {entry!r}, which is no exception class: "
                "give a builtin, a class of the handlers module, or an importable dotted path"
            )
    return tuple(entries)


def _seconds(job_type: str, key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise HandlersModuleError(f"handler {job_type!r} {key} must be seconds >= 0, got {value!r}")
    return float(value)


def _pool_name(job_type: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and POOL_NAME.match(value)):
        return value
    raise HandlersModuleError(f"handler {job_type!r} pool must be a pool name such as 'gpu', got {value!r}")


def _limit_name(job_type: str, value: Any) -> str | None:
    problem = None if value is None else check_limit_name(value, f"handler {job_type!r} limit")
    if problem:
        raise HandlersModuleError(problem)
    return value


def to_spec(job_type: str, handler: Any) -> HandlerSpec:
    if callable(handler) and not isinstance(handler, Mapping):
        return HandlerSpec(job_type, handler)
    if isinstance(handler, Mapping):
        unknown = set(handler) - _STAGE_KEYS
        if unknown:
            raise HandlersModuleError(
                f"handler {job_type!r} has unknown keys {sorted(unknown)}; expected {sorted(_STAGE_KEYS)}"
            )
        process = handler.get("process")
        if not callable(process):
            raise HandlersModuleError(f"handler {job_type!r} is a mapping without a callable 'process'")
        for stage in ("pre_process", "post_process"):
            if handler.get(stage) is not None and not callable(handler[stage]):
                raise HandlersModuleError(f"handler {job_type!r} stage {stage!r} is not callable")
        return HandlerSpec(
            job_type,
            process,
            handler.get("pre_process"),
            handler.get("post_process"),
            handler.get("max_attempts"),
            handler.get("timeout_seconds"),
            _retry_on(job_type, handler.get("retry_on") or (), process.__module__),
            _seconds(job_type, "backoff_seconds", handler.get("backoff_seconds")),
            _seconds(job_type, "backoff_max_seconds", handler.get("backoff_max_seconds")),
            _pool_name(job_type, handler.get("pool")),
            _limit_name(job_type, handler.get("limit")),
        )
    raise HandlersModuleError(
        f"handler {job_type!r} must be a function or a mapping with 'process', got {type(handler).__name__}"
    )


def import_handlers_module(path: str) -> Any:
    """Import ``path``: a dotted module path, or a .py file."""
    if not path:
        raise HandlersModuleError("no handlers module given: pass --handlers or set OVERSEER_HANDLERS")
    try:
        if path.endswith(".py"):
            file = Path(path).resolve()
            if not file.is_file():
                raise HandlersModuleError(f"handlers file {path!r} does not exist")
            name = f"overseer_user_handlers_{abs(hash(str(file)))}"
            spec = importlib.util.spec_from_file_location(name, file)
            if spec is None or spec.loader is None:
                raise HandlersModuleError(f"cannot import handlers file {path!r}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            # Let the handlers import their sibling modules.
            sys.path.insert(0, str(file.parent))
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(path)
    except HandlersModuleError:
        raise
    except Exception as exc:
        raise HandlersModuleError(
            f"cannot import handlers module {path!r}: {type(exc).__name__}: {exc}"
        ) from exc


def load_handlers(path: str) -> dict[str, HandlerSpec]:
    """The module's ``HANDLERS`` as job type -> ``HandlerSpec``."""
    module = import_handlers_module(path)
    handlers = getattr(module, "HANDLERS", None)
    if not isinstance(handlers, Mapping) or not handlers:
        raise HandlersModuleError(
            f"handlers module {path!r} must define HANDLERS, a non-empty dict of job type -> handler"
        )
    return {str(job_type): to_spec(str(job_type), h) for job_type, h in handlers.items()}


def manifest(path: str) -> dict[str, dict[str, Any]]:
    """What a pool's handlers module serves, for routing without importing it (the stack
    lists it at synthesis): job type -> {"pool": the spec's pool or None, "timeout_seconds",
    "limit": the spec's concurrency limit or None}."""
    return {
        job_type: {"pool": spec.pool, "timeout_seconds": spec.timeout_seconds, "limit": spec.limit}
        for job_type, spec in load_handlers(path).items()
    }
