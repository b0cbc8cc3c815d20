"""tracker.js in headless Chromium (driven over the DevTools protocol) against a page on localhost,
with the events checked in Kafka."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.fixtures.collector import RunningCollector

PAGE = """<!doctype html>
<html><head><title>{title}</title>
<script>
window.closedloop = window.closedloop || function () {{
  (window.closedloop.q = window.closedloop.q || []).push(arguments); }};
closedloop('track', 'queued_before_load', {{step: 1}});
</script>
<script async src="{collector}/v1/tracker.js" data-write-key="dev-write-key" {attributes}></script>
</head><body>
<form id="signup" action="/thanks.html" method="get">
  <input type="email" name="work_email"><button type="submit">Go</button>
</form>
</body></html>
"""


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium is needed: apt-get install -y chromium"
    return found


class Browser:
    """One headless Chromium tab, driven over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        self.process = subprocess.Popen(
            [
                chromium_binary(),
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert self.process.poll() is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            pages = [t for t in json.load(response) if t["type"] == "page"]
        self.socket: ClientConnection = connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
        self.ids = itertools.count(1)
        self.call("Page.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and wait for its answer (events in between are dropped)."""
        call_id = next(self.ids)
        self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == call_id:
                assert "error" not in message, message
                return dict(message["result"])

    def wait_for_event(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv(timeout=deadline - time.monotonic()))
            if message.get("method") == method:
                return
        raise AssertionError(f"no {method} within {timeout}s")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"{expression} stayed false")

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def site(tmp_path: Path, collector: RunningCollector) -> Iterator[str]:
    """A site on localhost with the tracker snippet (plain and consent-gated pages)."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text(
        PAGE.format(
            title="Landing", collector=collector.url, attributes='data-auto-identify="true"'
        )
    )
    (root / "consent.html").write_text(
        PAGE.format(
            title="Consent", collector=collector.url, attributes='data-require-consent="true"'
        )
    )
    (root / "thanks.html").write_text("<!doctype html><title>Thanks</title><p>thanks</p>")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    tab = Browser(profile)
    try:
        yield tab
    finally:
        tab.close()


def test_visit_reload_form_and_spa_navigation(
    collector: RunningCollector, site: str, browser: Browser
) -> None:
    landing = (
        f"{site}/index.html?utm_source=newsletter&utm_medium=email&utm_campaign=spring&gclid=G-1"
    )
    browser.open(landing)
    cookie_id = browser.wait_until("(document.cookie.match(/_cl_aid=([^;]+)/) || [])[1]")

    [pageview] = collector.raw(1, type="pageview", url=landing)
    assert pageview["anonymous_id"] == cookie_id
    assert (pageview["utm_source"], pageview["utm_medium"], pageview["utm_campaign"]) == (
        "newsletter",
        "email",
        "spring",
    )
    assert pageview["click_ids"] == {"gclid": "G-1"}
    assert pageview["title"] == "Landing"
    assert pageview["properties"]["landing_url"] == landing
    assert pageview["session_id"]
    assert pageview["is_bot"] is True  # HeadlessChrome is flagged as a bot, and kept
    [queued] = collector.raw(1, type="custom", anonymous_id=cookie_id)
    assert (queued["event_name"], queued["properties"]["step"]) == ("queued_before_load", "1")

    browser.call("Page.reload")
    browser.wait_for_event("Page.loadEventFired")
    pageviews = collector.raw(2, type="pageview", url=landing)
    assert {p["anonymous_id"] for p in pageviews} == {cookie_id}
    assert len({p["event_id"] for p in pageviews}) == 2

    browser.evaluate("history.pushState({}, '', '/pricing?plan=pro'); true")
    [spa] = collector.raw(1, type="pageview", url=f"{site}/pricing?plan=pro")
    assert spa["anonymous_id"] == cookie_id
    assert spa["referrer"] == landing

    browser.evaluate(
        "document.querySelector('input[name=work_email]').value = 'grace@example.com';"
        "document.getElementById('signup').requestSubmit(); true"
    )
    [identify] = collector.raw(1, type="identify", anonymous_id=cookie_id)
    assert identify["email"] == "grace@example.com"
    [form] = collector.raw(1, type="form_submit", anonymous_id=cookie_id)
    assert (form["email"], form["event_name"]) == ("grace@example.com", "signup")


def test_consent_gates_cookie_and_events(
    collector: RunningCollector, site: str, browser: Browser
) -> None:
    browser.open(f"{site}/consent.html?utm_source=consent-test")
    assert "_cl_aid" not in browser.evaluate("document.cookie")
    assert collector.raw(0, settle=3.0, utm_source="consent-test") == []
    browser.evaluate("closedloop('consent', true); true")
    cookie_id = browser.wait_until("(document.cookie.match(/_cl_aid=([^;]+)/) || [])[1]")
    [pageview] = collector.raw(1, type="pageview", utm_source="consent-test")
    assert pageview["anonymous_id"] == cookie_id
