"""What each worker pool serves and how long its workers may run, decided at synthesis.

Four checks that would otherwise show only in production:

* **the manifests**: the job types each pool's handlers module serves, listed by importing
  the module in a subprocess (``overseer.handlers.manifest``), and the routes they give
  (``overseer.pools.routes_from_manifests``). A module that cannot be imported here (it
  needs packages of its own image, such as torch) is described by its pool's ``jobTypes``.
* **the fit**: a pool's vCPUs, memory and GPUs must fit at least one of its instance types
  (``infra/instance_types.py``), or its jobs would wait in RUNNABLE for ever.
* **the timeout**: Batch stops a worker at its job definition's timeout. A worker takes
  jobs until its lifetime is over, and each may run for its handler's timeout; so the
  Batch timeout must be at least lifetime + longest job + ``GRACE_SECONDS``, or a job
  started late would be stopped (and released, and started again late...) for ever. The
  worker is told its deadline (timeout - grace) and refuses a job it could not finish by
  then.
* **the limits**: a handler spec naming a concurrency limit (``"limit": "geo_api"``) that
  cdk.json's ``limits`` does not configure would fail each of its jobs when a worker takes
  it (``UnknownLimit``). The manifests say which limit each spec names; a stack without
  pools imports its handlers module for this check alone, and only warns when it cannot.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infra.config import ConfigError, DeploymentConfig, PoolConfig
from infra.instance_types import known_types
from infra.lambda_code import REPO_ROOT
from overseer.config import Settings
from overseer.pools import routes_from_manifests

# How long the worker goes on with a running job after SIGTERM before it releases it
# (Settings.shutdown_grace_seconds; the ECS agent waits 30 s before SIGKILL).
SHUTDOWN_GRACE_SECONDS = Settings.shutdown_grace_seconds
# Batch's clock starts when the container does; the worker's own clock (lifetime,
# deadline) starts later, after Python, the engine and the handlers module are imported,
# and the release of a stopped job's lease and message takes a few calls more. 100 s
# covers both with room for a slow import.
STOP_MARGIN_SECONDS = 100
GRACE_SECONDS = SHUTDOWN_GRACE_SECONDS + STOP_MARGIN_SECONDS
# A worker without a lifetime: the timeout the stack has always had.
UNLIMITED_WORKER_TIMEOUT_SECONDS = 24 * 3600
# The longest job a pool expects when no handler of it declares a timeout.
DEFAULT_LONGEST_JOB_SECONDS = 3600

_MANIFEST_SCRIPT = (
    "import json, sys; from overseer.handlers import manifest; print(json.dumps(manifest(sys.argv[1])))"
)


class ManifestError(RuntimeError):
    """A handlers module could not be imported to list its job types."""


def handlers_manifest(module: str) -> dict[str, dict[str, Any]]:
    """``overseer.handlers.manifest(module)``, in a subprocess at the repository root: job
    type -> {"pool": the spec's pool or None, "timeout_seconds", "limit": the spec's
    concurrency limit or None}. Raises ``ManifestError`` with the import's last error line."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    result = subprocess.run(
        [sys.executable, "-c", _MANIFEST_SCRIPT, module],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise ManifestError(lines[-1] if lines else f"exit status {result.returncode}")
    manifest: dict[str, dict[str, Any]] = json.loads(result.stdout.strip().splitlines()[-1])
    return manifest


@dataclass(frozen=True)
class PoolPlan:
    """One pool as the stack builds it."""

    config: PoolConfig
    # The job types it serves (None: not listed, when the stack has no `pools`).
    types: frozenset[str] | None
    longest_job_seconds: int
    batch_timeout_seconds: int

    @property
    def deadline_seconds(self) -> int:
        """Seconds after its start by which a worker must have finished its jobs."""
        return self.batch_timeout_seconds - GRACE_SECONDS


@dataclass(frozen=True)
class WorkerPlan:
    """Every pool (the default first), the routes of job types, and warnings for the
    synthesis output."""

    pools: Mapping[str, PoolPlan]
    routes: Mapping[str, str]
    # Pools whose instance types are not in infra/instance_types.py.
    warnings: tuple[str, ...] = ()
    # The handler specs' concurrency limits could not be checked (their module cannot be
    # imported at synthesis).
    limits_warning: str | None = None


def plan_pools(config: DeploymentConfig) -> WorkerPlan:
    """The plan of ``config``'s pools. Raises ``ConfigError`` naming the pool and what to
    change when a module cannot be listed, a handler names a pool that cannot run it or a
    concurrency limit the stack does not configure, a pool fits none of its instance types,
    or its Batch timeout is too short."""
    warnings = [w for pool in config.pools.values() if (w := check_fit(pool)) is not None]
    manifests = _manifests(config) if config.pools_declared else {}
    if config.pools_declared:
        check_limits(config, manifests)
        limits_warning = None
    else:
        limits_warning = _check_default_limits(config)
    try:
        routes = routes_from_manifests(
            {name: {t: spec.get("pool") for t, spec in types.items()} for name, types in manifests.items()}
        )
    except ValueError as exc:
        raise ConfigError(f"pools: {exc}") from None
    plans = {}
    for name, pool in config.pools.items():
        manifest = manifests.get(name)
        timeouts = [
            math.ceil(spec["timeout_seconds"])
            for spec in (manifest or {}).values()
            if spec.get("timeout_seconds")
        ]
        longest = pool.longest_job_seconds or max(timeouts, default=DEFAULT_LONGEST_JOB_SECONDS)
        plans[name] = PoolPlan(
            config=pool,
            types=frozenset(manifest) if manifest is not None else None,
            longest_job_seconds=longest,
            batch_timeout_seconds=batch_timeout(pool, longest),
        )
    return WorkerPlan(plans, routes, tuple(warnings), limits_warning)


def _manifests(config: DeploymentConfig) -> dict[str, dict[str, dict[str, Any]]]:
    """Pool -> its manifest: its ``jobTypes``, else its module's (one import per module)."""
    by_module: dict[str, dict[str, dict[str, Any]] | ManifestError] = {}
    manifests = {}
    for name, pool in config.pools.items():
        if pool.job_types is not None:
            manifests[name] = {t: {"pool": None, "timeout_seconds": None} for t in pool.job_types}
            continue
        module = pool.handlers_module
        if module not in by_module:
            try:
                by_module[module] = handlers_manifest(module)
            except ManifestError as exc:
                by_module[module] = exc
        found = by_module[module]
        if isinstance(found, ManifestError):
            raise ConfigError(
                f"{pool.where}: cannot import handlers module {module!r} at synthesis to list its job "
                f"types ({found}); if it needs packages only its image has, list the types it "
                f"serves in {pool.where}.jobTypes"
            )
        manifests[name] = found
    return manifests


def check_limits(config: DeploymentConfig, manifests: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
    """Raise ``ConfigError`` naming the handler, its pool, the limit and the configured ones
    when a handler spec of a pool's manifest names a concurrency limit that
    ``config.limits`` does not configure."""
    holders = [
        (job_type, config.pools[pool], spec["limit"])
        for pool, manifest in manifests.items()
        for job_type, spec in manifest.items()
        if spec.get("limit") and spec["limit"] not in config.limits
    ]
    if not holders:
        return
    missing = sorted({limit for _, _, limit in holders})
    which = "; ".join(
        f"handler {job_type!r} of {pool.where} ({pool.handlers_module}) holds the concurrency limit {limit!r}"
        for job_type, pool, limit in holders
    )
    example = json.dumps({limit: 5 for limit in missing})
    raise ConfigError(
        f"limits: {which}, not configured in cdk.json 'limits' (configured: "
        f"{sorted(config.limits) or 'none'}): add {'it' if len(missing) == 1 else 'them'} with a size, "
        f'e.g. "limits": {example}, or take it out of the handler spec; otherwise each of its jobs '
        "fails when a worker takes it"
    )


def _check_default_limits(config: DeploymentConfig) -> str | None:
    """``check_limits`` for a stack without pools: its handlers module is imported for this
    alone, so one that cannot be imported here gives a warning rather than an error."""
    pool = config.default_pool
    try:
        manifest = handlers_manifest(pool.handlers_module)
    except ManifestError as exc:
        return (
            f"cannot import handlers module {pool.handlers_module!r} at synthesis ({exc}): the "
            "concurrency limits its handler specs name are not checked against cdk.json 'limits'"
        )
    check_limits(config, {pool.name: manifest})
    return None


def batch_timeout(pool: PoolConfig, longest_job_seconds: int) -> int:
    """The pool's Batch job timeout: ``batchTimeoutSeconds``, else lifetime + longest job +
    grace (24 h for a worker without a lifetime, unless its longest job needs more).
    Raises ``ConfigError`` when a given timeout is shorter than that."""
    needed = pool.worker_lifetime_seconds + longest_job_seconds + GRACE_SECONDS
    if pool.batch_timeout_seconds is None:
        if pool.worker_lifetime_seconds:
            return needed
        return max(UNLIMITED_WORKER_TIMEOUT_SECONDS, needed)
    if pool.batch_timeout_seconds < needed:
        raise ConfigError(
            f"{pool.where}.batchTimeoutSeconds is {pool.batch_timeout_seconds} s, less than the "
            f"worker lifetime ({pool.worker_lifetime_seconds} s) + the longest job "
            f"({longest_job_seconds} s) + the grace ({GRACE_SECONDS} s) = {needed} s: a job taken "
            "late in a worker's life would be stopped before it ends, again and again; raise "
            "batchTimeoutSeconds, or lower workerLifetimeSeconds or longestJobSeconds"
        )
    return pool.batch_timeout_seconds


def check_fit(pool: PoolConfig) -> str | None:
    """Raise ``ConfigError`` when the pool's vCPUs, memory and GPUs fit none of its instance
    types; return a warning when none of them is known to ``infra/instance_types.py``."""
    known, unknown = known_types(pool.instance_types)
    if any(t.fits(pool.vcpus, pool.memory_mib, pool.gpus) for t in known):
        return None
    if unknown:
        return (
            f"{pool.where}: {_asked(pool)} fit none of {[t.name for t in known]} and "
            f"{unknown} are not in infra/instance_types.py: not checked"
            if known
            else f"{pool.where}: its instance types {unknown} are not in infra/instance_types.py: "
            f"{_asked(pool)} not checked against them"
        )
    raise ConfigError(
        f"{pool.where}: {_asked(pool)} fit none of its instance types after the ECS agent's "
        f"reservation ({'; '.join(t.describe() for t in known)}); choose a larger type or ask for less"
    )


def _asked(pool: PoolConfig) -> str:
    if pool.gpus:
        return f"{pool.vcpus} vCPUs, {pool.memory_mib} MiB and {pool.gpus} GPU{'s' if pool.gpus > 1 else ''}"
    return f"{pool.vcpus} vCPUs and {pool.memory_mib} MiB"
