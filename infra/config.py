"""Deployment settings: the one place that reads the CDK context (``cdk.json``).

Every key has a default here, so the stack synthesises with an empty context; ``cdk.json``
repeats the defaults so they are visible and editable, and ``cdk deploy -c key=value``
overrides one. docs/deploy.md documents each key.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from constructs import Node

from overseer.limits import parse_limits
from overseer.pools import DEFAULT_POOL, POOL_NAME


class ConfigError(ValueError):
    """A context value that cannot be used; the message names the key and what is expected."""


@dataclass(frozen=True)
class Trigger:
    """An EventBridge rule that starts a named graph template.

    Exactly one of ``schedule`` (an EventBridge ``cron(...)`` or ``rate(...)`` expression)
    and ``event_pattern`` (an EventBridge event pattern) is set. ``args`` is one argument
    object (one graph per firing) or a list of them (one graph per item per firing, e.g.
    one report graph per company).

    ``event_args`` (``eventArgs``: arg -> a path in the event such as ``$.detail.object.key``)
    are read from the event into the graph's args; ``graph_id_from`` (``graphIdFrom``:
    ``event``, the event's id, or the name of an arg) ends each graph id. An event-pattern
    trigger passes the event's whole detail (``{"detail": "$.detail"}``) and ends its graph
    ids with the event's id unless it says otherwise (``"graphIdFrom": ""`` for none).
    """

    name: str
    template: str
    schedule: str | None = None
    event_pattern: Mapping[str, Any] | None = None
    args: tuple[Mapping[str, Any], ...] = ({},)
    description: str = ""
    event_args: Mapping[str, str] = field(default_factory=dict)
    graph_id_from: str = ""

    @classmethod
    def from_context(cls, raw: Mapping[str, Any]) -> Trigger:
        name = raw.get("name")
        if not name or not isinstance(name, str):
            raise ConfigError(f"triggers: every trigger needs a string 'name', got {raw!r}")
        template = raw.get("template")
        if not template or not isinstance(template, str):
            raise ConfigError(f"triggers[{name}]: 'template' (a graph template name) is required")
        schedule = raw.get("schedule")
        pattern = raw.get("eventPattern")
        if (schedule is None) == (pattern is None):
            raise ConfigError(
                f"triggers[{name}]: set exactly one of 'schedule' (cron(...) / rate(...)) and 'eventPattern'"
            )
        if schedule is not None and not (
            isinstance(schedule, str) and schedule.startswith(("cron(", "rate("))
        ):
            raise ConfigError(
                f"triggers[{name}]: 'schedule' must be an EventBridge expression such as "
                f"'cron(0 2 * * ? *)' or 'rate(1 hour)', got {schedule!r}"
            )
        if pattern is not None and not isinstance(pattern, Mapping):
            raise ConfigError(f"triggers[{name}]: 'eventPattern' must be an object")
        args = raw.get("args", {})
        if isinstance(args, Mapping):
            args_list: tuple[Mapping[str, Any], ...] = (args,)
        elif isinstance(args, Sequence) and args and all(isinstance(a, Mapping) for a in args):
            args_list = tuple(args)
        else:
            raise ConfigError(f"triggers[{name}]: 'args' must be an object or a non-empty list of objects")
        default_args = {"detail": "$.detail"} if pattern is not None else {}
        event_args = raw.get("eventArgs", default_args)
        if not isinstance(event_args, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"\$(\.[A-Za-z0-9_-]+)+", v)
            for k, v in event_args.items()
        ):
            raise ConfigError(
                f"triggers[{name}]: 'eventArgs' maps arg names to paths in the event such as "
                f"'$.detail.object.key', got {event_args!r}"
            )
        id_from = raw.get("graphIdFrom", "event" if pattern is not None else "")
        known = {"event", "", *event_args, *(k for a in args_list for k in a)}
        if not isinstance(id_from, str) or id_from not in known:
            raise ConfigError(
                f"triggers[{name}]: 'graphIdFrom' is 'event' (the event's id), '' (nothing) or one "
                f"of its args {sorted(known - {'event', ''})}, got {id_from!r}"
            )
        return cls(
            name=name,
            template=template,
            schedule=schedule,
            event_pattern=pattern,
            args=args_list,
            description=str(raw.get("description", "")),
            event_args=dict(event_args),
            graph_id_from=id_from,
        )


@dataclass(frozen=True)
class WorkerPolicy:
    """An extra IAM statement for the worker role (``workerPolicies``): Allow ``actions`` on
    ``resources``."""

    actions: tuple[str, ...]
    resources: tuple[str, ...]

    @classmethod
    def from_context(cls, raw: Any, key: str = "workerPolicies") -> WorkerPolicy:
        if not isinstance(raw, Mapping) or set(raw) != {"actions", "resources"}:
            raise ConfigError(f'{key}: every entry is {{"actions": [...], "resources": [...]}}, got {raw!r}')
        actions, resources = raw["actions"], raw["resources"]
        if not _strings(actions) or not all(re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9*]+", a) for a in actions):
            raise ConfigError(f"{key}: 'actions' must be IAM actions such as 's3:GetObject', got {actions!r}")
        if not _strings(resources) or not all(r == "*" or r.startswith("arn:") for r in resources):
            raise ConfigError(f"{key}: 'resources' must be ARNs (or '*'), got {resources!r}")
        return cls(tuple(actions), tuple(resources))


@dataclass(frozen=True)
class EgressRule:
    """Outbound traffic the workers' security group allows besides HTTPS (``workerEgress``)."""

    cidr: str
    port: int

    @classmethod
    def from_context(cls, raw: Any) -> EgressRule:
        if not isinstance(raw, Mapping) or set(raw) != {"cidr", "port"}:
            raise ConfigError(
                f'workerEgress: every entry is {{"cidr": "10.0.0.0/8", "port": 5432}}, got {raw!r}'
            )
        try:
            cidr = str(ipaddress.ip_network(str(raw["cidr"])))
        except ValueError:
            raise ConfigError(f"workerEgress: 'cidr' must be a CIDR block, got {raw['cidr']!r}") from None
        port = raw["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigError(f"workerEgress: 'port' must be a TCP port (1-65535), got {port!r}")
        return cls(cidr, port)


_SECRET_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[\w/+=.@-]+-[A-Za-z0-9]{6}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")


def _strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


def _json_object(key: str, value: Any) -> Any:
    """``value``, parsed when it is a JSON text (``-c key='{...}'`` on the command line)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ConfigError(f"context '{key}' must be a JSON object, got {value!r}") from None
    return value


def _worker_secrets(value: Any, key: str = "workerSecrets") -> dict[str, str]:
    value = _json_object(key, value)  # -c workerSecrets='{"DB_PASSWORD": "arn:..."}'
    if not isinstance(value, Mapping):
        raise ConfigError(f"context '{key}' must be an object {{ENV_NAME: secret ARN}}, got {value!r}")
    for name, arn in value.items():
        if not _ENV_NAME.fullmatch(name) or name.startswith(("OVERSEER_", "AWS_")):
            raise ConfigError(
                f"{key}: {name!r} must be an environment variable name not starting with OVERSEER_ or AWS_"
            )
        if not isinstance(arn, str) or not _SECRET_ARN.fullmatch(arn):
            raise ConfigError(
                f"{key}[{name}]: give the secret's full ARN, with the 6-character suffix the "
                f"console shows (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-AbCdEf), got {arn!r}"
            )
    return dict(value)


# context key -> (attribute, default). The defaults are repeated in cdk.json.
_KEYS: dict[str, tuple[str, Any]] = {
    "instanceTypes": ("instance_types", ["m6i.large", "m6i.xlarge", "m6i.2xlarge"]),
    "maxVcpus": ("max_vcpus", 64),
    "spot": ("spot", True),
    "workerVcpus": ("worker_vcpus", 1),
    "workerMemoryMiB": ("worker_memory_mib", 3584),
    "scratchVolumeGiB": ("scratch_volume_gib", 1024),
    "handlersModule": ("handlers_module", "examples.daily_report.handlers"),
    "handlersDir": ("handlers_dir", "examples"),
    "templatesDir": ("templates_dir", "templates"),
    "triggers": ("triggers", []),
    "existingVpcId": ("existing_vpc_id", ""),
    "existingBucketName": ("existing_bucket_name", ""),
    "allowedBuckets": ("allowed_buckets", []),
    "eventBusName": ("event_bus_name", ""),
    "maxWorkers": ("max_workers", 16),
    "backlogPerWorker": ("backlog_per_worker", 50),
    "maxExpandItems": ("max_expand_items", 10_000),
    "maxExpandBytes": ("max_expand_bytes", 16 * 1024 * 1024),
    "leaseSeconds": ("lease_seconds", 120),
    "idleExitSeconds": ("idle_exit_seconds", 300),
    "sweepSchedule": ("sweep_schedule", "rate(1 minute)"),
    "logRetentionDays": ("log_retention_days", 30),
    "noncurrentVersionDays": ("noncurrent_version_days", 30),
    "retentionDays": ("retention_days", 90),
    "artifactExpirationDays": ("artifact_expiration_days", 0),
    "rowsTables": ("rows_tables", []),
    "workerPolicies": ("worker_policies", []),
    "workerManagedPolicies": ("worker_managed_policies", []),
    "workerSecrets": ("worker_secrets", {}),
    "workerEgress": ("worker_egress", []),
    "apiGatewayAccount": ("api_gateway_account", True),
    "pools": ("pools", {}),
    "limits": ("limits", {}),
}


# The longest retention of graphs, jobs and artifacts: ten years.
MAX_RETENTION_DAYS = 3650


def _as_int(key: str, value: Any, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"context '{key}' must be an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"context '{key}' must be >= {minimum}, got {number}")
    return number


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"context '{key}' must be true or false, got {value!r}")


def _as_list(key: str, value: Any) -> list[Any]:
    # `cdk deploy -c instanceTypes='["c6i.large"]'` or -c instanceTypes=c6i.large,c6i.xlarge
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = json.loads(text)
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(value, list):
        raise ConfigError(f"context '{key}' must be a list, got {value!r}")
    return value


def _instance_types(key: str, value: Any) -> tuple[str, ...]:
    types = tuple(str(t) for t in _as_list(key, value))
    if not types:
        raise ConfigError(f"context '{key}' must name at least one instance type")
    return types


def _worker_policies(key: str, value: Any) -> tuple[WorkerPolicy, ...]:
    return tuple(WorkerPolicy.from_context(p, key) for p in _as_list(key, value))


def _managed_policies(key: str, value: Any) -> tuple[str, ...]:
    arns = tuple(str(p) for p in _as_list(key, value))
    for arn in arns:
        if not re.fullmatch(r"arn:aws[a-z-]*:iam::(aws|\d{12}):policy/[\w+=,.@/-]+", arn):
            raise ConfigError(f"context '{key}': {arn!r} is not a managed policy ARN")
    return arns


# Batch's smallest job timeout (attemptDurationSeconds).
MIN_BATCH_TIMEOUT_SECONDS = 60
# The root volume of the ECS-optimized AL2023 AMIs (plain and NVIDIA) is a 30 GiB snapshot:
# a smaller root volume cannot be launched.
MIN_ROOT_VOLUME_GIB = 30


@dataclass(frozen=True)
class PoolConfig:
    """One worker pool (``pools.<name>``): the shape, machines, image and role of its workers.

    The default pool's values are the top-level keys (``workerVcpus``, ``instanceTypes``...),
    which a ``pools.default`` entry may override; every other pool falls back to the
    top-level value of a key it does not set (``gpus``: 0).
    """

    name: str
    # Where its settings come from in cdk.json, for messages ("pools.gpu").
    where: str
    vcpus: int
    memory_mib: int
    gpus: int
    instance_types: tuple[str, ...]
    spot: bool
    max_vcpus: int
    scratch_volume_gib: int
    # 0: the AMI's own root volume.
    root_volume_gib: int
    handlers_module: str
    handlers_dir: str
    worker_policies: tuple[WorkerPolicy, ...]
    worker_managed_policies: tuple[str, ...]
    worker_secrets: Mapping[str, str]
    max_workers: int
    backlog_per_worker: int
    # A worker takes no new job this long after its start (0: no limit).
    worker_lifetime_seconds: int
    # None: the longest handler timeout of its manifest (infra/pool_plan.py).
    longest_job_seconds: int | None
    # None: derived from the lifetime and the longest job (infra/pool_plan.py).
    batch_timeout_seconds: int | None
    # The job types it serves, when its handlers module cannot be imported at synthesis.
    job_types: tuple[str, ...] | None

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_POOL

    @property
    def id_suffix(self) -> str:
        """What the pool adds to construct ids and output names: "" for the default pool
        (its ids predate pools), ``Gpu`` for ``gpu``, ``LargeMem`` for ``large-mem``."""
        return "" if self.is_default else pool_id(self.name)

    @property
    def instance_needs(self) -> tuple[Any, ...]:
        """What its compute environment depends on: pools that agree share one."""
        return (
            self.instance_types,
            self.spot,
            self.max_vcpus,
            self.scratch_volume_gib,
            self.root_volume_gib,
            self.gpus > 0,
        )


def pool_id(name: str) -> str:
    """A pool name as a construct id part: ``large-mem`` -> ``LargeMem``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("-"))


# pools.<name>.<key> -> the top-level key it falls back to (None: its own default, below).
POOL_KEYS: dict[str, str | None] = {
    "vcpus": "workerVcpus",
    "memoryMiB": "workerMemoryMiB",
    "gpus": None,
    "instanceTypes": "instanceTypes",
    "spot": "spot",
    "maxVcpus": "maxVcpus",
    "scratchVolumeGiB": "scratchVolumeGiB",
    "rootVolumeGiB": None,
    "handlersModule": "handlersModule",
    "handlersDir": "handlersDir",
    "workerPolicies": "workerPolicies",
    "workerManagedPolicies": "workerManagedPolicies",
    "workerSecrets": "workerSecrets",
    "maxWorkers": "maxWorkers",
    "backlogPerWorker": "backlogPerWorker",
    "workerLifetimeSeconds": None,
    "longestJobSeconds": None,
    "batchTimeoutSeconds": None,
    "jobTypes": None,
}
_POOL_DEFAULTS: dict[str, Any] = {
    "gpus": 0,
    "rootVolumeGiB": 0,
    "workerLifetimeSeconds": 0,
    "longestJobSeconds": None,
    "batchTimeoutSeconds": None,
    "jobTypes": None,
}


def _pool(name: str, raw: Mapping[str, Any], top: Mapping[str, Any], declared: bool) -> PoolConfig:
    """``pools.<name>`` (``raw``), validated, with the top-level values ``top`` (context key ->
    parsed value) for the keys it leaves out."""
    where = f"pools.{name}" if declared else "the default pool"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be an object of pool settings, got {raw!r}")
    unknown = sorted(set(raw) - set(POOL_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; a pool's keys are {sorted(POOL_KEYS)}")

    def value(key: str) -> Any:
        if raw.get(key) is not None:
            return raw[key]
        fallback = POOL_KEYS[key]
        return top[fallback] if fallback else _POOL_DEFAULTS[key]

    def given(key: str) -> bool:
        return raw.get(key) is not None

    def number(key: str, minimum: int) -> int:
        return _as_int(f"{where}.{key}", value(key), minimum) if given(key) else int(value(key))

    def text(key: str) -> str:
        found = value(key)
        if not isinstance(found, str) or not found:
            raise ConfigError(f"{where}.{key} must be a non-empty string, got {found!r}")
        return found

    root_volume = number("rootVolumeGiB", 0)
    if 0 < root_volume < MIN_ROOT_VOLUME_GIB:
        raise ConfigError(
            f"{where}.rootVolumeGiB must be 0 (the AMI's) or at least {MIN_ROOT_VOLUME_GIB} "
            f"(the ECS AMI's root snapshot), got {root_volume}"
        )
    job_types = None
    if given("jobTypes"):
        job_types = tuple(str(t) for t in _as_list(f"{where}.jobTypes", raw["jobTypes"]))
        if not job_types or not all(job_types):
            raise ConfigError(
                f"{where}.jobTypes must list the job types its handlers serve, got {job_types!r}"
            )
    return PoolConfig(
        name=name,
        where=where,
        vcpus=number("vcpus", 1),
        memory_mib=number("memoryMiB", 512),
        gpus=number("gpus", 0),
        instance_types=(
            _instance_types(f"{where}.instanceTypes", raw["instanceTypes"])
            if given("instanceTypes")
            else top["instanceTypes"]
        ),
        spot=_as_bool(f"{where}.spot", raw["spot"]) if given("spot") else top["spot"],
        max_vcpus=number("maxVcpus", 1),
        scratch_volume_gib=number("scratchVolumeGiB", 0),
        root_volume_gib=root_volume,
        handlers_module=text("handlersModule"),
        handlers_dir=text("handlersDir"),
        worker_policies=(
            _worker_policies(f"{where}.workerPolicies", raw["workerPolicies"])
            if given("workerPolicies")
            else top["workerPolicies"]
        ),
        worker_managed_policies=(
            _managed_policies(f"{where}.workerManagedPolicies", raw["workerManagedPolicies"])
            if given("workerManagedPolicies")
            else top["workerManagedPolicies"]
        ),
        worker_secrets=(
            _worker_secrets(raw["workerSecrets"], f"{where}.workerSecrets")
            if given("workerSecrets")
            else top["workerSecrets"]
        ),
        max_workers=number("maxWorkers", 0),
        backlog_per_worker=number("backlogPerWorker", 1),
        worker_lifetime_seconds=number("workerLifetimeSeconds", 0),
        longest_job_seconds=(
            _as_int(f"{where}.longestJobSeconds", raw["longestJobSeconds"], 1)
            if given("longestJobSeconds")
            else None
        ),
        batch_timeout_seconds=(
            _as_int(f"{where}.batchTimeoutSeconds", raw["batchTimeoutSeconds"], MIN_BATCH_TIMEOUT_SECONDS)
            if given("batchTimeoutSeconds")
            else None
        ),
        job_types=job_types,
    )


def _pools(raw: Any, top: Mapping[str, Any]) -> dict[str, PoolConfig]:
    """Every pool, the default first: ``pools`` (``raw``) over the top-level values."""
    raw = _json_object("pools", raw)  # -c pools='{"gpu": {...}}'
    if not isinstance(raw, Mapping):
        raise ConfigError(f"context 'pools' must be an object {{pool name: {{settings}}}}, got {raw!r}")
    declared = bool(raw)
    for name in raw:
        if not isinstance(name, str) or not POOL_NAME.match(name):
            raise ConfigError(
                f"pools: {name!r} is not a pool name: 1-32 lower-case letters, digits and '-', "
                "starting with a letter"
            )
    names = [DEFAULT_POOL, *(n for n in raw if n != DEFAULT_POOL)]
    pools = {name: _pool(name, raw.get(name) or {}, top, declared) for name in names}
    ids: dict[str, str] = {}
    for name in names:
        other = ids.setdefault(pool_id(name), name)
        if other != name:
            raise ConfigError(f"pools: {other!r} and {name!r} make the same resource names; rename one")
    return pools


def _limits(value: Any) -> dict[str, int]:
    """``limits``: concurrency limit name -> size, checked as the engine checks them
    (``overseer.limits.parse_limits``)."""
    value = _json_object("limits", value)  # -c limits='{"geo_api": 5}'
    if not isinstance(value, Mapping):
        raise ConfigError(f"context 'limits' must be an object {{limit name: size}}, got {value!r}")
    try:
        return parse_limits(value)
    except ValueError as exc:
        raise ConfigError(f"context 'limits': {exc}") from None


@dataclass(frozen=True)
class DeploymentConfig:
    """Typed view of the CDK context; see docs/deploy.md for each key."""

    instance_types: tuple[str, ...]
    max_vcpus: int
    spot: bool
    worker_vcpus: int
    worker_memory_mib: int
    scratch_volume_gib: int
    handlers_module: str
    handlers_dir: str
    templates_dir: str
    triggers: tuple[Trigger, ...]
    existing_vpc_id: str
    existing_bucket_name: str
    allowed_buckets: tuple[str, ...]
    event_bus_name: str
    max_workers: int
    backlog_per_worker: int
    max_expand_items: int
    max_expand_bytes: int
    lease_seconds: int
    idle_exit_seconds: int
    sweep_schedule: str
    log_retention_days: int
    noncurrent_version_days: int
    # Days an ended graph and its jobs are kept in the tables (0 = for ever; DynamoDB TTL).
    retention_days: int
    # Days after which the artifact bucket expires current objects (0 = never).
    artifact_expiration_days: int
    rows_tables: tuple[str, ...]
    worker_policies: tuple[WorkerPolicy, ...]
    worker_managed_policies: tuple[str, ...]
    worker_secrets: Mapping[str, str]
    worker_egress: tuple[EgressRule, ...]
    api_gateway_account: bool
    # Every worker pool, the default first (the default alone when `pools` is absent).
    pools: Mapping[str, PoolConfig]
    # Whether `pools` names any pool: only then do the processes get OVERSEER_POOLS.
    pools_declared: bool
    # Concurrency limits, name -> how many jobs holding it run at once (overseer.limits);
    # empty: none, and no process gets OVERSEER_LIMITS.
    limits: Mapping[str, int]

    @property
    def default_pool(self) -> PoolConfig:
        return self.pools[DEFAULT_POOL]

    @classmethod
    def from_mapping(cls, context: Mapping[str, Any]) -> DeploymentConfig:
        values: dict[str, Any] = {}
        for key, (attr, default) in _KEYS.items():
            value = context.get(key, default)
            if value is None:
                value = default
            values[attr] = value
        values["instance_types"] = _instance_types("instanceTypes", values["instance_types"])
        values["allowed_buckets"] = tuple(
            str(b) for b in _as_list("allowedBuckets", values["allowed_buckets"])
        )
        values["triggers"] = tuple(Trigger.from_context(t) for t in _as_list("triggers", values["triggers"]))
        names = [t.name for t in values["triggers"]]
        if len(names) != len(set(names)):
            raise ConfigError(f"context 'triggers': names must be unique, got {names}")
        values["rows_tables"] = tuple(str(t) for t in _as_list("rowsTables", values["rows_tables"]))
        for table in values["rows_tables"]:
            if not _TABLE_NAME.fullmatch(table):
                raise ConfigError(f"context 'rowsTables': {table!r} is not a DynamoDB table name")
        values["worker_policies"] = _worker_policies("workerPolicies", values["worker_policies"])
        values["worker_managed_policies"] = _managed_policies(
            "workerManagedPolicies", values["worker_managed_policies"]
        )
        values["worker_secrets"] = _worker_secrets(values["worker_secrets"])
        values["worker_egress"] = tuple(
            EgressRule.from_context(r) for r in _as_list("workerEgress", values["worker_egress"])
        )
        values["api_gateway_account"] = _as_bool("apiGatewayAccount", values["api_gateway_account"])
        values["spot"] = _as_bool("spot", values["spot"])
        for key, minimum in (
            ("maxVcpus", 1),
            ("workerVcpus", 1),
            ("workerMemoryMiB", 512),
            ("scratchVolumeGiB", 0),
            ("maxWorkers", 0),
            ("backlogPerWorker", 1),
            ("maxExpandItems", 0),
            ("maxExpandBytes", 0),
            ("leaseSeconds", 30),
            ("idleExitSeconds", 0),
            ("logRetentionDays", 1),
            ("noncurrentVersionDays", 1),
            ("retentionDays", 0),
            ("artifactExpirationDays", 0),
        ):
            attr = _KEYS[key][0]
            values[attr] = _as_int(key, values[attr], minimum)
        for key in ("retentionDays", "artifactExpirationDays"):
            if values[_KEYS[key][0]] > MAX_RETENTION_DAYS:
                raise ConfigError(f"context '{key}' must be <= {MAX_RETENTION_DAYS} (0 = keep for ever)")
        if values["lease_seconds"] > 43200:
            raise ConfigError("context 'leaseSeconds' must be <= 43200 (the SQS visibility limit)")
        top = {key: values[attr] for key, (attr, _) in _KEYS.items()}
        values["pools"] = _pools(values["pools"], top)
        values["pools_declared"] = bool(_json_object("pools", context.get("pools") or {}))
        values["limits"] = _limits(values["limits"])
        return cls(**values)

    @classmethod
    def from_node(cls, node: Node) -> DeploymentConfig:
        return cls.from_mapping({key: node.try_get_context(key) for key in _KEYS})


# Context key -> default, for documentation and tests.
DEFAULTS: dict[str, Any] = {key: default for key, (_, default) in _KEYS.items()}
