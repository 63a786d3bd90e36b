"""The Lambda code asset: what it ships, checked on the directory the bundling produces.

The asset is built as ``cdk synth`` builds it (``LocalPythonBundling.try_bundle``), then read
by CPython 3.12 from pyenv with nothing else on its path (``-I -S``): the Lambda runtime's
Python, the asset and the standard library only.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import subprocess
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

pytest.importorskip("aws_cdk", reason="the infra tests need the infra extra (aws-cdk-lib)")

from packaging.requirements import Requirement

from infra.lambda_code import (
    CLI_ONLY,
    REPO_ROOT,
    BundlingError,
    install_dependencies,
    lambda_requirements,
    locked_requirements,
    requirement_name,
)

pytestmark = pytest.mark.infra

HANDLER_MODULES = ("functions.api", "functions.scheduler", "functions.sweep", "functions.trigger")
# The command line, the local runner, the worker and the emulator: no function imports them.
NOT_SHIPPED = (
    "overseer/__main__.py", "overseer/cli/__init__.py", "overseer/cli/run.py", "overseer/cli/graphs.py",
    "overseer/cli/views.py", "overseer/cli/targets.py", "overseer/cli/local_stack.py",
    "overseer/cli/api_client.py", "overseer/cli/render.py", "overseer/runner.py", "overseer/worker.py",
    "overseer/isolation.py", "overseer/handlers.py", "overseer/backends/aws/emulator.py",
    "overseer/backends/aws/emulator_server.py", "overseer/backends/aws/resources.py",
)  # fmt: skip
PYTHON_312 = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12.*/bin/python3.12")))
# The environment Lambda gives a function (the part that changes what gets imported).
LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "overseer-asset-test",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "LAMBDA_TASK_ROOT": "/var/task",
    "LANG": "en_US.UTF-8",
}
# Markers evaluated as on the Lambda platform.
LAMBDA_MARKERS = {
    "python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
    "implementation_name": "cpython", "platform_python_implementation": "CPython",
}  # fmt: skip

# Run in the asset by Python 3.12: import the handlers, report what was loaded from where,
# then import every module the asset ships.
PROBE = """
import importlib, json, sys
from importlib import metadata
asset = sys.argv[1]
sys.path.insert(0, asset)
for name in sys.argv[2].split(","):
    importlib.import_module(name)
loaded = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
owners = metadata.packages_distributions()
used = sorted({d for n in loaded for d in owners.get(n.split(".")[0], [])})
for name in sys.argv[3].split(","):
    importlib.import_module(name)
print(json.dumps({"version": list(sys.version_info[:2]), "loaded": loaded, "distributions_used": used}))
"""


@pytest.fixture(scope="module")
def asset(lambda_asset_dir: Path) -> Path:
    return lambda_asset_dir


def _shipped_modules(asset: Path) -> list[str]:
    return sorted(
        ".".join(p.relative_to(asset).with_suffix("").parts).removesuffix(".__init__")
        for package in ("overseer", "functions")
        for p in (asset / package).rglob("*.py")
    )


@pytest.fixture(scope="module")
def probe(asset: Path) -> dict:
    if not PYTHON_312:
        pytest.skip("no CPython 3.12 under ~/.pyenv/versions (the Lambda runtime's Python)")
    result = subprocess.run(
        [PYTHON_312[-1], "-I", "-S", "-c", PROBE, str(asset), ",".join(HANDLER_MODULES),
         ",".join(_shipped_modules(asset))],
        env=LAMBDA_ENV, cwd=asset, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_handlers_import_under_python_312_from_the_asset_alone(asset: Path, probe: dict) -> None:
    assert probe["version"] == [3, 12]
    stdlib = Path(PYTHON_312[-1]).resolve().parents[1] / "lib"
    for name, file in probe["loaded"].items():
        if file is not None:  # built-in modules have no file
            assert Path(file).is_relative_to(asset) or Path(file).is_relative_to(stdlib), (name, file)
    assert set(HANDLER_MODULES) <= probe["loaded"].keys()


def test_every_bundled_distribution_is_imported_by_the_handlers(asset: Path, probe: dict) -> None:
    shipped = {requirement_name(d.metadata["Name"]) for d in metadata.distributions(path=[str(asset)])}
    assert {requirement_name(d) for d in probe["distributions_used"]} == shipped
    assert not shipped & set(CLI_ONLY)


def test_the_cli_local_runner_worker_and_emulator_are_not_shipped(asset: Path) -> None:
    for path in NOT_SHIPPED:
        assert (REPO_ROOT / path).exists(), f"{path} moved: update NOT_SHIPPED"
        assert not (asset / path).exists(), path
    assert not (asset / "overseer" / "cli").exists()
    assert not (asset / "click").exists() and not (asset / "rich").exists()


def test_every_file_is_readable_by_the_user_lambda_runs_code_as(asset: Path) -> None:
    for path in [asset, *asset.rglob("*")]:
        wanted = 0o005 if path.is_dir() else 0o004
        assert path.stat().st_mode & wanted == wanted, f"{path} is {oct(path.stat().st_mode)}"


def _imported_names(path: Path, package: str) -> Iterator[str]:
    """Every module an import statement in ``path`` may name, wherever the statement is
    (inside function bodies too), with ``from X import y`` giving both X and X.y."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def test_every_module_imported_anywhere_in_the_asset_is_in_it(asset: Path) -> None:
    shipped = set(_shipped_modules(asset))
    for module in shipped:
        path = asset / module.replace(".", "/")
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for name in _imported_names(path, package):
            source = REPO_ROOT / name.replace(".", "/")
            in_repo = source.with_suffix(".py").exists() or (source / "__init__.py").exists()
            if in_repo and name.split(".")[0] in ("overseer", "functions"):
                assert name in shipped, f"{module} imports {name}, which the asset leaves out"


def test_the_dependencies_are_the_pinned_set_boto3_included(asset: Path) -> None:
    pins = {requirement_name(p): Requirement(p) for p in locked_requirements()}
    shipped = {requirement_name(d.metadata["Name"]): d for d in metadata.distributions(path=[str(asset)])}
    assert shipped.keys() == pins.keys()
    for name, dist in shipped.items():
        assert pins[name].specifier.contains(dist.version), (name, dist.version)
    assert {"boto3", "botocore", "s3transfer"} <= shipped.keys()


def test_the_pins_cover_pyproject_and_every_transitive_requirement() -> None:
    pins = {requirement_name(p): Requirement(p) for p in locked_requirements()}
    for line in lambda_requirements():
        wanted = Requirement(line)
        pinned = pins[requirement_name(line)]
        assert wanted.specifier.contains(str(pinned.specifier).removeprefix("==")), (line, pinned)
        assert wanted.extras <= pinned.extras, (line, pinned)
    assert not pins.keys() & set(CLI_ONLY)
    # Closed under the pinned distributions' own requirements, as on the Lambda platform.
    installed = install_dependencies(locked_requirements())
    dists = {requirement_name(d.metadata["Name"]): d for d in metadata.distributions(path=[str(installed)])}
    for name, pin in pins.items():
        for text in dists[name].requires or []:
            requirement = Requirement(text)
            extras = pin.extras or {""}
            if requirement.marker and not any(
                requirement.marker.evaluate({**LAMBDA_MARKERS, "extra": e}) for e in extras
            ):
                continue
            assert requirement_name(requirement.name) in pins, f"{name} needs {text}, not pinned"


def test_synth_fails_naming_the_command_when_the_platform_wheels_cannot_be_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    cache = tmp_path / "cache"
    with pytest.raises(BundlingError) as raised:
        install_dependencies(("pyyaml==6.0.4",), cache_dir=cache)
    message = str(raised.value)
    assert "$ " in message and "pip install" in message
    assert "--platform manylinux2014_x86_64" in message and "--python-version 3.12" in message
    assert list(cache.iterdir()) == []  # nothing half-installed, nothing copied from here
