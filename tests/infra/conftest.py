"""Session fixtures shared by the infra tests: one synth of each configuration per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The machines this runs on have Node 20 (end of life for jsii since 2026-10-30): the
# synth works, so keep its page-wide warning out of the test output.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

try:
    import aws_cdk  # noqa: F401
except ImportError:  # the infra extra is missing: test_stack.py skips itself
    pass
else:

    @pytest.fixture(scope="session")
    def synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
        """The stack as cdk.json configures it."""
        from tests.infra.test_stack import CONTEXT, _synthesise

        yield _synthesise(tmp_path_factory.mktemp("cdk.out"), CONTEXT)

    @pytest.fixture(scope="session")
    def lambda_asset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
        """The Lambda asset directory as ``cdk synth`` bundles it (without a whole synth)."""
        from infra.lambda_code import REPO_ROOT as ROOT
        from infra.lambda_code import (
            LocalPythonBundling,
            install_dependencies,
            lambda_modules,
            locked_requirements,
        )

        out = tmp_path_factory.mktemp("lambda-asset")
        bundling = LocalPythonBundling(
            templates_dir=ROOT / "templates",
            dependencies=install_dependencies(locked_requirements()),
            modules=lambda_modules(),
        )
        assert bundling.try_bundle(str(out))
        return out

    @pytest.fixture(scope="session")
    def pools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
        """The stack with worker pools (test_pools.POOLS_CONTEXT)."""
        from tests.infra.test_pools import POOLS_CONTEXT
        from tests.infra.test_stack import _synthesise

        yield _synthesise(tmp_path_factory.mktemp("cdk.out.pools"), POOLS_CONTEXT)

    @pytest.fixture(scope="session")
    def variant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
        """The stack with VARIANT_CONTEXT."""
        from tests.infra.test_stack import VARIANT_CONTEXT, _synthesise

        yield _synthesise(tmp_path_factory.mktemp("cdk.out.variant"), VARIANT_CONTEXT)
