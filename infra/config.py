"""Deployment settings: the one place that reads the CDK context (``cdk.json``).

Every key has a default here, so the stack synthesises with an empty context; ``cdk.json``
repeats the defaults so they are visible and editable, and ``cdk deploy -c key=value``
overrides one. docs/deploy.md documents each key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from constructs import Node


class ConfigError(ValueError):
    """A context value that cannot be used; the message names the key and what is expected."""


@dataclass(frozen=True)
class Trigger:
    """An EventBridge rule that starts a named graph template.

    Exactly one of ``schedule`` (an EventBridge ``cron(...)`` or ``rate(...)`` expression)
    and ``event_pattern`` (an EventBridge event pattern) is set. ``args`` is one argument
    object (one graph per firing) or a list of them (one graph per item per firing, e.g.
    one report graph per company).
    """

    name: str
    template: str
    schedule: str | None = None
    event_pattern: Mapping[str, Any] | None = None
    args: tuple[Mapping[str, Any], ...] = ({},)
    description: str = ""

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
        return cls(
            name=name,
            template=template,
            schedule=schedule,
            event_pattern=pattern,
            args=args_list,
            description=str(raw.get("description", "")),
        )


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
    "leaseSeconds": ("lease_seconds", 120),
    "idleExitSeconds": ("idle_exit_seconds", 300),
    "sweepSchedule": ("sweep_schedule", "rate(1 minute)"),
    "logRetentionDays": ("log_retention_days", 30),
    "noncurrentVersionDays": ("noncurrent_version_days", 30),
}


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
    lease_seconds: int
    idle_exit_seconds: int
    sweep_schedule: str
    log_retention_days: int
    noncurrent_version_days: int

    @classmethod
    def from_mapping(cls, context: Mapping[str, Any]) -> DeploymentConfig:
        values: dict[str, Any] = {}
        for key, (attr, default) in _KEYS.items():
            value = context.get(key, default)
            if value is None:
                value = default
            values[attr] = value
        values["instance_types"] = tuple(str(t) for t in _as_list("instanceTypes", values["instance_types"]))
        if not values["instance_types"]:
            raise ConfigError("context 'instanceTypes' must name at least one instance type")
        values["allowed_buckets"] = tuple(
            str(b) for b in _as_list("allowedBuckets", values["allowed_buckets"])
        )
        values["triggers"] = tuple(Trigger.from_context(t) for t in _as_list("triggers", values["triggers"]))
        names = [t.name for t in values["triggers"]]
        if len(names) != len(set(names)):
            raise ConfigError(f"context 'triggers': names must be unique, got {names}")
        values["spot"] = _as_bool("spot", values["spot"])
        for key, minimum in (
            ("maxVcpus", 1),
            ("workerVcpus", 1),
            ("workerMemoryMiB", 512),
            ("scratchVolumeGiB", 0),
            ("maxWorkers", 0),
            ("leaseSeconds", 30),
            ("idleExitSeconds", 0),
            ("logRetentionDays", 1),
            ("noncurrentVersionDays", 1),
        ):
            attr = _KEYS[key][0]
            values[attr] = _as_int(key, values[attr], minimum)
        if values["lease_seconds"] > 43200:
            raise ConfigError("context 'leaseSeconds' must be <= 43200 (the SQS visibility limit)")
        return cls(**values)

    @classmethod
    def from_node(cls, node: Node) -> DeploymentConfig:
        return cls.from_mapping({key: node.try_get_context(key) for key in _KEYS})


# Context key -> default, for documentation and tests.
DEFAULTS: dict[str, Any] = {key: default for key, (_, default) in _KEYS.items()}
