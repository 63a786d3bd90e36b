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
import os
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


def source_hash(templates_dir: Path, requirements: Sequence[str]) -> str:
    """Hash of everything that goes into the asset, so an unchanged tree reuses the zip."""
    digest = hashlib.sha256(_dependency_key(requirements).encode())
    for root in [*(REPO_ROOT / p for p in SOURCE_PACKAGES), templates_dir]:
        for path in _iter_files(root):
            digest.update(str(path.relative_to(root.parent)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def install_dependencies(requirements: Sequence[str], *, cache_dir: Path = CACHE_DIR) -> Path:
    """pip-install the requirements for the Lambda platform once; return the cached dir."""
    target = cache_dir / _dependency_key(requirements)
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
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(
            "Could not install the Lambda dependencies for "
            f"{PLATFORM} / Python {PYTHON_VERSION} (is PyPI reachable?):\n"
            f"$ {' '.join(command)}\n{result.stderr}"
        )
    for entry in list(staging.iterdir()):
        top = entry.name.split("-", 1)[0].lower()
        if top in PROVIDED_BY_RUNTIME or entry.name == "bin":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    (staging / ".complete").write_text("\n".join(requirements) + "\n")
    try:
        os.replace(staging, target)
    except OSError:  # another synth finished the same install first
        shutil.rmtree(staging, ignore_errors=True)
    return target


@jsii.implements(ILocalBundling)
class LocalPythonBundling:
    """Builds the Lambda asset on this machine: sources + cached platform wheels."""

    def __init__(self, *, templates_dir: Path, requirements: Sequence[str]) -> None:
        self.templates_dir = templates_dir
        self.requirements = tuple(requirements)

    def try_bundle(self, output_dir: str, options: object = None) -> bool:
        out = Path(output_dir)
        deps = install_dependencies(self.requirements)
        shutil.copytree(deps, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete"))
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
    return lambda_.Code.from_asset(
        str(REPO_ROOT),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=source_hash(templates, requirements),
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
            local=LocalPythonBundling(templates_dir=templates, requirements=requirements),
        ),
    )


# Path of the templates inside the Lambda asset (the value of OVERSEER_TEMPLATES_DIR).
LAMBDA_TEMPLATES_DIR = "/var/task/templates"
