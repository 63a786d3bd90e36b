"""The ``overseer`` command as a user runs it, for the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def overseer(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command in ``cwd`` (where the embedded backend keeps its state, .overseer),
    with a wide terminal and ``env`` over this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "overseer", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
    )
