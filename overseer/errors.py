"""One exception tree for the engine. Messages say what was wrong and what to do."""

from __future__ import annotations

# Exit codes of the command line: 0 done (a graph finished), 1 not (failed, aborted, an
# error), 2 invalid input (nothing was done).
EXIT_FAILED = 1
EXIT_INVALID = 2


class OverseerError(Exception):
    """Base of every error the engine raises on purpose."""


class InvalidGraph(OverseerError):
    """The graph document is malformed or breaks a rule; nothing was written."""


class UnknownHandler(InvalidGraph):
    """A job type has no handler in the handlers module."""


class HandlersModuleError(OverseerError):
    """The handlers module cannot be imported or has no usable ``HANDLERS``."""


class InvalidArtifact(OverseerError):
    """A handler returned an artifact that cannot be persisted (checked before any upload)."""


class InvalidExpansion(InvalidArtifact):
    """A handler returned an ``Expand`` that cannot be committed (too many or too large
    items, an unknown type, child names over the limit); nothing of it was stored."""


class TemplateError(OverseerError):
    """A graph template cannot be found or rendered; nothing was written."""


class UnknownTemplate(TemplateError):
    """No template has this name."""


class InvalidTriggerEvent(OverseerError):
    """A trigger event names no template, or its args are not an object."""


class StoreError(OverseerError):
    """The job store, queue or artifact store failed in a way the caller cannot fix."""


class StreamRecordsGone(StoreError):
    """A failed stream batch can no longer be read again: past the stream's retention
    (24 hours on DynamoDB), its shard is gone, or some of its records are."""


class GraphNotFound(OverseerError):
    """No graph has this id."""


class RerunRefused(OverseerError):
    """A job to rerun is running: nothing was changed."""


class HandlerCrashed(OverseerError):
    """The handler's process died or overran its time: the job is faulted (tried again)."""


class RemoteHandlerError(Exception):
    """An exception raised by the handler in the child process (type name kept for the job).
    ``retryable``: the child matched it against the job's ``retry_on``."""

    def __init__(self, type_name: str, message: str, traceback_text: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text
        self.retryable = retryable


class SweepFailed(OverseerError):
    """One or more sweep steps raised (the others ran); the log has each traceback."""


class StackAlreadyRunning(OverseerError):
    """Another ``overseer local up`` holds the state directory."""


class ApiError(OverseerError):
    """The API answered with an error status (``status``) or could not be reached (0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})" if status else message)
        self.status = status
        self.message = message


class GraphvizMissing(OverseerError):
    """Graphviz's ``dot`` is not installed: no PNG (Mermaid and DOT text still work)."""


class JobSignal(Exception):
    """Raised by handler code to end a job early with a known outcome."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class AbortJob(JobSignal):
    """``abort()``: stop this job and abort every job that depends on it."""


class FaultJob(JobSignal):
    """``fault()``: a transient problem; try this job again later, with backoff."""


def abort(message: str = "aborted by handler") -> None:
    """Stop the running job and all its descendants. Never returns."""
    raise AbortJob(message)


def fault(message: str = "transient fault") -> None:
    """Mark a transient problem: the job is tried again later (up to its max attempts)."""
    raise FaultJob(message)
