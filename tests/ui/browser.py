"""Debian's headless Chromium driven by Selenium, and ``overseer ui`` as a subprocess: what
the UI tests, ``scripts/ui_screenshots.py`` and ``bench/ui_large.py`` share.

Selenium's own driver download cannot work here: the driver is Debian's ``chromium-driver``
(``scripts/ui-prereqs.sh`` installs both).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import stop_process

CHROMIUM = os.environ.get("OVERSEER_UI_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("OVERSEER_UI_CHROMEDRIVER", "/usr/bin/chromedriver")
URL_LINE = re.compile(r"(http://127\.0\.0\.1:(\d+)/\?token=(\S+))")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() or shutil.which(path)):
            return (
                f"{path} is missing: run scripts/ui-prereqs.sh as root (Debian's chromium, chromium-driver)"
            )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def chromium(width: int = 1400, height: int = 1000) -> Any:
    """A headless Chromium (Debian's) under Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


@dataclass
class UiProcess:
    process: subprocess.Popen[str]
    url: str  # with its token
    port: int
    token: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def running_ui(*target: str, cwd: Path | None = None, timeout: float = 30.0) -> Iterator[UiProcess]:
    """``overseer ui --port 0 TARGET...`` as a subprocess, until the block ends; its printed
    address read from its output."""
    process = subprocess.Popen(
        [sys.executable, "-m", "overseer", "ui", "--port", "0", *target],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                raise AssertionError(f"overseer ui exited: {''.join(seen)}")
            seen.append(line)
            found = URL_LINE.search(line)
            if found:
                yield UiProcess(process, found.group(1), int(found.group(2)), found.group(3))
                return
        raise AssertionError(f"overseer ui printed no address in {timeout} s: {''.join(seen)}")
    finally:
        stop_process(process, timeout=10)


@contextmanager
def serving(client: Any) -> Iterator[Any]:
    """The UI server over ``client`` in this process, on a free port, until the block ends."""
    import threading

    from overseer.ui.server import UiServer

    server = UiServer(client, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
