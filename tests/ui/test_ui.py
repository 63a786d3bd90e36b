"""``overseer ui`` in a real browser (Debian's headless Chromium under Selenium) against a
real ``overseer local up``: what a person sees, and what the server refuses."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ops.conftest import Stack, start_stack, stop_stack
from tests.ui.browser import UiProcess, browser_missing, chromium, running_ui

pytestmark = [
    pytest.mark.e2e,
    # Skipped on a machine without the browser, never in CI (.ci/run installs it).
    pytest.mark.skipif(
        browser_missing() is not None and not os.environ.get("CI"), reason=str(browser_missing())
    ),
]

# An error message with markup in it: the page must show it as text.
HOSTILE = "<b>boom</b><img src=x onerror=\"document.title='pwned'\">"
HANDLERS = f"""
import pathlib
import time

import overseer


def make(job):
    time.sleep(float(job.args.get("sleep", 0)))
    print(f"making {{job.name}}", flush=True)
    return [overseer.Artifact(key=f"{{job.graph_id}}/{{job.name}}.txt", data=job.name.encode() * 3)]


def flaky(job):
    if not pathlib.Path(job.args["fixed"]).exists():
        raise ValueError({HOSTILE!r})
    return make(job)


def chatty(job):
    for number in range(int(job.args["lines"])):
        print(f"line {{number:05d}}", flush=True)


HANDLERS = {{"make": make, "flaky": flaky, "chatty": chatty}}
"""
RED_FILL = "rgb(254, 226, 226)"
GREEN_FILL = "rgb(220, 252, 231)"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("ui-stack")
    handlers = root / "ui_handlers.py"
    handlers.write_text(HANDLERS)
    running = start_stack(root, root / "state", handlers, workers=2)
    try:
        yield running
    finally:
        stop_stack(running)


@pytest.fixture(scope="module")
def ui(stack: Stack) -> Iterator[UiProcess]:
    with running_ui("--state-dir", str(stack.state_dir)) as process:
        yield process


@pytest.fixture(scope="module")
def browser(ui: UiProcess) -> Iterator[Any]:
    driver = chromium()
    try:
        driver.get(ui.url)  # the token: sets the cookie, then the address without it
        yield driver
    finally:
        driver.quit()


def submit(stack: Stack, name: str, document: dict[str, Any]) -> None:
    path = stack.root / f"{name}.json"
    path.write_text(json.dumps({"id": name, **document}))
    stack.cli("submit", str(path))


def wait(browser: Any, condition: Any, timeout: float = 20.0) -> Any:
    from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page redraws what changed while it polls: an element found a moment ago may be gone.
    ignored = (StaleElementReferenceException, NoAlertPresentException)
    return WebDriverWait(browser, timeout, poll_frequency=0.1, ignored_exceptions=ignored).until(condition)


def css(browser: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(browser.find_elements(By.CSS_SELECTOR, selector))


def shown_status(browser: Any) -> str | None:
    titles = css(browser, "h1[data-status]")
    return titles[0].get_attribute("data-status") if titles else None


def node(browser: Any, job: str) -> Any:
    found = [n for n in css(browser, "#dag g.node") if n.get_attribute("data-job") == job]
    return found[0] if found else None


def node_fill(browser: Any, job: str) -> str:
    fill: str = browser.execute_script(
        "return getComputedStyle(arguments[0].querySelector('rect.box')).fill", node(browser, job)
    )
    return fill


def open_page(browser: Any, ui: UiProcess, hash_route: str) -> None:
    browser.get(f"{ui.base}/{hash_route}")


def request(
    ui: UiProcess, path: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, bytes]:
    sent = urllib.request.Request(
        ui.base + path, method=method, headers=headers or {}, data=body if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(sent, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


def test_without_the_token_or_from_another_host_or_origin_nothing_is_served(ui: UiProcess) -> None:
    bearer = {"Authorization": f"Bearer {ui.token}"}
    assert request(ui, "/")[0] == 403
    assert request(ui, "/static/app.js")[0] == 403
    status, body = request(ui, "/api/graphs")
    assert status == 403 and "token" in json.loads(body)["error"]
    assert request(ui, "/?token=not-the-token")[0] == 403
    assert request(ui, "/api/graphs", headers={"Authorization": "Bearer not-the-token"})[0] == 403
    assert request(ui, "/api/graphs", headers={"Cookie": f"overseer_ui_{ui.port}=not-the-token"})[0] == 403
    # DNS rebinding: the right token, but a page of another site whose name points here.
    assert request(ui, "/api/graphs", headers={**bearer, "Host": f"evil.example:{ui.port}"})[0] == 403
    assert request(ui, "/api/graphs", headers=bearer)[0] == 200
    json_post = {**bearer, "Content-Type": "application/json"}
    cross_site = request(
        ui, "/api/graphs/any/cancel", method="POST", headers={**json_post, "Origin": "http://evil.example"}
    )
    assert cross_site[0] == 403
    assert request(ui, "/api/graphs/any/cancel", method="POST", headers=bearer, body=b"{}")[0] == 415
    assert (
        request(ui, "/api/graphs/no-such-graph/cancel", method="POST", headers=json_post, body=b"{}")[0]
        == 404
    )

    # The printed address: its token becomes a cookie, and the page is served without it.
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(ui.url, timeout=10) as page:
        assert page.status == 200 and page.url == f"{ui.base}/"
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "unsafe-inline" not in policy
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert page.headers["Referrer-Policy"] == "no-referrer"


def test_a_graph_finishes_live_without_a_reload(stack: Stack, ui: UiProcess, browser: Any) -> None:
    jobs = {
        "first": {"type": "make", "args": {"sleep": 0.6}},
        "second": {"type": "make", "args": {"sleep": 0.6}, "deps": ["first"]},
        "third": {"type": "make", "args": {"sleep": 0.6}, "deps": ["second"]},
        "side": {"type": "make", "deps": ["first"]},
    }
    submit(stack, "ui-live", {"jobs": jobs})
    open_page(browser, ui, "#/graph/ui-live")
    wait(browser, lambda b: node(b, "third") is not None)
    browser.execute_script("window.stillTheSamePage = true")
    assert shown_status(browser) == "running"
    assert node(browser, "third").get_attribute("data-status") != "finished"

    wait(browser, lambda b: shown_status(b) == "finished")
    wait(browser, lambda b: all(node(b, n).get_attribute("data-status") == "finished" for n in jobs))
    assert browser.execute_script("return window.stillTheSamePage") is True  # no reload
    assert node_fill(browser, "third") == GREEN_FILL
    counts = {c.get_attribute("data-status"): c.text for c in css(browser, "#counts .count")}
    assert counts["finished"] == "4 finished" and counts["failed"] == "0 failed"
    rows = [r.get_attribute("data-job") for r in css(browser, "#jobs-table tbody tr")]
    assert sorted(rows) == sorted(jobs)


def test_a_failed_job_is_red_with_its_error_as_text_and_rerun_turns_it_green(
    stack: Stack, ui: UiProcess, browser: Any
) -> None:
    fixed = stack.root / "fixed"
    jobs = {
        "load": {"type": "make"},
        "shaky": {"type": "flaky", "args": {"fixed": str(fixed)}, "deps": ["load"]},
        "report": {"type": "make", "deps": ["shaky"]},
    }
    submit(stack, "ui-fixme", {"jobs": jobs})
    stack.wait_for(lambda: stack.jobs("ui-fixme")["shaky"]["status"] == "failed", what="shaky to fail")

    # The graphs page, filtered by status.
    open_page(browser, ui, "#/?status=failed")
    wait(browser, lambda b: css(b, "#graphs-table tbody tr"))
    assert [r.get_attribute("data-graph") for r in css(browser, "#graphs-table tbody tr")] == ["ui-fixme"]

    open_page(browser, ui, "#/graph/ui-fixme")
    wait(browser, lambda b: shown_status(b) == "failed")
    wait(browser, lambda b: node(b, "shaky") is not None)
    assert node(browser, "shaky").get_attribute("data-status") == "failed"
    assert node_fill(browser, "shaky") == RED_FILL
    assert node(browser, "report").get_attribute("data-status") == "aborted"
    (row,) = [r for r in css(browser, "#jobs-table tbody tr") if r.get_attribute("data-job") == "shaky"]
    assert row.find_elements("css selector", "td.error-cell")[0].text == f"ValueError: {HOSTILE}"
    assert not css(browser, "main img") and not [b for b in css(browser, "main b") if b.text == "boom"]
    assert browser.title == "Overseer"

    # The job page: its attempt's error as text, the traceback, the args.
    row.find_elements("css selector", "a")[0].click()
    wait(browser, lambda b: shown_status(b) == "failed" and css(b, "#attempts .attempt"))
    (attempt,) = css(browser, "#attempts .attempt")
    assert attempt.find_elements("css selector", ".message")[0].text == f"ValueError: {HOSTILE}"
    traceback = attempt.find_elements("css selector", "pre.traceback")[0].text
    assert "Traceback (most recent call last)" in traceback and "raise ValueError" in traceback
    assert json.loads(css(browser, "#job-args")[0].text) == {"fixed": str(fixed)}
    assert not css(browser, "main img") and browser.title == "Overseer"

    # Fixed; Rerun (the confirmation accepted): the job runs again and finishes.
    fixed.write_text("yes")
    browser.execute_script("window.stillTheSamePage = true")
    css(browser, "#rerun-job")[0].click()
    alert = wait(browser, lambda b: b.switch_to.alert)
    assert "rerun job shaky" in alert.text
    alert.accept()
    wait(browser, lambda b: shown_status(b) == "finished")
    wait(browser, lambda b: css(b, "#artifacts-table tbody tr"))
    (artifact,) = css(browser, "#artifacts-table tbody tr")
    cells = [cell.text for cell in artifact.find_elements("css selector", "td")]
    assert cells[0].endswith("ui-fixme/shaky.txt") and cells[1] == "15 B"
    assert cells[2] == hashlib.sha256(b"shaky" * 3).hexdigest()
    href = artifact.find_elements("css selector", "a")[0].get_attribute("href")
    downloaded = browser.execute_async_script(
        "fetch(arguments[0]).then(r => r.text()).then(arguments[1])", href
    )
    assert downloaded == "shaky" * 3
    wait(browser, lambda b: "making shaky" in " ".join(p.text for p in css(b, "#logs pre")))

    # Back on the graph page (no reload): the node is green, the graph has finished.
    next(crumb for crumb in css(browser, "#crumbs a") if crumb.text == "ui-fixme").click()
    wait(
        browser,
        lambda b: (
            node(b, "shaky") is not None and node(b, "shaky").get_attribute("data-status") == "finished"
        ),
    )
    assert node_fill(browser, "shaky") == GREEN_FILL
    assert browser.execute_script("return window.stillTheSamePage") is True
    # report was aborted: the graph runs it again only when asked (Rerun failed jobs).
    css(browser, "#rerun-graph")[0].click()
    browser.switch_to.alert.accept()
    wait(browser, lambda b: shown_status(b) == "finished")
    wait(browser, lambda b: node(b, "report").get_attribute("data-status") == "finished")


def test_cancel_asks_first(stack: Stack, ui: UiProcess, browser: Any) -> None:
    submit(stack, "ui-cancel", {"jobs": {"long": {"type": "make", "args": {"sleep": 30}}}})
    open_page(browser, ui, "#/graph/ui-cancel")
    wait(browser, lambda b: shown_status(b) == "running")
    css(browser, "#cancel-graph")[0].click()
    browser.switch_to.alert.dismiss()  # "no": nothing happens
    assert json.loads(stack.cli("status", "ui-cancel", "--json").stdout)["status"] == "running"
    css(browser, "#cancel-graph")[0].click()
    browser.switch_to.alert.accept()
    wait(browser, lambda b: shown_status(b) == "aborted")
    assert json.loads(stack.cli("status", "ui-cancel", "--json").stdout)["status"] == "aborted"


def test_a_long_log_shows_its_end_and_downloads_whole(stack: Stack, ui: UiProcess, browser: Any) -> None:
    submit(stack, "ui-chatty", {"jobs": {"talk": {"type": "chatty", "args": {"lines": 6000}}}})
    open_page(browser, ui, "#/graph/ui-chatty/job/talk")
    wait(browser, lambda b: shown_status(b) == "finished" and css(b, "#logs pre"))
    wait(browser, lambda b: "line 05999" in css(b, "#logs pre")[0].text)
    (shown,) = css(browser, "#logs pre")
    assert "line 00999" not in shown.text  # the page keeps the last 5,000 lines
    assert "(the last 5000 of" in css(browser, "#logs .log-source")[0].text

    href = css(browser, "#logs a.whole-log")[0].get_attribute("href")
    whole = browser.execute_async_script("fetch(arguments[0]).then(r => r.text()).then(arguments[1])", href)
    printed = [line for line in whole.splitlines() if line.startswith("line ")]
    assert printed == [f"line {n:05d}" for n in range(6000)]
    # A job that does not exist: an error naming it, not an empty download.
    status, body = request(
        ui, "/api/graphs/ui-chatty/jobs/nope/logs.txt", headers={"Authorization": f"Bearer {ui.token}"}
    )
    assert status == 404 and "nope" in json.loads(body)["error"]
