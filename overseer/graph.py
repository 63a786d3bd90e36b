"""Graphs as plain data: parse YAML, JSON or a dict, and validate before anything is written.

A graph document::

    id: nightly-2026-11-26-company-42      # optional; generated when absent
    args: {company_id: 42}                 # given to every job
    timeout: 3600                          # optional: seconds; past it the graph is aborted
    priority: high                         # optional: high, normal (default) or low
    jobs:
      start: []                            # compact form: name (= type) -> deps
      report:                              # full form
        type: render_report
        deps: [start]
        args: {format: pdf}                # merged over the graph's args
        max_attempts: 3                    # optional, overrides the handler's
        retry_on: [requests.ConnectionError]   # optional, overrides the handler's
        timeout_seconds: 600               # optional
        pool: gpu                          # optional: the worker pool that runs it
        limit: geo_api                     # optional: a concurrency limit it holds
"""

from __future__ import annotations

import datetime as dt
import graphlib
import hashlib
import json
import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InvalidGraph, UnknownHandler
from .limits import check_name as check_limit_name
from .pools import POOL_NAME

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
MAX_ARGS_BYTES = 32 * 1024
MAX_DOCUMENT_VALUES = 2_000_000
MAX_JOBS = 200_000
MAX_DEPS_PER_JOB = 20_000
MAX_NAME_LENGTH = 128
GRAPH_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:=+@-]{0,127}$")
_FORBIDDEN_IN_NAMES = re.compile(r"[#\x00-\x1f\x7f]")
_GRAPH_KEYS = {"id", "args", "jobs", "timeout", "priority"}
# A graph's priority: within a worker pool, its ready jobs are taken before those of lower
# priority (``overseer.priority``).
PRIORITIES = ("high", "normal", "low")
_JOB_KEYS = {"type", "deps", "args", "max_attempts", "timeout_seconds", "retry_on", "pool", "limit"}
_MAX_PROBLEMS_SHOWN = 10
# A job's retry_on: at most this many exception names, each a dotted path of identifiers.
MAX_RETRY_ON = 20
_EXCEPTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,15}$")


@dataclass(frozen=True)
class JobSpec:
    name: str
    type: str
    deps: tuple[str, ...]
    args: dict[str, Any]
    max_attempts: int | None = None
    timeout_seconds: int | None = None
    retry_on: tuple[str, ...] = ()
    # The worker pool that runs it (``overseer.pools``); None: its type's route, or default.
    pool: str | None = None
    # The concurrency limit it holds while it runs (``overseer.limits``); None: its handler's.
    limit: str | None = None


@dataclass(frozen=True)
class GraphSpec:
    id: str
    args: dict[str, Any]
    jobs: dict[str, JobSpec]
    # Job names in a dependency order (every job after its dependencies).
    order: tuple[str, ...] = field(default=())
    # The graph's deadline, counted from its submission: past it, it is aborted.
    timeout_seconds: int | None = None
    priority: str = "normal"

    def dependents(self) -> dict[str, list[tuple[str, int, int]]]:
        """parent -> [(child, index of parent in child's deps, number of child's deps)]."""
        out: dict[str, list[tuple[str, int, int]]] = {name: [] for name in self.jobs}
        for job in self.jobs.values():
            for index, dep in enumerate(job.deps):
                out[dep].append((job.name, index, len(job.deps)))
        return out

    def types(self) -> set[str]:
        return {job.type for job in self.jobs.values()}


def definition_digest(spec: GraphSpec) -> str:
    body: dict[str, Any] = {
        "args": spec.args,
        "jobs": {n: [j.type, list(j.deps), j.args] for n, j in sorted(spec.jobs.items())},
    }
    if spec.timeout_seconds:
        body["timeout"] = spec.timeout_seconds
    if spec.priority != "normal":
        body["priority"] = spec.priority
    pools = {n: j.pool for n, j in spec.jobs.items() if j.pool}
    if pools:
        body["pools"] = pools
    limits = {n: j.limit for n, j in spec.jobs.items() if j.limit}
    if limits:
        body["limits"] = limits
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that rejects duplicate keys and keeps dates as strings (JSON has no dates)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise InvalidGraph(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _check_expansion(document: Any, limit: int | None = None) -> None:
    """Reject a document whose YAML aliases expand it beyond ``limit`` values ("billion
    laughs"): the walk stops at the limit, so it costs at most ``limit`` steps."""
    limit = limit or MAX_DOCUMENT_VALUES
    seen = 0
    stack = [document]
    while stack:
        value = stack.pop()
        seen += 1
        if seen > limit:
            raise InvalidGraph(
                f"graph document expands to more than {limit} values; "
                "do its YAML anchors and aliases refer to each other?"
            )
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _reject_duplicate_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidGraph(f"duplicate key {key!r}")
        result[key] = value
    return result


def load_document(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Read a graph document from a dict, a path to a .yaml/.yml/.json file, or YAML/JSON text."""
    if isinstance(source, Mapping):
        return dict(source)
    text: str
    if isinstance(source, Path) or (
        isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml", ".json"))
    ):
        path = Path(source)
        if not path.is_file():
            raise InvalidGraph(f"graph file {str(path)!r} does not exist")
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise InvalidGraph(f"graph file {str(path)!r} is larger than {MAX_DOCUMENT_BYTES} bytes")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidGraph(f"graph file {str(path)!r} is not UTF-8 text: {exc}") from exc
    else:
        text = str(source)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
        raise InvalidGraph(f"graph document is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        if text.lstrip().startswith("{"):
            document = json.loads(text, object_pairs_hook=_reject_duplicate_json_keys)
        else:
            document = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidGraph(f"graph document is not valid YAML or JSON: {exc}") from exc
    _check_expansion(document)
    if not isinstance(document, dict):
        raise InvalidGraph(
            f"graph document must be a mapping with a 'jobs' key, got {type(document).__name__}"
        )
    return document


def _json_size(value: Any, what: str, problems: list[str]) -> int:
    try:
        return len(json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        problems.append(f"{what} are not JSON: {exc}")
        return 0


def _check_name(name: Any, what: str, problems: list[str]) -> bool:
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{what} must be a non-empty string, got {name!r}")
        return False
    if len(name) > MAX_NAME_LENGTH:
        problems.append(f"{what} {name[:40]!r}... is longer than {MAX_NAME_LENGTH} characters")
        return False
    if _FORBIDDEN_IN_NAMES.search(name):
        problems.append(f"{what} {name!r} contains '#' or a control character")
        return False
    return True


def _positive_int(value: Any, what: str, problems: list[str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(f"{what} must be a positive integer, got {value!r}")
        return None
    return value


def _retry_on(value: Any, what: str, problems: list[str]) -> tuple[str, ...]:
    """A job's ``retry_on``: a list of dotted exception names (``requests.ConnectionError``)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        problems.append(f"{what} must be a list of exception names (ConnectionError), got {value!r:.80}")
        return ()
    if len(value) > MAX_RETRY_ON:
        problems.append(f"{what} lists {len(value)} exceptions; the limit is {MAX_RETRY_ON}")
        return ()
    bad = [n for n in value if not isinstance(n, str) or len(n) > 200 or not _EXCEPTION_NAME.match(n)]
    if bad:
        problems.append(
            f"{what} holds {bad[0]!r:.80}, which is not an exception name: use a builtin "
            "(ConnectionError), a class of the handlers module (FlakyError) or a dotted path "
            "(requests.ConnectionError)"
        )
        return ()
    return tuple(value)


_CHILD_SUFFIX = re.compile(r"^(.+)\.\d+$")


def _child_of(name: str, names: Mapping[str, Any]) -> str | None:
    """The job of ``names`` whose expansion's tree would hold a job named ``name``
    (``fetch.3``, ``fetch.3.0``: ``fetch``), or None."""
    while (match := _CHILD_SUFFIX.match(name)) is not None:
        name = match.group(1)
        if name in names:
            return name
    return None


def parse_graph(
    source: str | Path | Mapping[str, Any],
    *,
    handler_types: Collection[str] | None = None,
    graph_id: str | None = None,
) -> GraphSpec:
    """Parse and validate a graph document. Raises ``InvalidGraph`` naming every problem found.

    ``handler_types``, when given, are the job types the handlers module can run; a job
    whose type is not among them is rejected (``UnknownHandler``).
    """
    document = load_document(source)
    problems: list[str] = []

    unknown = set(document) - _GRAPH_KEYS
    if unknown:
        problems.append(f"unknown top-level keys {sorted(map(str, unknown))}; expected {sorted(_GRAPH_KEYS)}")

    gid = graph_id or document.get("id")
    if gid is None:
        gid = f"graph-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    elif not isinstance(gid, str) or not GRAPH_ID_PATTERN.match(gid):
        problems.append(
            f"graph id {gid!r} is invalid: use 1-128 letters, digits and ._:=+@- "
            "starting with a letter or digit"
        )

    timeout = _positive_int(document.get("timeout"), "graph timeout (seconds)", problems)
    priority = document.get("priority", "normal")
    if priority not in PRIORITIES:
        problems.append(f"graph priority must be one of {list(PRIORITIES)}, got {priority!r:.80}")
        priority = "normal"

    graph_args = document.get("args") or {}
    if not isinstance(graph_args, dict):
        problems.append(f"graph args must be a mapping, got {type(graph_args).__name__}")
        graph_args = {}
    elif _json_size(graph_args, "graph args", problems) > MAX_ARGS_BYTES:
        problems.append(f"graph args are larger than {MAX_ARGS_BYTES} bytes of JSON")

    raw_jobs = document.get("jobs")
    if raw_jobs is None or raw_jobs == {} or raw_jobs == []:
        raise InvalidGraph("graph has no jobs: add at least one under 'jobs'")
    if not isinstance(raw_jobs, dict):
        raise InvalidGraph(
            f"'jobs' must be a mapping of job name to deps or spec, got {type(raw_jobs).__name__}"
        )
    if len(raw_jobs) > MAX_JOBS:
        raise InvalidGraph(f"graph has {len(raw_jobs)} jobs; the limit is {MAX_JOBS}")

    jobs: dict[str, JobSpec] = {}
    for name, body in raw_jobs.items():
        if not _check_name(name, "job name", problems):
            continue
        job_type: Any = name
        deps: Any = body
        job_args: Any = {}
        max_attempts = job_timeout = None
        retry_on: tuple[str, ...] = ()
        pool: str | None = None
        limit: str | None = None
        if isinstance(body, dict):
            extra = set(body) - _JOB_KEYS
            if extra:
                problems.append(
                    f"job {name!r} has unknown keys {sorted(map(str, extra))}; expected {sorted(_JOB_KEYS)}"
                )
            job_type = body.get("type", name)
            deps = body.get("deps") or []
            job_args = body.get("args") or {}
            max_attempts = _positive_int(body.get("max_attempts"), f"job {name!r} max_attempts", problems)
            job_timeout = _positive_int(
                body.get("timeout_seconds"), f"job {name!r} timeout_seconds", problems
            )
            retry_on = _retry_on(body.get("retry_on"), f"job {name!r} retry_on", problems)
            pool = body.get("pool")
            if pool is not None and not (isinstance(pool, str) and POOL_NAME.match(pool)):
                problems.append(f"job {name!r} pool must be a pool name such as 'gpu', got {pool!r:.80}")
                pool = None
            limit = body.get("limit")
            if limit is not None and (problem := check_limit_name(limit, f"job {name!r} limit")):
                problems.append(problem)
                limit = None
        elif body is None:
            deps = []
        if not _check_name(job_type, f"job {name!r} type", problems):
            continue
        if isinstance(deps, str):
            deps = [deps]
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            problems.append(f"job {name!r} deps must be a list of job names, got {deps!r:.80}")
            continue
        if len(set(deps)) != len(deps):
            dupes = sorted({d for d in deps if deps.count(d) > 1}) if len(deps) < 1000 else ["..."]
            problems.append(f"job {name!r} lists a dependency more than once: {dupes}")
            continue
        if len(deps) > MAX_DEPS_PER_JOB:
            problems.append(f"job {name!r} has {len(deps)} dependencies; the limit is {MAX_DEPS_PER_JOB}")
            continue
        if not isinstance(job_args, dict):
            problems.append(f"job {name!r} args must be a mapping, got {type(job_args).__name__}")
            continue
        merged = {**graph_args, **job_args}
        if _json_size(merged, f"args of job {name!r}", problems) > MAX_ARGS_BYTES:
            problems.append(f"args of job {name!r} are larger than {MAX_ARGS_BYTES} bytes of JSON")
        jobs[name] = JobSpec(
            name, job_type, tuple(deps), merged, max_attempts, job_timeout, retry_on, pool, limit
        )

    for job in jobs.values():
        missing = [d for d in job.deps if d not in raw_jobs]
        if missing:
            problems.append(f"job {job.name!r} depends on unknown job(s) {missing[:10]}")
        owner = _child_of(job.name, raw_jobs)
        if owner is not None:
            problems.append(
                f"job name {job.name!r} is reserved for the children of job {owner!r} "
                "(an expansion names them <job>.<index>); rename it"
            )

    if handler_types is not None:
        known = set(handler_types)
        for job_type in sorted({j.type for j in jobs.values()} - known):
            users = sorted(j.name for j in jobs.values() if j.type == job_type)[:5]
            problems.append(
                f"no handler for job type {job_type!r} (used by {users}); known types: {sorted(known)[:20]}"
            )

    if problems:
        error = UnknownHandler if all(p.startswith("no handler") for p in problems) else InvalidGraph
        shown = problems[:_MAX_PROBLEMS_SHOWN]
        more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        if handler_types is not None and any(p.startswith("no handler") for p in problems):
            more += f"; the handlers module knows {sorted(handler_types)[:20]}"
        raise error("invalid graph: " + "; ".join(shown) + more)

    sorter = graphlib.TopologicalSorter({j.name: j.deps for j in jobs.values()})
    try:
        order = tuple(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        raise InvalidGraph("invalid graph: dependency cycle " + " -> ".join(map(str, cycle))) from exc
    return GraphSpec(
        id=gid, args=graph_args, jobs=jobs, order=order, timeout_seconds=timeout, priority=priority
    )
