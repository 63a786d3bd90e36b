"""How fast ``overseer ui`` shows a 10,000-job graph: its page in headless Chromium.

    python bench/ui_large.py                    # 10,000 jobs, running on 2 workers meanwhile
    python bench/ui_large.py --jobs 20000 --workers 0 --loads 5

A generated graph (``extract_i -> transform_i -> load_i``, a third each, and one ``report``
depending on every load: its edges kept in chunk items) is submitted to a local state
directory with the engine (``operations.submit_graph``); ``overseer local up`` then runs it
on ``--workers`` workers (0: none, the graph stays as submitted) while ``overseer ui``
serves it. Figures printed:

* the server: one full read of the graph page's rows (``/state``) and one refresh (the
  jobs changed since the previous read, ``/state?since=``): time, rows and bytes;
* the browser: from navigation start (``performance.now()``) until the collapsed drawing
  (one node per job type) and the first page of the jobs table are on the page, for each of
  ``--loads`` fresh loads. The goal is under 2 s.

Needs Debian's chromium and chromium-driver (scripts/ui-prereqs.sh) and selenium.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from overseer import operations
from overseer.backends.embedded import embedded_services
from overseer.runner import local_settings
from tests.ui.browser import browser_missing, chromium, running_ui

HANDLERS = """
import time


def step(job):
    time.sleep(0.005)


HANDLERS = {"extract": step, "transform": step, "load": step, "report": step}
"""
DRAWN = """
const nodes = document.querySelectorAll('#dag g.node').length;
const rows = document.querySelectorAll('#jobs-table tbody tr').length;
return nodes > 0 && rows > 0 ? [performance.now(), nodes, rows] : null;
"""


def generated_graph(graph_id: str, jobs: int) -> dict[str, Any]:
    third = max(1, (jobs - 1) // 3)
    document: dict[str, Any] = {}
    for i in range(third):
        document[f"extract-{i:05d}"] = {"type": "extract"}
        document[f"transform-{i:05d}"] = {"type": "transform", "deps": [f"extract-{i:05d}"]}
        document[f"load-{i:05d}"] = {"type": "load", "deps": [f"transform-{i:05d}"]}
    document["report"] = {"type": "report", "deps": [f"load-{i:05d}" for i in range(third)]}
    return {"id": graph_id, "jobs": document}


def timed_get(base: str, token: str, path: str) -> tuple[float, dict[str, Any], int]:
    started = time.perf_counter()
    sent = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(sent, timeout=60) as answer:
        raw = answer.read()
    return time.perf_counter() - started, json.loads(raw), len(raw)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument(
        "--workers", type=int, default=2, help="workers running the graph meanwhile (0: none)"
    )
    parser.add_argument("--loads", type=int, default=3, help="fresh page loads timed")
    options = parser.parse_args()
    missing = browser_missing()
    if missing:
        sys.exit(f"ui_large: {missing}")

    with tempfile.TemporaryDirectory(prefix="ui-large-") as root_name:
        root = Path(root_name)
        state_dir = root / "state"
        services = embedded_services(state_dir, local_settings(state_dir))
        started = time.perf_counter()
        graph, _ = operations.submit_graph(services, generated_graph("big", options.jobs))
        print(f"submitted graph big: {graph.jobs_total} jobs in {time.perf_counter() - started:.2f} s")

        stack = None
        if options.workers:
            (root / "bench_handlers.py").write_text(HANDLERS)
            log = (root / "local-up.log").open("wb")
            stack = subprocess.Popen(
                [sys.executable, "-m", "overseer", "local", "up", "--state-dir", str(state_dir),
                 "--handlers", str(root / "bench_handlers.py"), "--workers", str(options.workers)],
                stdout=log, stderr=subprocess.STDOUT, cwd=root, env=dict(os.environ),
            )  # fmt: skip
            time.sleep(4)  # let it run a while: the page then shows every status
        try:
            with running_ui("--state-dir", str(state_dir)) as ui:
                full_s, state, full_bytes = timed_get(ui.base, ui.token, "/api/graphs/big/state")
                time.sleep(2)  # one poll interval of the page
                since = urllib.parse.quote(state["cursor"])
                change_s, changed, change_bytes = timed_get(
                    ui.base, ui.token, f"/api/graphs/big/state?since={since}"
                )
                counts: dict[str, int] = {}
                for row in state["jobs"]:
                    counts[row["status"]] = counts.get(row["status"], 0) + 1
                print(f"graph status {state['graph']['status']}, jobs by status {counts}")
                print(
                    f"server, full read:  {full_s * 1000:7.0f} ms, {len(state['jobs'])} rows, "
                    f"{full_bytes / 1e6:.2f} MB, collapsed={state['collapsed']}"
                )
                print(
                    f"server, refresh:    {change_s * 1000:7.0f} ms, {len(changed['jobs'])} rows changed "
                    f"in 2 s, {change_bytes / 1e3:.1f} KB"
                )
                loads = page_loads(ui.url, ui.base, options.loads)
                print(
                    f"browser, graph page drawn ({'collapsed' if state['collapsed'] else 'job by job'}, "
                    "first table page): "
                    f"median {statistics.median(loads):.0f} ms, each {[round(x) for x in loads]} ms "
                    f"(goal < 2000 ms)"
                )
        finally:
            if stack is not None:
                stack.send_signal(signal.SIGTERM)
                stack.wait(timeout=60)


def page_loads(url: str, base: str, loads: int) -> list[float]:
    driver = chromium()
    try:
        driver.get(url)  # the token's cookie
        times = []
        for _ in range(loads):
            driver.get("about:blank")
            driver.get(f"{base}/#/graph/big")
            deadline = time.monotonic() + 60
            drawn = None
            while drawn is None and time.monotonic() < deadline:
                drawn = driver.execute_script(DRAWN)
                if drawn is None:
                    time.sleep(0.01)
            if drawn is None:
                raise SystemExit("the graph page was not drawn in 60 s")
            times.append(float(drawn[0]))
        nodes, rows = drawn[1], drawn[2]
        print(f"browser: {nodes} nodes drawn, {rows} table rows")
        driver.save_screenshot(str(Path(tempfile.gettempdir()) / "ui-large.png"))
        return times
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
