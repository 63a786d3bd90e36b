"""Session fixtures shared by the infra tests: one synth of each configuration per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
    def variant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
        """The stack with VARIANT_CONTEXT."""
        from tests.infra.test_stack import VARIANT_CONTEXT, _synthesise

        yield _synthesise(tmp_path_factory.mktemp("cdk.out.variant"), VARIANT_CONTEXT)
