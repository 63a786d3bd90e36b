"""Where the commands act: a local stack or the deployed stack, behind one ``Client``.

* a **local stack** (default): the embedded backend's state directory (``--state-dir``,
  default ``.overseer``, or ``OVERSEER_STATE_DIR``) that ``overseer local up`` runs. The
  commands open its SQLite file directly; no server is involved;
* the **deployed stack** with ``--api URL`` (or ``OVERSEER_API_URL``): its REST API, with
  SigV4-signed requests (credentials and region from the standard AWS configuration).
  ``overseer logs --api`` reads the worker's CloudWatch Logs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, Protocol

import click

from ..config import DEFAULT_STATE_DIR, Settings, logs_dir
from ..errors import GraphNotFound
from ..states import GraphStatus

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

    def jobs(self, graph_id: str, status: str | None = None) -> dict[str, dict[str, Any]]: ...

    def cancel(self, graph_id: str) -> dict[str, Any]: ...

    def rerun(self, graph_id: str, job: str | None = None, downstream: bool = False) -> dict[str, Any]: ...

    def logs(self, graph_id: str, job: str, attempt: int | None) -> Iterator[tuple[str, list[str]]]: ...

    def limits(self) -> dict[str, dict[str, Any]]: ...

    def graphs(
        self, status: str | None, since: str | None, until: str | None, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...


def _graph_view(graph: Any, **extra: Any) -> dict[str, Any]:
    return {**graph.summary(), "args": graph.args, "updated_at": graph.updated_at, **extra}


class LocalClient:
    """The embedded backend in ``state_dir`` (what ``overseer local up`` runs on)."""

    def __init__(self, state_dir: Path, templates_dir: str | None = None) -> None:
        from ..backends.embedded import embedded_services
        from ..runner import local_settings

        self.state_dir = Path(state_dir)
        self.where = f"local stack {self.state_dir}"
        # The worker pools and concurrency limits of the stack running there, if one runs (a
        # job is routed to a pool; a graph may name only the limits the stack configures).
        info = read_stack_info(self.state_dir) or {}
        pools = info.get("pools") or None
        limits = json.dumps(info["limits"]) if info.get("limits") is not None else None
        settings = local_settings(self.state_dir, templates_dir=templates_dir, pools=pools, limits=limits)
        self.services = embedded_services(self.state_dir, settings)

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

        graph = _graph_view(operations.get_graph(self.services, graph_id))
        # Each worker pool's queue depth, and its workers when a local stack runs here.
        workers = (read_stack_info(self.state_dir) or {}).get("worker_pools") or {}
        graph["pools"] = {
            pool: {"queue_depth": queue.depth(), **({"workers": workers[pool]} if pool in workers else {})}
            for pool, queue in self.services.queues().items()
        }
        return graph

    def jobs(self, graph_id: str, status: str | None = None) -> dict[str, dict[str, Any]]:
        from .. import operations

        jobs = {}
        for job in operations.list_jobs(self.services, graph_id, status):
            summary = operations.job_view(self.services, job)
            if job.reason and job.error:
                summary["reason"] = job.reason
            jobs[job.name] = summary
        return jobs

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

    def logs(self, graph_id: str, job: str, attempt: int | None) -> Iterator[tuple[str, list[str]]]:
        from ..isolation import job_log_path

        self.services.store.get_job(graph_id, job) or _unknown_job(graph_id, job)
        first = job_log_path(logs_dir(self.state_dir), graph_id, job, 1)
        found: list[tuple[int, Path]] = []
        for path in first.parent.glob(first.name[: -len(".1.log")] + ".*.log"):
            suffix = path.name[: -len(".log")].rsplit(".", 1)[-1]
            if suffix.isdigit() and (attempt is None or int(suffix) == attempt):
                found.append((int(suffix), path))
        for number, path in sorted(found):
            yield f"attempt {number}: {path}", path.read_text(errors="replace").splitlines()


def _unknown_job(graph_id: str, job: str) -> NoReturn:
    raise GraphNotFound(f"graph {graph_id!r} has no job {job!r}")


class ApiClient:
    """The deployed stack's API (SigV4); logs from CloudWatch Logs."""

    def __init__(self, url: str, log_group: str | None = None) -> None:
        from .api_client import RemoteApi

        self.api = RemoteApi(url)
        self.where = f"API {url}"
        self.log_group = log_group or Settings.from_env().worker_log_group

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

    def jobs(self, graph_id: str, status: str | None = None) -> dict[str, dict[str, Any]]:
        return self.api.list_jobs(graph_id, status)

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

    def logs(self, graph_id: str, job: str, attempt: int | None) -> Iterator[tuple[str, list[str]]]:
        from .api_client import job_log_lines

        logs = self.api.session.client("logs", region_name=self.api.region)
        lines = list(job_log_lines(logs, graph_id, job, log_group=self.log_group, attempt=attempt))
        yield f"CloudWatch Logs {self.log_group}", lines


def make_client(state_dir: Path, api: str | None, templates_dir: str | None = None) -> Client:
    if api:
        return ApiClient(api)
    return LocalClient(state_dir, templates_dir)


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
    function = click.option(
        "--api",
        envvar="OVERSEER_API_URL",
        help="The deployed stack's API URL (its ApiUrl output); default: the local stack.",
    )(function)
    return state_dir_option("The local stack's state directory (as given to `overseer local up`).")(function)
