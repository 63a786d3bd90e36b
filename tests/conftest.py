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


# The slowest files, slowest first: they start at once, so the two workers of `pytest -n 2
# --dist loadfile` end together on short files. xdist's own order (most tests first) put
# these files of a few long tests last, and one worker ran the last of them alone.
SLOWEST_FILES_FIRST = (
    "tests/rehearsal/test_story.py",
    "tests/e2e/test_failure_policy.py",
    "tests/chaos/test_sweep_repairs.py",
    "tests/chaos/test_kills.py",
    "tests/integration/test_scale.py",
    "tests/integration/test_sweep.py",
    "tests/rehearsal/test_worker_image.py",
    "tests/e2e/test_expansion_example.py",
    "tests/chaos/test_messages.py",
    "tests/chaos/test_faults.py",
    "tests/chaos/test_expansion.py",
    "tests/integration/test_engine.py",
    "tests/chaos/test_hostile.py",
    "tests/e2e/test_example.py",
    "tests/e2e/test_pools_example.py",
    "tests/e2e/test_run_cli.py",
    "tests/rehearsal/test_lambda_runtime.py",
)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # files go to the workers in the order below


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOWEST_FILES_FIRST)}
    # A stable sort: each file's tests stay together and in their order; the other files
    # follow in the usual order (tests/unit, the quickest, last).
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
