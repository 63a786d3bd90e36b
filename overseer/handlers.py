"""Loading the user's handlers module and running a handler's stages."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HandlersModuleError, InvalidArtifact
from .job import Artifact, Job, Rows

_STAGE_KEYS = {"process", "pre_process", "post_process", "max_attempts", "timeout_seconds"}


@dataclass(frozen=True)
class HandlerSpec:
    """A handler with its stages and per-type settings."""

    job_type: str
    process: Callable[[Job], Any]
    pre_process: Callable[[Job], Any] | None = None
    post_process: Callable[[Job, Any], Any] | None = None
    max_attempts: int | None = None
    timeout_seconds: int | None = None

    def run(self, job: Job) -> list[Artifact | Rows]:
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


def normalize_result(result: Any, job_type: str) -> list[Artifact | Rows]:
    if result is None:
        return []
    if isinstance(result, Artifact | Rows):
        return [result]
    if isinstance(result, list | tuple) and all(isinstance(a, Artifact | Rows) for a in result):
        return list(result)
    raise InvalidArtifact(
        f"handler {job_type!r} returned {type(result).__name__}; "
        "return None or a list of overseer.Artifact / overseer.Rows"
    )


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
