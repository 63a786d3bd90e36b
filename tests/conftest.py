"""Shared fixtures: one local AWS emulator per test session, a fresh stack per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from overseer.config import Settings


@pytest.fixture(scope="session")
def aws_env() -> Iterator[dict[str, str]]:
    """Start moto server once; point boto3 at it for the whole session."""
    from overseer.backends.aws.emulator import emulator, environment

    with emulator() as env, environment(env):
        yield env


@pytest.fixture
def stack(aws_env: dict[str, str]) -> Iterator[LocalStack]:  # noqa: F821
    from tests.support import LocalStack

    name = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(
        graphs_table=f"{name}-graphs",
        jobs_table=f"{name}-jobs",
        artifact_bucket=f"{name}-artifacts",
        allowed_buckets=(f"{name}-extra",),
        receive_wait_seconds=0,
        lease_seconds=30,
        fault_backoff_seconds=0.0,
    )
    yield LocalStack.provisioned(settings)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
