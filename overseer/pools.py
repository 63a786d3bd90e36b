"""Worker pools: which workers (machines) run which jobs.

A pool is a set of workers of one shape (vCPUs, memory, GPUs, image, role) taking jobs
from a dispatch queue of its own. The pool ``default`` always exists; a stack or a local
run without pools has only it, and behaves as before pools existed.

A job's pool is decided once, at submission, and stored on the job:

1. the job's ``pool:`` in the graph, else
2. its type's route: the ``pool`` its handler spec names, else the one pool whose handlers
   serve the type (the default pool when it is among several), else
3. the default pool.

An unknown pool, a pool that does not serve the job's type, or (when every pool's types
are known) a type no pool serves is a validation error naming the pools.

How a process knows the pools: ``Settings.pools`` (``OVERSEER_POOLS``), JSON written by the
stack (``infra``) or by a local run::

    {"pools": {"gpu": {"queue_url": "...", "dead_letter_queue_url": "...",
                       "batch_job_queue": "...", "batch_job_definition": "...",
                       "max_workers": 4, "backlog_per_worker": 5, "types": ["train"]}},
     "routes": {"train": "gpu"}}

The default pool's queue, dead-letter queue, Batch names and scaling are the top-level
settings (``queue_url``, ``batch_job_queue``, ``max_workers``, ``jobs_per_worker``...)
unless its own entry gives them. A pool's ``types`` (its manifest: the job types its
handlers serve, listed at synthesis or by the local run) is absent when not known: the pool
then takes whatever is routed to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import InvalidGraph

if TYPE_CHECKING:
    from .config import Settings
    from .graph import GraphSpec

DEFAULT_POOL = "default"
# A pool name: it becomes part of queue names, construct ids and CLI flags.
POOL_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


@dataclass(frozen=True)
class Pool:
    """One pool as the engine sees it: where its jobs go and how its workers scale."""

    name: str
    queue_url: str = ""
    dead_letter_queue_url: str = ""
    # Its queues of high- and low-priority jobs ("": they go to ``queue_url``).
    high_queue_url: str = ""
    low_queue_url: str = ""
    batch_job_queue: str = ""
    batch_job_definition: str = ""
    # The most workers at once, and queued jobs per running worker before another starts.
    max_workers: int = 16
    backlog_per_worker: int = 50
    # The job types its handlers serve (None: not known, it takes what is routed to it).
    types: frozenset[str] | None = None

    def serves(self, job_type: str) -> bool:
        return self.types is None or job_type in self.types

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            key: value
            for key, value in (
                ("queue_url", self.queue_url),
                ("dead_letter_queue_url", self.dead_letter_queue_url),
                ("high_queue_url", self.high_queue_url),
                ("low_queue_url", self.low_queue_url),
                ("batch_job_queue", self.batch_job_queue),
                ("batch_job_definition", self.batch_job_definition),
            )
            if value
        }
        out.update(max_workers=self.max_workers, backlog_per_worker=self.backlog_per_worker)
        if self.types is not None:
            out["types"] = sorted(self.types)
        return out


@dataclass(frozen=True)
class Pools:
    """Every pool of a stack or run (``default`` first) and the routes of job types."""

    pools: Mapping[str, Pool]
    routes: Mapping[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.pools)

    @property
    def default(self) -> Pool:
        return self.pools[DEFAULT_POOL]

    def __getitem__(self, name: str) -> Pool:
        return self.pools[name]

    def __contains__(self, name: object) -> bool:
        return name in self.pools

    @classmethod
    def from_settings(cls, settings: Settings) -> Pools:
        """The pools ``settings.pools`` describes, the default pool completed from the
        top-level settings. Raises ``ValueError`` naming what is wrong."""
        default = Pool(
            DEFAULT_POOL,
            queue_url=settings.queue_url,
            dead_letter_queue_url=settings.dead_letter_queue_url,
            high_queue_url=settings.high_queue_url,
            low_queue_url=settings.low_queue_url,
            batch_job_queue=settings.batch_job_queue,
            batch_job_definition=settings.batch_job_definition,
            max_workers=settings.max_workers,
            backlog_per_worker=settings.jobs_per_worker,
        )
        if not settings.pools:
            return cls({DEFAULT_POOL: default})
        try:
            document = json.loads(settings.pools)
        except ValueError as exc:
            raise ValueError(f"OVERSEER_POOLS is not JSON: {exc}") from None
        if not isinstance(document, Mapping) or not isinstance(document.get("pools", {}), Mapping):
            raise ValueError('OVERSEER_POOLS must be {"pools": {name: {...}}, "routes": {type: pool}}')
        pools = {DEFAULT_POOL: default}
        for name, raw in document.get("pools", {}).items():
            if not isinstance(raw, Mapping):
                raise ValueError(f"OVERSEER_POOLS: pool {name!r} must be an object")
            base = pools.get(name, Pool(name))
            pools[name] = _pool(base, raw)
        for name in pools:
            if not POOL_NAME.match(name):
                raise ValueError(f"pool name {name!r}: use 1-32 lower-case letters, digits and -")
        routes = {str(t): str(p) for t, p in (document.get("routes") or {}).items()}
        stray = sorted({p for p in routes.values() if p not in pools})
        if stray:
            raise ValueError(f"OVERSEER_POOLS routes name unknown pools {stray}; pools: {list(pools)}")
        return cls(pools, routes)

    def to_json(self) -> str:
        """What ``from_settings`` reads back (``Settings.pools``)."""
        return json.dumps(
            {
                "pools": {name: pool.to_json() for name, pool in self.pools.items()},
                "routes": dict(self.routes),
            }
        )

    @classmethod
    def local(cls, names: Iterable[str], handler_pools: Mapping[str, str | None] | None = None) -> Pools:
        """The pools of a local run: ``names`` (with ``default``), all served by the one
        handlers module, whose specs' ``pool`` keys (``handler_pools``: type -> pool or
        None) are the routes."""
        ordered = [DEFAULT_POOL, *(n for n in names if n != DEFAULT_POOL)]
        for name in ordered:
            if not POOL_NAME.match(name):
                raise ValueError(f"pool name {name!r}: use 1-32 lower-case letters, digits and -")
        types = frozenset(handler_pools) if handler_pools is not None else None
        routes = {t: p for t, p in (handler_pools or {}).items() if p and p != DEFAULT_POOL}
        return cls({name: Pool(name, types=types) for name in ordered}, routes)

    def route(self, job_type: str, requested: str | None = None) -> str:
        """The pool of a job of ``job_type`` (``requested``: the graph's ``pool:``).
        Raises ``InvalidGraph`` naming the pools when none can run it."""
        problem = self.problem(job_type, requested)
        if problem:
            raise InvalidGraph(f"invalid graph: {problem}")
        return requested or self.routes.get(job_type) or self._serving(job_type) or DEFAULT_POOL

    def problem(self, job_type: str, requested: str | None, job: str | None = None) -> str | None:
        """Why a job of ``job_type`` cannot run where it asks to, or None."""
        who = f"job {job!r}" if job else f"job type {job_type!r}"
        if requested is not None:
            if requested not in self.pools:
                return f"{who} asks for pool {requested!r}, which does not exist; pools: {self.names}"
            if not self.pools[requested].serves(job_type):
                return (
                    f"{who} asks for pool {requested!r}, whose handlers do not serve type "
                    f"{job_type!r}; pools serving it: {self.serving(job_type) or 'none'}"
                )
            return None
        routed = self.routes.get(job_type)
        if routed is not None and routed not in self.pools:
            return (
                f"{who} runs on pool {routed!r} (its handler's), which has no workers here; "
                f"pools: {self.names}"
            )
        if routed is not None or self._serving(job_type) is not None:
            return None
        if all(pool.types is not None for pool in self.pools.values()):
            return f"{who}: no pool serves job type {job_type!r}; pools: {self.names}"
        return None

    def serving(self, job_type: str) -> list[str]:
        """The pools whose handlers serve ``job_type`` (known or possibly)."""
        return [name for name, pool in self.pools.items() if pool.serves(job_type)]

    def _serving(self, job_type: str) -> str | None:
        """The pool a type without a route goes to: the default pool when it may serve it,
        else the one pool known to serve it."""
        if self.default.serves(job_type):
            return DEFAULT_POOL
        known = [
            name for name, pool in self.pools.items() if pool.types is not None and job_type in pool.types
        ]
        return known[0] if len(known) == 1 else None

    def assign(self, spec: GraphSpec) -> GraphSpec:
        """``spec`` with every job's pool decided (``JobSpec.pool``; None for the default
        pool, which is not stored). Raises ``InvalidGraph`` naming every job that cannot run."""
        problems = [
            problem
            for job in spec.jobs.values()
            if (problem := self.problem(job.type, job.pool, job.name)) is not None
        ]
        if problems:
            shown = problems[:10]
            more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
            raise InvalidGraph("invalid graph: " + "; ".join(shown) + more)
        jobs = {}
        for name, job in spec.jobs.items():
            pool = self.route(job.type, job.pool)
            jobs[name] = replace(job, pool=None if pool == DEFAULT_POOL else pool)
        return replace(spec, jobs=jobs)


def routes_from_manifests(manifests: Mapping[str, Mapping[str, str | None]]) -> dict[str, str]:
    """The routes of job types, from each pool's manifest (pool -> {type: the ``pool`` its
    handler spec names, or None}). Raises ``ValueError`` naming the conflict when a spec
    names a pool that does not serve its type, or a type is served by several pools, none
    the default and none named by its spec."""
    routes: dict[str, str] = {}
    served: dict[str, list[str]] = {}
    for pool, types in manifests.items():
        for job_type, named in types.items():
            served.setdefault(job_type, []).append(pool)
            if named is None:
                continue
            if named not in manifests:
                raise ValueError(
                    f"handler {job_type!r} names pool {named!r}, which does not exist; "
                    f"pools: {list(manifests)}"
                )
            if job_type not in manifests[named]:
                raise ValueError(f"handler {job_type!r} names pool {named!r}, whose handlers do not serve it")
            if routes.get(job_type, named) != named:
                raise ValueError(
                    f"handler {job_type!r} names pools {routes[job_type]!r} and {named!r} "
                    "in different modules"
                )
            routes[job_type] = named
    for job_type, pools in served.items():
        if job_type in routes or DEFAULT_POOL in pools:
            continue
        if len(pools) > 1:
            raise ValueError(
                f"job type {job_type!r} is served by pools {pools}: name one with the handler "
                f"spec's 'pool' key, or serve it from one pool only"
            )
        routes[job_type] = pools[0]
    return routes


def _pool(base: Pool, raw: Mapping[str, Any]) -> Pool:
    known = {"queue_url", "dead_letter_queue_url", "high_queue_url", "low_queue_url",
             "batch_job_queue", "batch_job_definition", "max_workers", "backlog_per_worker",
             "types"}  # fmt: skip
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"OVERSEER_POOLS: pool {base.name!r} has unknown keys {unknown}")
    texts = ("queue_url", "dead_letter_queue_url", "high_queue_url", "low_queue_url",
             "batch_job_queue", "batch_job_definition")  # fmt: skip
    changes: dict[str, Any] = {key: str(raw[key]) for key in texts if raw.get(key)}
    for key in ("max_workers", "backlog_per_worker"):
        if raw.get(key) is not None:
            changes[key] = int(raw[key])
    if raw.get("types") is not None:
        changes["types"] = frozenset(str(t) for t in raw["types"])
    return replace(base, **changes)


def parse_worker_counts(text: str) -> dict[str, int]:
    """``--workers``: a number (the default pool's workers) or ``default=4,gpu=1``.
    Raises ``ValueError`` saying what is expected."""
    text = text.strip()
    if text.isdigit():
        counts = {DEFAULT_POOL: int(text)}
    else:
        counts = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, number = part.partition("=")
            name = name.strip()
            if not sep or not number.strip().isdigit() or not POOL_NAME.match(name):
                raise ValueError(
                    f"--workers: expected a number or POOL=N,... such as default=4,gpu=1, got {text!r}"
                )
            if name in counts:
                raise ValueError(f"--workers: pool {name!r} is given twice")
            counts[name] = int(number)
    if not counts or sum(counts.values()) < 1:
        raise ValueError(f"--workers: at least one worker is needed, got {text!r}")
    if any(n > 64 for n in counts.values()):
        raise ValueError(f"--workers: at most 64 workers per pool, got {text!r}")
    return counts


def plan_local_run(
    spec: GraphSpec, counts: Mapping[str, int], handler_pools: Mapping[str, str | None]
) -> tuple[Pools, GraphSpec]:
    """The pools of a local run with ``counts`` workers per pool, and ``spec`` with each job's
    pool decided. Raises ``InvalidGraph`` naming the pools when a job's pool has no workers."""
    pools = Pools.local(counts, handler_pools)
    routed = pools.assign(spec)
    idle = [
        f"job {job.name!r} runs on pool {job.pool or DEFAULT_POOL!r}"
        for job in routed.jobs.values()
        if not counts.get(job.pool or DEFAULT_POOL)
    ]
    if idle:
        given = ",".join(f"{name}={number}" for name, number in counts.items())
        more = f" (and {len(idle) - 5} more)" if len(idle) > 5 else ""
        raise InvalidGraph(
            f"invalid graph: {'; '.join(idle[:5])}{more}, which has no workers in this run "
            f"(--workers {given}); give it workers, e.g. --workers default=4,gpu=1"
        )
    return pools, routed
