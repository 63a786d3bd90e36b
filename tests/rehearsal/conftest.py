"""The rehearsal's synthesis: a fresh ``cdk synth`` of the real app, as a user runs it.

The context is cdk.json's with the settings a rehearsal needs on top, each one a setting a
user may choose: a short lease and idle exit (so a lost worker is recovered in seconds,
not minutes), the deployment-check handlers (the daily report plus one job per permission
a pipeline needs), one allowed bucket and one rows table.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ALLOWED_BUCKET = "rehearsal-partner-drop"
ROWS_TABLE = "rehearsal-user-rows"
CONTEXT = {
    "leaseSeconds": 30,
    "idleExitSeconds": 60,
    "handlersModule": "examples.deployment_check.handlers",
    "allowedBuckets": json.dumps([ALLOWED_BUCKET]),
    "rowsTables": json.dumps([ROWS_TABLE]),
}
LARGE_POOL = {
    "vcpus": 2,
    "memoryMiB": 7000,
    "instanceTypes": ["m6i.xlarge"],
    "maxWorkers": 2,
    "handlersModule": "examples.pools.handlers",
}
POOLS_CONTEXT = {**CONTEXT, "pools": json.dumps({"large": LARGE_POOL})}


def synthesize(outdir: Path, context: dict[str, object] = CONTEXT) -> Path:
    """``npx aws-cdk synth`` into ``outdir``; returns it. Fails with the CLI's output."""
    command = ["npx", "--no-install", "aws-cdk", "synth", "--quiet", "--output", str(outdir)]
    for key, value in context.items():
        command += ["-c", f"{key}={value}"]
    # A plain synth, as on a machine without credentials: the emulator settings other tests
    # put in the environment would make the CLI look up the account (and write
    # cdk.context.json into the repository).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_DEFAULT_"))}
    env.update(CDK_DISABLE_VERSION_CHECK="1", JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION="1")
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        raise AssertionError(
            f"cdk synth failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return outdir


def _sources_digest(context: dict[str, object]) -> str:
    digest = hashlib.sha256(json.dumps(context, sort_keys=True).encode())
    for root in ("cdk.json", "infra", "functions", "overseer", "worker_batch", "examples", "templates"):
        for path in (
            sorted((REPO_ROOT / root).rglob("*")) if (REPO_ROOT / root).is_dir() else [REPO_ROOT / root]
        ):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO_ROOT)).encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def synthesized_once(context: dict[str, object]) -> Path:
    """One fresh synth of the current sources with ``context``, shared by the pytest-xdist
    workers and kept until a source or the context changes."""
    outdir = Path(tempfile.gettempdir()) / f"overseer-rehearsal-synth-{_sources_digest(context)}"
    with (Path(tempfile.gettempdir()) / "overseer-rehearsal-synth.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (outdir / "manifest.json").exists():
            shutil.rmtree(outdir, ignore_errors=True)
            synthesize(outdir, context)
    return outdir


@pytest.fixture(scope="session")
def synthesized() -> Path:
    """The stack with the default pool only (cdk.json's ``pools: {}``)."""
    return synthesized_once(CONTEXT)


@pytest.fixture(scope="session")
def synthesized_with_pools() -> Path:
    """The stack with a second worker pool, ``large`` (``POOLS_CONTEXT``)."""
    return synthesized_once(POOLS_CONTEXT)
