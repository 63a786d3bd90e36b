"""The worker image, built with Docker from the asset directory `cdk synth` stages, as `cdk deploy` does.

The base is made locally (tests/rehearsal/docker_env.py): Debian bookworm with pyenv's CPython
3.12 under /usr/local, imported as ``python:3.12-slim``. What that leaves untested: the official
image's exact patch release and Debian packages, and the linux/amd64 platform pin (the host's
architecture is used).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.rehearsal import docker_env

pytestmark = pytest.mark.rehearsal

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "worker_batch" / "requirements.txt"


@pytest.fixture(scope="module")
def cdk_out(synthesized: Path) -> Path:
    return synthesized


@pytest.fixture(scope="module")
def worker_image(cdk_out: Path) -> Iterator[str]:
    started = time.monotonic()
    docker_env.ensure_base_images()
    print(f"base images: {time.monotonic() - started:.0f} s")
    started = time.monotonic()
    image = docker_env.build_worker_image(cdk_out)
    print(f"worker image: {time.monotonic() - started:.0f} s")
    yield image


def run_to_end(
    image: str,
    *,
    entrypoint: str | None = None,
    command: Sequence[str] = (),
    mounts: Sequence[tuple[str, str, bool]] = (),
) -> tuple[int, str]:
    container = docker_env.run_container(
        image,
        name=docker_env.unique_name("worker-image-test"),
        env={},
        entrypoint=entrypoint,
        command=command,
        mounts=mounts,
    )
    try:
        return container.wait(timeout=120), container.logs()
    finally:
        container.remove()


def test_the_image_is_built_from_the_staged_asset_not_the_repository(cdk_out: Path) -> None:
    (asset,) = [p for p in cdk_out.glob("asset.*") if (p / "worker_batch" / "Dockerfile").exists()]
    staged = {p.name for p in asset.iterdir()}
    assert {"overseer", "worker_batch", "pyproject.toml", "examples"} <= staged
    assert not staged & {"tests", "infra", "functions", "docs", ".venv", "cdk.out"}


def test_entrypoint_is_the_worker(worker_image: str) -> None:
    code, output = run_to_end(worker_image, command=["--help"])
    assert code == 0, output
    assert "Usage: overseer worker" in output


def test_python_is_3_12(worker_image: str) -> None:
    code, output = run_to_end(
        worker_image, entrypoint="python", command=["-c", "import sys; print(sys.version)"]
    )
    assert code == 0, output
    assert output.startswith("3.12."), output


def test_runs_as_uid_1000(worker_image: str) -> None:
    code, output = run_to_end(worker_image, entrypoint="id", command=["-u"])
    assert (code, output.strip()) == (0, "1000")


def test_the_final_stage_ends_as_the_worker_user(worker_image: str) -> None:
    # The user Batch starts the container as is the last USER of the final stage (the build
    # stage's does not count): the unprivileged one the Dockerfile creates with uid 1000.
    inspected = docker_env.docker("image", "inspect", "--format", "{{.Config.User}}", worker_image)
    assert inspected.stdout.strip() == "overseer"


def test_scratch_is_writable_when_the_host_volume_is_mounted(worker_image: str, tmp_path: Path) -> None:
    host_scratch = tmp_path / "scratch"
    host_scratch.mkdir()
    host_scratch.chmod(0o1777)  # as the instance's boot script leaves /scratch
    code, output = run_to_end(
        worker_image,
        entrypoint="sh",
        command=["-c", "echo ok > /scratch/probe && cat /scratch/probe"],
        mounts=[(str(host_scratch), "/scratch", False)],
    )
    assert (code, output.strip()) == (0, "ok")
    assert (host_scratch / "probe").stat().st_uid == 1000


def test_installed_dependencies_are_the_pinned_ones(worker_image: str) -> None:
    code, output = run_to_end(worker_image, entrypoint="pip", command=["freeze", "--all"])
    assert code == 0, output
    installed = {_normalize(name): version for name, version in re.findall(r"^(\S+)==(\S+)$", output, re.M)}
    pinned = dict(re.findall(r"^([^#\s=]+)==(\S+)$", REQUIREMENTS.read_text(), re.M))
    assert pinned, f"no == pins in {REQUIREMENTS}"
    assert {_normalize(name): version for name, version in pinned.items()}.items() <= installed.items()


def test_dependency_layer_precedes_the_project_code(worker_image: str) -> None:
    # Oldest layer first: the pinned install must come before the engine's wheel and the handlers,
    # so a code change reuses it.
    history = docker_env.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", worker_image)
    layers = history.stdout.splitlines()[::-1]

    def first(pattern: str) -> int:
        found = [i for i, layer in enumerate(layers) if re.search(pattern, layer)]
        assert found, f"no layer matches {pattern!r} in {worker_image}:\n" + "\n".join(layers)
        return found[0]

    requirements = first(r"pip install .*-r /opt/overseer/requirements\.txt")
    assert requirements < first(r"COPY .* in /tmp/wheels")
    assert requirements < first(r"COPY .* in /opt/overseer/handlers/")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_containers_run_as_the_rehearsal_asks_and_stop_with_sigterm(worker_image: str) -> None:
    # docker_env's own contract, on which the worker and Lambda rehearsals rely.
    script = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('SIGTERM to pid', os.getpid()), sys.exit(3)))\n"
        "open('/tmp/ok', 'w').write('x')\n"
        "try:\n    open('/etc/probe', 'w')\nexcept OSError as e:\n    print('root read-only', e.errno)\n"
        "print('uid', os.getuid(), 'cwd', os.getcwd(), 'env', os.environ['PROBE'], flush=True)\n"
        "time.sleep(60)\n"
    )
    container = docker_env.run_container(
        docker_env.LAMBDA_BASE_IMAGE,
        name=docker_env.unique_name("docker-env-test"),
        env={"PROBE": "a=b c"},
        user="1000:1000",
        read_only_root=True,
        tmpfs=["/tmp"],
        memory_mib=128,
        entrypoint="python3",
        command=["-u", "-c", script],
        workdir="/tmp",
    )
    try:
        deadline = time.monotonic() + 30
        while "env" not in container.logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (container.status(), container.exit_code()) == ("running", None)
        container.stop(timeout=10)
        assert (container.status(), container.exit_code()) == ("exited", 3)
        assert container.logs().splitlines() == [
            "root read-only 30",
            "uid 1000 cwd /tmp env a=b c",
            "SIGTERM to pid 1",
        ]
    finally:
        container.remove()
