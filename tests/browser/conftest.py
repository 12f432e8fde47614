"""Fixtures for the dashboard's browser tests: Debian's chromium driven by
Playwright (headless, the system browser: nothing downloaded), a real uvicorn
server on a free loopback port over a real SQLite store file, and a second
loopback origin to serve an attacker's page from.

Without chromium the tests are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fairqueue as fq
import fairqueue.dashboard as dashboard
import fq_sample_jobs as sample
from fairqueue.dashboard.server import DashboardServer
from fairqueue.storage.sqlite import SQLiteStorage

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
REBOUND_NAME = "rebound.example"
"""A name the browser resolves to loopback, as DNS rebinding would make it."""


# Per module, not per session: Playwright's sync API runs an event loop on the main
# thread while it is open, and asyncio.run() in the suite's later tests refuses to
# start beside a running loop.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"chromium is not installed at {CHROMIUM}: .ci/run installs Debian's chromium", pytrace=False)
        pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", f"--host-resolver-rules=MAP {REBOUND_NAME} 127.0.0.1"])  # fmt: skip
        yield b
        b.close()


@pytest.fixture
def rebound_name() -> str:
    """A host name the browser resolves to 127.0.0.1, as DNS rebinding would make it."""
    return REBOUND_NAME


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context's page that records dialogs (an XSS would open one) and console errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    p = context.new_page()
    p.dialogs = []  # type: ignore[attr-defined]
    p.errors = []  # type: ignore[attr-defined]
    p.on("dialog", lambda d: (p.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    p.on("console", lambda m: p.errors.append(m.text) if m.type == "error" else None)  # type: ignore[attr-defined]
    p.on("pageerror", lambda e: p.errors.append(str(e)))  # type: ignore[attr-defined]
    yield p
    context.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[fq.FairQueue]:
    """The sample jobs' app on a fresh SQLite file."""
    original = sample.app.storage
    sample.app.storage = SQLiteStorage(tmp_path / "fq.db")
    try:
        yield sample.app
    finally:
        sample.app.settings.forget()
        sample.app.storage.close()
        sample.app.storage = original


class Recorder:
    """Wraps an ASGI app and records each request's method, path and response status."""

    def __init__(self, asgi: Any) -> None:
        self.asgi = asgi
        self.seen: list[tuple[str, str, int]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.asgi(scope, receive, send)
            return

        async def recording(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.seen.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await self.asgi(scope, receive, recording)


Serve = Callable[..., tuple[str, Recorder]]


@pytest.fixture
def serve(app: fq.FairQueue) -> Iterator[Serve]:
    """Starts ``dashboard.app(app, **options)`` under uvicorn; returns its URL and the request recorder."""
    servers: list[DashboardServer] = []

    def start(**options: Any) -> tuple[str, Recorder]:
        recorder = Recorder(dashboard.app(app, **options))
        server = DashboardServer(recorder, port=0).start()
        servers.append(server)
        return server.url, recorder

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def other_origin() -> Iterator[Callable[[str, str], str]]:
    """Serves an HTML page from a second loopback origin: ``(host, html) -> url``."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(host: str, body: str) -> str:
        class Page(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer((host, 0), Page)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://{host}:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def screenshot() -> Callable[[Any, str], Path]:
    """Saves a full-page screenshot under tests/browser/screenshots/ (git-ignored): ``(page, name) -> path``."""

    def save(page: Any, name: str) -> Path:
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
