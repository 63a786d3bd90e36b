"""What ships carries no test tooling: the chaos suite's fault injector, crashing handlers,
worker killers and audits (``tests/chaos``) are in neither the engine's wheel nor the
Lambda asset. They reach the engine only through its client hook (``OVERSEER_CLIENT_HOOK``).

The worker image is covered by the wheel: ``worker_batch/Dockerfile`` builds the wheel from
the image's build context (``pip wheel``, as here), installs it, and adds only the user's
handlers directory.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("aws_cdk", reason="the infra tests need the infra extra (aws-cdk-lib)")

from infra.lambda_code import (
    REPO_ROOT,
)
from infra.workers import IMAGE_EXCLUDES
from tests.chaos import faults, toolkit

pytestmark = pytest.mark.infra

TOOLING_FILES = {Path(faults.__file__).name, Path(toolkit.__file__).name}
# Strings found only in the test tooling: its fault settings, its classes, its import path.
MARKERS = (faults.ENV_SPEC, faults.FaultInjector.__name__, toolkit.DuplicatingQueue.__name__, "tests.chaos")


def tooling_in(files: dict[str, bytes]) -> list[str]:
    """The files (path -> content) that are, or carry a piece of, the test tooling."""
    found = [path for path in files if Path(path).name in TOOLING_FILES or "chaos" in path.lower()]
    for path, data in files.items():
        found += [f"{path}: {marker}" for marker in MARKERS if marker.encode() in data]
    return found


def test_the_markers_find_the_tooling() -> None:
    sources = {Path(m.__file__).name: Path(m.__file__).read_bytes() for m in (faults, toolkit)}
    found = tooling_in(sources)
    assert sources.keys() <= set(found)
    for marker in MARKERS:
        assert any(f.endswith(f": {marker}") for f in found), marker


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The engine's wheel, built as the worker image builds it, from a copy of its context
    (building in place would write build/ and egg-info into the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    context = tmp / "context"
    ignore = shutil.ignore_patterns(*(pattern.removeprefix("**/") for pattern in IMAGE_EXCLUDES))
    shutil.copytree(REPO_ROOT, context, ignore=ignore)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp / "dist")]
    done = subprocess.run([*pip_wheel, str(context)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    (built,) = (tmp / "dist").glob("*.whl")
    with zipfile.ZipFile(built) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.fixture(scope="module")
def asset(lambda_asset_dir: Path) -> dict[str, bytes]:
    """The Lambda asset as ``cdk synth`` bundles it."""
    out = lambda_asset_dir
    return {str(path.relative_to(out)): path.read_bytes() for path in out.rglob("*") if path.is_file()}


def test_the_wheel_and_so_the_worker_image_carry_no_test_tooling(wheel: dict[str, bytes]) -> None:
    assert {"overseer/worker.py", "overseer/backends/aws/clients.py"} <= wheel.keys()  # the engine is there
    assert tooling_in(wheel) == []


def test_the_lambda_asset_carries_no_test_tooling(asset: dict[str, bytes]) -> None:
    assert {"functions/scheduler.py", "overseer/backends/aws/clients.py"} <= asset.keys()
    assert tooling_in(asset) == []
