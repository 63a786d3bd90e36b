"""Where the commands act, chosen in one place (``Target``), behind one ``Client``.

* a **local stack** (default): the embedded backend's state directory (``--state-dir``,
  default ``.overseer``, or ``OVERSEER_STATE_DIR``) that ``overseer local up`` runs. The
  commands open its SQLite file directly; no server is involved;
* a **deployed stack through its API** (``--api URL`` or ``OVERSEER_API_URL``): SigV4-signed
  requests (credentials and region from the standard AWS configuration); logs and
  artifact downloads come through the API too;
* a **deployed stack directly** (``--stack NAME`` or ``OVERSEER_STACK``): its tables, queues,
  bucket and log group, read from the CloudFormation stack's outputs, with the user's own
  AWS credentials: the same engine code as the stack's API, run here.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import click

from ..config import DEFAULT_STATE_DIR, Settings
from ..states import GraphStatus

if TYPE_CHECKING:
    from ..store import Services

# What a running ``overseer local up`` writes in its state directory (its pid, workers, pools).
STATE_FILE = "local.json"


def read_stack_info(state_dir: str | Path) -> dict[str, Any] | None:
    """What ``local.json`` says about the running stack, or None when none runs."""
    path = Path(state_dir) / STATE_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(info.get("pid", 0))
    if not pid or not pid_alive(pid):
        return None
    return info


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Client(Protocol):
    where: str

    def submit(
        self,
        document: Mapping[str, Any] | None,
        template: str | None,
        args: dict[str, Any],
        graph_id: str | None,
        priority: str | None = None,
    ) -> dict[str, Any]: ...

    def graph(self, graph_id: str) -> dict[str, Any]: ...

    def pools(self) -> dict[str, dict[str, Any]]:
        """Each worker pool's queue depth (and workers, on a local stack); {} when the
        target does not tell (the API)."""
        ...

    def jobs(
        self,
        graph_id: str,
        status: str | None = None,
        changed_since: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> dict[str, dict[str, Any]]:
        """The graph's jobs by name, in name order (in ``status``; written at or after
        ``changed_since``; at most ``limit`` of those whose names sort after ``after``)."""
        ...

    def job(self, graph_id: str, job: str) -> dict[str, Any]:
        """Everything known of one job (``operations.job_detail``)."""
        ...

    def cancel(self, graph_id: str) -> dict[str, Any]: ...

    def rerun(self, graph_id: str, job: str | None = None, downstream: bool = False) -> dict[str, Any]: ...

    def logs(self, graph_id: str, job: str, attempt: int | None) -> Iterator[tuple[int, str]]:
        """(attempt, line) of every log line of the job, oldest first."""
        ...

    def artifacts(self, graph_id: str, job: str) -> list[dict[str, Any]]:
        """The job's artifacts (bucket, key, size, sha256), each with a download ``url``: a
        presigned https URL on a deployed stack, the stored file's ``file://`` URL locally."""
        ...

    def limits(self) -> dict[str, dict[str, Any]]: ...

    def graphs(
        self, status: str | None, since: str | None, until: str | None, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...


def _graph_view(graph: Any, **extra: Any) -> dict[str, Any]:
    return {**graph.summary(), "args": graph.args, "updated_at": graph.updated_at, **extra}


class StoreClient:
    """The engine's operations on a backend's services, in this process: a local stack's
    SQLite file, or a deployed stack's tables with the user's credentials."""

    def __init__(self, services: Services, where: str) -> None:
        self.services = services
        self.where = where

    def submit(
        self,
        document: Mapping[str, Any] | None,
        template: str | None,
        args: dict[str, Any],
        graph_id: str | None,
        priority: str | None = None,
    ) -> dict[str, Any]:
        from .. import operations

        if template:
            graph, created = operations.submit_template(
                self.services, template, args, graph_id=graph_id, priority=priority
            )
        else:
            assert document is not None
            graph, created = operations.submit_graph(self.services, document, graph_id=graph_id)
        return _graph_view(graph, created=created)

    def graph(self, graph_id: str) -> dict[str, Any]:
        from .. import operations

        return _graph_view(operations.get_graph(self.services, graph_id))

    def pools(self) -> dict[str, dict[str, Any]]:
        return {pool: {"queue_depth": queue.depth()} for pool, queue in self.services.queues().items()}

    def jobs(
        self,
        graph_id: str,
        status: str | None = None,
        changed_since: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> dict[str, dict[str, Any]]:
        from .. import operations

        jobs = {}
        found = operations.list_jobs(
            self.services, graph_id, status, after=after, limit=limit, changed_since=changed_since
        )
        for job in found:
            summary = operations.job_view(self.services, job)
            if job.reason and job.error:
                summary["reason"] = job.reason
            jobs[job.name] = summary
        return jobs

    def job(self, graph_id: str, job: str) -> dict[str, Any]:
        from .. import operations

        return operations.job_detail(self.services, operations.get_job(self.services, graph_id, job))

    def graphs(
        self, status: str | None, since: str | None, until: str | None, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        wanted = GraphStatus(status) if status else None
        found, following = self.services.store.list_graphs(
            status=wanted, since=since, until=until, limit=limit, after=after
        )
        return [graph.summary() for graph in found], following

    def cancel(self, graph_id: str) -> dict[str, Any]:
        from .. import operations

        change = operations.cancel_graph(self.services, graph_id)
        return _graph_view(change.graph, jobs_aborted=change.jobs_changed)

    def rerun(self, graph_id: str, job: str | None = None, downstream: bool = False) -> dict[str, Any]:
        from .. import operations

        change = operations.rerun_graph(self.services, graph_id, job=job, downstream=downstream)
        return _graph_view(change.graph, jobs_rerun=change.jobs_changed)

    def limits(self) -> dict[str, dict[str, Any]]:
        """Each concurrency limit of the stack: size, running, holders, waiting."""
        from ..limits import limit_states, parse_limits

        states = limit_states(self.services.store, parse_limits(self.services.settings.limits))
        return {state.name: state.summary() for state in states}

    def logs(self, graph_id: str, job: str, attempt: int | None) -> Iterator[tuple[int, str]]:
        from .. import operations

        after: str | None = None
        while True:
            page = operations.job_logs(self.services, graph_id, job, attempt=attempt, after=after)
            yield from page.lines
            if not page.next:
                return
            after = page.next

    def artifacts(self, graph_id: str, job: str) -> list[dict[str, Any]]:
        from .. import operations

        return operations.job_artifacts(self.services, graph_id, job)


class LocalClient(StoreClient):
    """The embedded backend in ``state_dir`` (what ``overseer local up`` runs on)."""

    def __init__(self, state_dir: Path, templates_dir: str | None = None) -> None:
        from ..backends.embedded import embedded_services
        from ..runner import local_settings

        self.state_dir = Path(state_dir)
        # The worker pools and concurrency limits of the stack running there, if one runs (a
        # job is routed to a pool; a graph may name only the limits the stack configures).
        info = read_stack_info(self.state_dir) or {}
        pools = info.get("pools") or None
        limits = json.dumps(info["limits"]) if info.get("limits") is not None else None
        settings = local_settings(self.state_dir, templates_dir=templates_dir, pools=pools, limits=limits)
        super().__init__(embedded_services(self.state_dir, settings), f"local stack {self.state_dir}")

    def pools(self) -> dict[str, dict[str, Any]]:
        pools = super().pools()
        # Each worker pool's workers when a local stack runs here.
        workers = (read_stack_info(self.state_dir) or {}).get("worker_pools") or {}
        for pool, view in pools.items():
            if pool in workers:
                view["workers"] = workers[pool]
        return pools


class ApiClient:
    """The deployed stack's API (SigV4), logs and artifact downloads included."""

    def __init__(self, url: str) -> None:
        from .api_client import RemoteApi

        self.api = RemoteApi(url)
        self.where = f"API {url}"

    def submit(
        self,
        document: Mapping[str, Any] | None,
        template: str | None,
        args: dict[str, Any],
        graph_id: str | None,
        priority: str | None = None,
    ) -> dict[str, Any]:
        if template:
            body: dict[str, Any] = {"template": template, "args": args}
            if graph_id:
                body["id"] = graph_id
        else:
            assert document is not None
            body = {"graph": {**document, **({"id": graph_id} if graph_id else {})}}
        if priority is not None:
            body["priority"] = priority
        return self.api.submit(body)

    def graph(self, graph_id: str) -> dict[str, Any]:
        return self.api.get_graph(graph_id)

    def pools(self) -> dict[str, dict[str, Any]]:
        return {}

    def jobs(
        self,
        graph_id: str,
        status: str | None = None,
        changed_since: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> dict[str, dict[str, Any]]:
        found = self.api.iter_jobs(graph_id, status, changed_since=changed_since, after=after, limit=limit)
        return dict(found)

    def job(self, graph_id: str, job: str) -> dict[str, Any]:
        return self.api.get_job(graph_id, job)

    def cancel(self, graph_id: str) -> dict[str, Any]:
        return self.api.cancel(graph_id)

    def rerun(self, graph_id: str, job: str | None = None, downstream: bool = False) -> dict[str, Any]:
        return self.api.rerun(graph_id, job, downstream)

    def limits(self) -> dict[str, dict[str, Any]]:
        return self.api.get_limits()

    def graphs(
        self, status: str | None, since: str | None, until: str | None, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        query = {"status": status, "since": since, "until": until, "limit": str(limit), "after": after}
        answer = self.api.get_graphs({k: v for k, v in query.items() if v})
        return list(answer.get("graphs") or []), answer.get("next")

    def logs(self, graph_id: str, job: str, attempt: int | None) -> Iterator[tuple[int, str]]:
        after: str | None = None
        while True:
            page = self.api.job_logs(graph_id, job, attempt, after)
            for line in page.get("lines") or []:
                yield int(line["attempt"]), str(line["line"])
            after = page.get("next")
            if not after:
                return

    def artifacts(self, graph_id: str, job: str) -> list[dict[str, Any]]:
        return list(self.api.job_artifacts(graph_id, job).get("artifacts") or [])


# What ``--stack`` reads from the stack's outputs (``infra.stack``), and the setting it gives.
STACK_OUTPUTS = {
    "GraphsTable": "graphs_table",
    "JobsTable": "jobs_table",
    "QueueUrl": "queue_url",
    "HighQueueUrl": "high_queue_url",
    "LowQueueUrl": "low_queue_url",
    "DeadLetterQueueUrl": "dead_letter_queue_url",
    "ArtifactBucket": "artifact_bucket",
    "WorkerLogGroup": "worker_log_group",
    "Pools": "pools",
    "Limits": "limits",
}
REQUIRED_OUTPUTS = ("GraphsTable", "JobsTable", "QueueUrl", "ArtifactBucket", "WorkerLogGroup")


def stack_settings(stack: str, cloudformation: Any) -> Settings:
    """The settings of the deployed stack ``stack``: its resources' names from its outputs."""
    from botocore.exceptions import ClientError

    try:
        found = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        raise TargetError(
            f"cannot read stack {stack!r}: {exc.response['Error'].get('Message', exc)}"
        ) from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in (found[0].get("Outputs") or [])} if found else {}
    missing = [name for name in REQUIRED_OUTPUTS if name not in outputs]
    if missing:
        raise TargetError(
            f"stack {stack!r} has no output {', '.join(missing)}: is it an Overseer stack, deployed "
            "with this version (`cdk deploy`)?"
        )
    values = {STACK_OUTPUTS[name]: value for name, value in outputs.items() if name in STACK_OUTPUTS}
    return Settings.from_env(backend="aws", **values)


class StackClient(StoreClient):
    """A deployed stack, directly: its resources named by its CloudFormation outputs."""

    def __init__(self, stack: str, templates_dir: str | None = None) -> None:
        from ..backends import build_services
        from ..backends.aws import clients

        settings = stack_settings(stack, clients.client("cloudformation"))
        if templates_dir:
            settings = settings.with_(templates_dir=templates_dir)
        super().__init__(build_services(settings), f"stack {stack}")


class TargetError(click.ClickException):
    """The target cannot be used (exit 1, the reason printed)."""


@dataclass(frozen=True)
class Target:
    """Where a command acts: ``--stack`` or ``--api`` when given, else the local stack."""

    state_dir: Path = DEFAULT_STATE_DIR
    api: str | None = None
    stack: str | None = None

    def client(self, templates_dir: str | None = None) -> Client:
        if self.stack:
            return StackClient(self.stack, templates_dir)
        if self.api:
            return ApiClient(self.api)
        return LocalClient(self.state_dir, templates_dir)


def state_dir_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--state-dir",
        envvar="OVERSEER_STATE_DIR",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_STATE_DIR,
        show_default=True,
        help=help,
    )


def _parse_limit_flags(
    _ctx: click.Context, _param: click.Parameter, flags: tuple[str, ...]
) -> dict[str, int]:
    from ..limits import parse_limit_flags

    names = [flag.partition("=")[0].strip() for flag in flags]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise click.BadParameter(f"limit {twice[0]!r} is given twice")
    try:
        return parse_limit_flags(flags)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def limit_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--limit NAME=SIZE`` (repeatable), parsed into ``{name: size}`` (``overseer.limits``)."""
    return click.option(
        "--limit",
        "limits",
        multiple=True,
        metavar="NAME=SIZE",
        callback=_parse_limit_flags,
        help=help,
    )


def target_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--state-dir``, ``--api`` and ``--stack``, handed to the command as one ``target``."""

    @functools.wraps(function)
    def with_target(*args: Any, state_dir: Path, api: str | None, stack: str | None, **kwargs: Any) -> Any:
        if api and stack:
            raise click.UsageError(
                "--api and --stack name two targets: give one (check OVERSEER_API_URL and OVERSEER_STACK)"
            )
        return function(*args, target=Target(state_dir, api or None, stack or None), **kwargs)

    decorated: Callable[..., Any] = click.option(
        "--stack",
        envvar="OVERSEER_STACK",
        help="A deployed stack's CloudFormation name: its tables, queues, bucket and logs directly, "
        "with your AWS credentials.",
    )(with_target)
    decorated = click.option(
        "--api",
        envvar="OVERSEER_API_URL",
        help="The deployed stack's API URL (its ApiUrl output); default: the local stack.",
    )(decorated)
    return state_dir_option("The local stack's state directory (as given to `overseer local up`).")(decorated)
