"""The README's and docs' screenshots of ``overseer ui``: docs/ui-graphs.png, docs/ui-graph.png,
docs/ui-job.png.

    .venv/bin/python scripts/ui_screenshots.py [--out docs]

Starts ``overseer local up`` on a temporary state directory, runs a few graphs of a small
pipeline there (one finished, one with a failed job, one still running), serves them with
``overseer ui`` and photographs the three pages in Debian's headless Chromium (the browser
tests' setup, ``tests/ui/browser.py``; scripts/ui-prereqs.sh installs it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.ops.conftest import Stack, start_stack, stop_stack
from tests.ui.browser import browser_missing, chromium, running_ui

HANDLERS = """
import json
import time

import overseer


def fetch(job):
    time.sleep(float(job.args.get("sleep", 0.2)))
    print(f"fetched {job.args['company']}: 120 rows", flush=True)
    rows = [{"company": job.args["company"], "n": i} for i in range(120)]
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.json", data=json.dumps(rows).encode())]


def parse(job):
    time.sleep(float(job.args.get("sleep", 0.2)))
    if job.args.get("company") == "globex":
        raise ValueError("column 'revenue' is missing in globex.csv (expected: date, revenue, region)")
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.parquet", data=b"PAR1" * 64)]


def aggregate(job):
    time.sleep(float(job.args.get("sleep", 0.2)))
    return [overseer.Artifact(key=f"{job.graph_id}/summary.csv", data=b"company,revenue\\n")]


HANDLERS = {"fetch": fetch, "parse": parse, "aggregate": aggregate, "report": aggregate}
"""
COMPANIES = ["acme", "initech", "globex", "umbrella", "hooli", "wayne"]


def pipeline(graph_id: str, companies: list[str], sleep: float) -> dict[str, object]:
    jobs: dict[str, object] = {}
    for company in companies:
        jobs[f"fetch-{company}"] = {"type": "fetch", "args": {"company": company, "sleep": sleep}}
        jobs[f"parse-{company}"] = {
            "type": "parse",
            "args": {"company": company, "sleep": sleep},
            "deps": [f"fetch-{company}"],
        }
    jobs["aggregate"] = {"type": "aggregate", "deps": [f"parse-{c}" for c in companies]}
    jobs["report"] = {"type": "report", "deps": ["aggregate"]}
    return {"id": graph_id, "args": {"date": "2026-11-30"}, "jobs": jobs}


def submit(stack: Stack, document: dict[str, object]) -> None:
    path = stack.root / f"{document['id']}.json"
    path.write_text(json.dumps(document))
    stack.cli("submit", str(path))


def graph_status(stack: Stack, graph_id: str) -> str:
    return str(json.loads(stack.cli("status", graph_id, "--json").stdout)["status"])


def wait_for_page(driver: object, script: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(script):  # type: ignore[attr-defined]
            time.sleep(0.3)  # the last paint
            return
        time.sleep(0.1)
    raise SystemExit(f"the page did not show {script!r} in {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    options = parser.parse_args()
    missing = browser_missing()
    if missing:
        sys.exit(f"ui_screenshots: {missing}")

    with tempfile.TemporaryDirectory(prefix="ui-shots-") as root_name:
        root = Path(root_name)
        handlers = root / "pipeline_handlers.py"
        handlers.write_text(HANDLERS)
        stack = start_stack(root, root / "state", handlers, workers=3)
        try:
            submit(stack, pipeline("revenue-2026-11-29", ["acme", "initech", "umbrella", "hooli"], 0.05))
            stack.wait_for(lambda: graph_status(stack, "revenue-2026-11-29") == "finished")
            submit(stack, pipeline("revenue-2026-11-30", COMPANIES, 0.1))
            stack.wait_for(lambda: graph_status(stack, "revenue-2026-11-30") == "failed")
            submit(stack, pipeline("revenue-2026-12-01", COMPANIES, 20))
            time.sleep(1.5)
            with running_ui("--state-dir", str(stack.state_dir)) as ui:
                driver = chromium(width=1280, height=1020)
                try:
                    driver.get(ui.url)
                    wait_for_page(
                        driver, "return document.querySelectorAll('#graphs-table tbody tr').length === 3"
                    )
                    driver.save_screenshot(str(options.out / "ui-graphs.png"))
                    driver.get(f"{ui.base}/#/graph/revenue-2026-11-30")
                    wait_for_page(driver, "return document.querySelector('h1[data-status=failed]') !== null")
                    driver.save_screenshot(str(options.out / "ui-graph.png"))
                    driver.get(f"{ui.base}/#/graph/revenue-2026-11-30/job/parse-globex")
                    wait_for_page(driver, "return document.querySelector('#attempts pre.traceback') !== null")
                    driver.save_screenshot(str(options.out / "ui-job.png"))
                finally:
                    driver.quit()
        finally:
            stop_stack(stack)
    for name in ("ui-graphs.png", "ui-graph.png", "ui-job.png"):
        print(options.out / name)


if __name__ == "__main__":
    main()
