"""Retention in the stack: the tables' time to live, the retention every process gets, and
the artifact bucket's optional expiration rule."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("aws_cdk")

from infra.config import ConfigError, DeploymentConfig
from tests.infra.test_stack import CONTEXT, Synthesis, _synthesise

# Retention changed from the defaults: a week in the tables, artifacts expiring after 400 days.
RETENTION_CONTEXT: dict[str, Any] = {**CONTEXT, "retentionDays": 7, "artifactExpirationDays": 400}


@pytest.fixture(scope="module")
def kept_a_week(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesis]:
    yield _synthesise(tmp_path_factory.mktemp("cdk.out.retention"), RETENTION_CONTEXT)


def retention_of_every_process(synth: Synthesis) -> list[str]:
    """OVERSEER_RETENTION_DAYS of every Lambda and worker job definition."""
    values = []
    for function in synth.of_type("AWS::Lambda::Function").values():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        if "OVERSEER_JOBS_TABLE" in variables:  # the engine's functions, not CDK's helpers
            values.append(variables.get("OVERSEER_RETENTION_DAYS"))
    for definition in synth.of_type("AWS::Batch::JobDefinition").values():
        env = {e["Name"]: e["Value"] for e in definition["Properties"]["ContainerProperties"]["Environment"]}
        values.append(env.get("OVERSEER_RETENTION_DAYS"))
    return values


def lifecycle_rules(synth: Synthesis) -> dict[str, dict[str, Any]]:
    bucket = synth.resources[synth.logical_id(synth.stack.artifacts.bucket)]
    return {rule["Id"]: rule for rule in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}


def test_both_tables_expire_items_on_expires_at(synth: Synthesis) -> None:
    tables = synth.of_type("AWS::DynamoDB::Table")
    assert len(tables) == 2
    for table in tables.values():
        assert table["Properties"]["TimeToLiveSpecification"] == {
            "AttributeName": "expires_at",
            "Enabled": True,
        }


def test_every_process_gets_the_retention_of_cdk_json(synth: Synthesis, kept_a_week: Synthesis) -> None:
    assert CONTEXT["retentionDays"] == 90
    default = retention_of_every_process(synth)
    assert len(default) >= 4 and set(default) == {"90"}  # scheduler, sweep, API, trigger, workers
    assert set(retention_of_every_process(kept_a_week)) == {"7"}


def test_artifacts_expire_only_when_artifact_expiration_days_is_set(
    synth: Synthesis, kept_a_week: Synthesis
) -> None:
    assert sorted(lifecycle_rules(synth)) == ["expire-noncurrent-versions"]
    rules = lifecycle_rules(kept_a_week)
    assert sorted(rules) == ["expire-artifacts", "expire-noncurrent-versions"]
    assert rules["expire-artifacts"]["ExpirationInDays"] == 400
    assert rules["expire-artifacts"]["Status"] == "Enabled"
    assert "Prefix" not in rules["expire-artifacts"]  # every object of the bucket
    assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30


def test_the_retention_synthesis_passes_its_checks(kept_a_week: Synthesis) -> None:
    assert kept_a_week.validation_error is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("retentionDays", -1, "'retentionDays' must be >= 0"),
        ("retentionDays", 3651, "'retentionDays' must be <= 3650"),
        ("retentionDays", "a month", "'retentionDays' must be an integer"),
        ("artifactExpirationDays", -5, "'artifactExpirationDays' must be >= 0"),
        ("artifactExpirationDays", 4000, "'artifactExpirationDays' must be <= 3650"),
    ],
)
def test_config_refuses_a_retention_out_of_range(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DeploymentConfig.from_mapping({**CONTEXT, key: value})


def test_config_keeps_for_ever_with_zero() -> None:
    config = DeploymentConfig.from_mapping({**CONTEXT, "retentionDays": 0, "artifactExpirationDays": 0})
    assert (config.retention_days, config.artifact_expiration_days) == (0, 0)
    assert DeploymentConfig.from_mapping({}).retention_days == 90
