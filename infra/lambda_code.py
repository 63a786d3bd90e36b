"""The Lambda code asset, built without Docker.

One zip holds the engine (``overseer/``), the thin entry points (``functions/``), the graph
templates (``templates/``) and the engine's third-party dependencies installed for the
Lambda platform (``pip install --platform manylinux2014_x86_64 --only-binary=:all:``).
boto3 / botocore / s3transfer are left out: the Lambda runtime provides them.

The dependency install is cached under ``.cache/lambda-deps/<key>`` (gitignored), keyed on
the requirement list, the Python version and the platform, so a synth after the first one
only copies files. The Docker image in the BundlingOptions is a fallback that CDK uses only
if local bundling reports it could not run; local bundling always runs here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, ILocalBundling
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".cache" / "lambda-deps"

PYTHON_VERSION = "3.12"
PLATFORM = "manylinux2014_x86_64"
RUNTIME = lambda_.Runtime.PYTHON_3_12
# In the Lambda Python runtime already; bundling them would only add ~80 MB.
PROVIDED_BY_RUNTIME = ("boto3", "botocore", "s3transfer")
SOURCE_PACKAGES = ("overseer", "functions")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache")


def engine_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> tuple[str, ...]:
    """The engine's runtime dependencies from pyproject.toml, minus what Lambda provides."""
    with pyproject.open("rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]

    def name(req: str) -> str:
        for sep in "<>=!~[; ":
            req = req.split(sep, 1)[0]
        return req.strip().lower()

    return tuple(sorted(d for d in deps if name(d) not in PROVIDED_BY_RUNTIME))


def _dependency_key(requirements: Sequence[str]) -> str:
    text = "\n".join([PYTHON_VERSION, PLATFORM, *requirements])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _iter_files(root: Path) -> Iterable[Path]:
    if not root.exists():
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path


def source_hash(templates_dir: Path, dependencies: Path) -> str:
    """Hash of everything that goes into the asset, so an unchanged tree reuses the zip.

    ``dependencies`` is the installed dependency directory; its name says how it was made
    (the requirement key, plus ``-local`` for the offline fallback).
    """
    digest = hashlib.sha256(dependencies.name.encode())
    for root in [*(REPO_ROOT / p for p in SOURCE_PACKAGES), templates_dir]:
        for path in _iter_files(root):
            digest.update(str(path.relative_to(root.parent)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _prune_runtime_packages(directory: Path) -> None:
    for entry in list(directory.iterdir()):
        top = entry.name.split("-", 1)[0].lower()
        if top in PROVIDED_BY_RUNTIME or entry.name == "bin":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _finish(staging: Path, target: Path, requirements: Sequence[str]) -> Path:
    _prune_runtime_packages(staging)
    (staging / ".complete").write_text("\n".join(requirements) + "\n")
    try:
        os.replace(staging, target)
    except OSError:  # another synth finished the same install first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def install_dependencies(requirements: Sequence[str], *, cache_dir: Path = CACHE_DIR) -> Path:
    """pip-install the requirements for the Lambda platform once; return the cached dir.

    Offline (pip cannot reach the index) and with nothing cached, the distributions
    installed in the running Python environment are copied instead
    (``copy_installed_distributions``) and a warning is printed: the result is fine for
    ``cdk synth`` and the tests; deploy from a machine that can reach PyPI, so the
    Lambda gets the Python 3.12 wheels.
    """
    key = _dependency_key(requirements)
    target = cache_dir / key
    if (target / ".complete").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="install-", dir=cache_dir))
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-compile", "--platform", PLATFORM, "--implementation", "cp",
        "--python-version", PYTHON_VERSION, "--only-binary=:all:",
        "--target", str(staging), *requirements,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return _finish(staging, target, requirements)

    shutil.rmtree(staging, ignore_errors=True)
    fallback = cache_dir / f"{key}-local"
    if (fallback / ".complete").exists():
        return fallback
    staging = Path(tempfile.mkdtemp(prefix="copy-", dir=cache_dir))
    try:
        copy_installed_distributions(requirements, staging)
    except importlib.metadata.PackageNotFoundError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(
            f"Could not install the Lambda dependencies for {PLATFORM} / Python "
            f"{PYTHON_VERSION} (is PyPI reachable?), and {exc.name} is not installed "
            f"here to copy instead:\n$ {' '.join(command)}\n{result.stderr}"
        ) from exc
    print(
        "WARNING: pip could not download the Lambda dependencies (offline?); bundled the "
        "ones installed in this environment instead. Synthesise again with network access "
        f"before deploying.\n{result.stderr.strip()[-500:]}",
        file=sys.stderr,
    )
    return _finish(staging, fallback, requirements)


def _requirement_name(requirement: str) -> str:
    name = re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def copy_installed_distributions(requirements: Sequence[str], target: Path) -> list[str]:
    """Copy the installed distributions of ``requirements`` and their dependencies (not
    extras, not those the Lambda runtime provides) into ``target``; return their names."""
    pending = [_requirement_name(r) for r in requirements]
    seen: set[str] = set(PROVIDED_BY_RUNTIME)
    copied = []
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        distribution = importlib.metadata.distribution(name)
        for file in distribution.files or []:
            if file.parts[0] == ".." or "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            source = Path(str(distribution.locate_file(file)))
            if source.is_file():
                destination = target / file
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination)
        copied.append(name)
        for requirement in distribution.requires or []:
            marker = requirement.partition(";")[2]
            if "extra" in marker or ("python_version" in marker and "<" in marker):
                continue
            pending.append(_requirement_name(requirement))
    return sorted(copied)


@jsii.implements(ILocalBundling)
class LocalPythonBundling:
    """Builds the Lambda asset on this machine: sources + cached platform wheels."""

    def __init__(self, *, templates_dir: Path, dependencies: Path) -> None:
        self.templates_dir = templates_dir
        self.dependencies = dependencies

    def try_bundle(self, output_dir: str, options: object = None) -> bool:
        out = Path(output_dir)
        shutil.copytree(
            self.dependencies, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete")
        )
        for package in SOURCE_PACKAGES:
            source = REPO_ROOT / package
            if source.is_dir():
                shutil.copytree(source, out / package, dirs_exist_ok=True, ignore=_IGNORE)
        templates = out / "templates"
        templates.mkdir(exist_ok=True)
        if self.templates_dir.is_dir():
            shutil.copytree(self.templates_dir, templates, dirs_exist_ok=True, ignore=_IGNORE)
        return True


def lambda_code(*, templates_dir: str) -> lambda_.Code:
    """The one code asset that every Overseer Lambda runs (handlers differ, code does not)."""
    templates = (REPO_ROOT / templates_dir).resolve()
    requirements = engine_requirements()
    dependencies = install_dependencies(requirements)
    return lambda_.Code.from_asset(
        str(REPO_ROOT),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=source_hash(templates, dependencies),
        bundling=BundlingOptions(
            # Fallback only: LocalPythonBundling always bundles, so Docker is never needed.
            image=RUNTIME.bundling_image,
            command=[
                "bash",
                "-c",
                "pip install --no-cache-dir -t /asset-output "
                + " ".join(shlex.quote(r) for r in requirements)
                + " && "
                "cp -r overseer functions /asset-output/ && mkdir -p /asset-output/templates && "
                f"(cp -r {shlex.quote(templates_dir)}/. /asset-output/templates/ || true)",
            ],
            local=LocalPythonBundling(templates_dir=templates, dependencies=dependencies),
        ),
    )


# Path of the templates inside the Lambda asset (the value of OVERSEER_TEMPLATES_DIR).
LAMBDA_TEMPLATES_DIR = "/var/task/templates"
