"""The Lambda code asset, built without Docker.

One zip holds what the functions run, and nothing else:

* the modules of ``functions/`` and ``overseer/`` that the entry points import, at import
  time or later inside a function (``lambda_modules``: the CLI, the local runner, the
  worker and the emulator stay out);
* the graph templates (``templates/``);
* the pinned dependency set of ``functions/requirements.txt``, boto3 / botocore /
  s3transfer included (AWS's advice: the code runs with the SDK it was tested with, not
  with whatever the runtime carries that day), installed from the manylinux wheels for
  Python 3.12. ``python -m infra.lambda_code --lock`` regenerates that file.

The install is cached under ``.cache/lambda-deps/<key>`` (gitignored), keyed on the pins,
the Python version and the platform, so a synth after the first one only copies files.
When pip cannot download those wheels, synth fails: an asset made of this machine's own
packages would not be the one that was tested. The Docker image in the BundlingOptions is
a fallback that CDK uses only if local bundling reports it could not run; local bundling
always runs here.
"""

from __future__ import annotations

import hashlib
import json
import modulefinder
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
REQUIREMENTS_FILE = REPO_ROOT / "functions" / "requirements.txt"

PYTHON_VERSION = "3.12"
PLATFORM = "manylinux2014_x86_64"
RUNTIME = lambda_.Runtime.PYTHON_3_12
# Dependencies of the command line only; no function imports them.
CLI_ONLY = ("click", "rich")
# The packages whose entry points (and what they import) make the asset's code.
ENTRY_PACKAGE = "functions"
SOURCE_PACKAGES = ("overseer", "functions")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache")
_PIP_PLATFORM = [
    "--platform", PLATFORM, "--implementation", "cp", "--python-version", PYTHON_VERSION,
    "--only-binary=:all:",
]  # fmt: skip


class BundlingError(RuntimeError):
    """The Lambda asset cannot be built as it would be deployed."""


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a requirement line (``PyYAML>=6`` -> ``pyyaml``)."""
    name = re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def lambda_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> tuple[str, ...]:
    """The engine's runtime dependencies from pyproject.toml, minus those of the CLI only."""
    with pyproject.open("rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]
    return tuple(sorted(d for d in deps if requirement_name(d) not in CLI_ONLY))


def lock_requirements(target: Path = REQUIREMENTS_FILE) -> list[str]:
    """Resolve ``lambda_requirements()`` for the Lambda platform and write every
    distribution, transitive ones included, pinned with ``==`` to ``target``."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--disable-pip-version-check", *_PIP_PLATFORM, "--target", scratch,
            "--report", str(report), *lambda_requirements(),
        ]  # fmt: skip
        _run_pip(command)
        installs = json.loads(report.read_text())["install"]
    pins = []
    for item in installs:
        extras = ",".join(sorted(item.get("requested_extras") or []))
        name = requirement_name(item["metadata"]["name"]) + (f"[{extras}]" if extras else "")
        pins.append(f"{name}=={item['metadata']['version']}")
    pins.sort()
    header = [
        "# The Lambda functions' dependencies, every one pinned (transitive ones included),",
        f"# resolved for {PLATFORM} / CPython {PYTHON_VERSION}: the asset installs exactly these.",
        "# Generated from pyproject.toml's dependencies minus the CLI's; regenerate with",
        "#   .venv/bin/python -m infra.lambda_code --lock",
    ]
    target.write_text("\n".join([*header, *pins]) + "\n")
    return pins


def locked_requirements(path: Path = REQUIREMENTS_FILE) -> tuple[str, ...]:
    """The pins of the requirements file (comments and blank lines left out)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return tuple(line for line in lines if line)


def _run_pip(command: Sequence[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BundlingError(
            f"pip could not get the Lambda dependencies ({PLATFORM} wheels for Python "
            f"{PYTHON_VERSION}); the asset cannot be built without them. Is PyPI reachable?\n"
            f"$ {shlex.join(command)}\n{result.stderr.strip()}"
        )


def _dependency_key(requirements: Sequence[str]) -> str:
    text = "\n".join([PYTHON_VERSION, PLATFORM, *requirements])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def install_dependencies(requirements: Sequence[str], *, cache_dir: Path = CACHE_DIR) -> Path:
    """pip-install the pinned requirements (``--no-deps``: the pins are the whole set) from
    the Lambda platform's wheels once; return the cached directory. Raises
    ``BundlingError`` naming the pip command when the wheels cannot be downloaded."""
    target = cache_dir / _dependency_key(requirements)
    if (target / ".complete").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="install-", dir=cache_dir))
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-compile", "--no-deps", *_PIP_PLATFORM, "--target", str(staging), *requirements,
    ]  # fmt: skip
    try:
        _run_pip(command)
    except BundlingError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(staging / "bin", ignore_errors=True)  # console scripts: nothing runs them
    (staging / ".complete").write_text("\n".join(requirements) + "\n")
    try:
        os.replace(staging, target)
    except OSError:  # another synth finished the same install first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def lambda_modules(root: Path = REPO_ROOT) -> list[Path]:
    """The source files of ``SOURCE_PACKAGES`` that the entry points in ``functions/`` can
    import, relative to ``root``: every import statement counts, those inside function
    bodies too (modulefinder reads the bytecode of every code object), so a module loaded
    lazily at run time is never left out."""
    finder = modulefinder.ModuleFinder(path=[str(root)])  # third-party and stdlib: not followed
    for entry in sorted((root / ENTRY_PACKAGE).glob("*.py")):
        finder.run_script(str(entry))
    files = {
        Path(module.__file__).resolve().relative_to(root)
        for name, module in finder.modules.items()
        if name.split(".")[0] in SOURCE_PACKAGES and module.__file__
    }
    files |= {path.relative_to(root) for path in (root / ENTRY_PACKAGE).glob("*.py")}
    return sorted(files)


def _iter_files(root: Path) -> Iterable[Path]:
    if not root.exists():
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path


def source_hash(templates_dir: Path, dependencies: Path, modules: Sequence[Path]) -> str:
    """Hash of everything that goes into the asset, so an unchanged tree reuses the zip.

    ``dependencies`` is the installed dependency directory; its name is the key of the pins.
    """
    digest = hashlib.sha256(dependencies.name.encode())
    for module in modules:
        digest.update(str(module).encode())
        digest.update((REPO_ROOT / module).read_bytes())
    for path in _iter_files(templates_dir):
        digest.update(str(path.relative_to(templates_dir.parent)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@jsii.implements(ILocalBundling)
class LocalPythonBundling:
    """Builds the Lambda asset on this machine: the functions' modules, the templates and
    the cached platform wheels."""

    def __init__(self, *, templates_dir: Path, dependencies: Path, modules: Sequence[Path]) -> None:
        self.templates_dir = templates_dir
        self.dependencies = dependencies
        self.modules = modules

    def try_bundle(self, output_dir: str, options: object = None) -> bool:
        out = Path(output_dir)
        shutil.copytree(
            self.dependencies, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete")
        )
        for module in self.modules:
            (out / module).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / module, out / module)
        templates = out / "templates"
        templates.mkdir(exist_ok=True)
        if self.templates_dir.is_dir():
            shutil.copytree(self.templates_dir, templates, dirs_exist_ok=True, ignore=_IGNORE)
        # Lambda runs the code as another user: everything must be world-readable. (copytree
        # gave the root the cache directory's mode, 0700 from mkdtemp.)
        for path in [out, *out.rglob("*")]:
            path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))
        return True


def lambda_code(*, templates_dir: str) -> lambda_.Code:
    """The one code asset that every Overseer Lambda runs (handlers differ, code does not)."""
    templates = (REPO_ROOT / templates_dir).resolve()
    requirements = locked_requirements()
    dependencies = install_dependencies(requirements)
    modules = lambda_modules()
    return lambda_.Code.from_asset(
        str(REPO_ROOT),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=source_hash(templates, dependencies, modules),
        bundling=BundlingOptions(
            # Fallback only: LocalPythonBundling always bundles, so Docker is never needed.
            image=RUNTIME.bundling_image,
            command=[
                "bash",
                "-c",
                "pip install --no-cache-dir --no-deps -t /asset-output -r functions/requirements.txt"
                f" && cp --parents {' '.join(shlex.quote(str(m)) for m in modules)} /asset-output/"
                " && mkdir -p /asset-output/templates"
                f" && (cp -r {shlex.quote(templates_dir)}/. /asset-output/templates/ || true)",
            ],
            local=LocalPythonBundling(templates_dir=templates, dependencies=dependencies, modules=modules),
        ),
    )


# Path of the templates inside the Lambda asset (the value of OVERSEER_TEMPLATES_DIR).
LAMBDA_TEMPLATES_DIR = "/var/task/templates"


if __name__ == "__main__":
    if sys.argv[1:] != ["--lock"]:
        sys.exit(f"usage: {sys.executable} -m infra.lambda_code --lock  (rewrites {REQUIREMENTS_FILE})")
    print("\n".join(lock_requirements()))
