"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) over a real store."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fairqueue as fq
import fq_sample_jobs as sample
from fairqueue.dashboard import Dashboard
from fairqueue.records import HistoryEntry

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("FAIRQUEUE_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Chromium is not installed at {CHROMIUM}: .ci/run installs Debian's chromium", pytrace=False)
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def filled(app: fq.FairQueue) -> fq.FairQueue:
    """A store with two orgs' jobs, recorded history with a throttle period, and a flex queue."""
    now = time.time()
    sample.record.delay_many("acme", [("a",)] * 6)
    sample.record.delay_many("globex", [("g",)] * 3)
    for _ in range(6):
        app.execute_batch(sample.Numbers(10), org="initech")
    entries = [HistoryEntry(now - 300 + 30 * i, "pending", org, float(n * i), {})
               for i in range(10) for org, n in (("acme", 5), ("globex", 2))]  # fmt: skip
    entries += [HistoryEntry(now - 200, "throttle_start", None, 0.5, {"worker": "w1", "resources": ["host_cpu"]}),
                HistoryEntry(now - 140, "throttle_end", None, 1.0, {"worker": "w1", "resources": []})]  # fmt: skip
    app.storage.history_append(entries)
    return app


def test_the_page_shows_the_store_filters_and_aborts(filled: fq.FairQueue, browser: Any) -> None:
    server = Dashboard(filled, port=0, token="s3cret").start()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(server.url)
        page.wait_for_selector("#chart canvas")  # uPlot drew the per-org chart
        page.wait_for_selector("#summary tbody tr")
        assert page.locator(".u-legend").inner_text().count("acme") == 1
        orgs = page.locator("#summary tbody tr td:first-child").all_inner_texts()
        assert orgs == ["acme", "globex", "initech"]
        # The throttle period is shaded: the chart's canvas has orange pixels.
        shaded = page.evaluate(
            """() => { const c = document.querySelector('#chart canvas'), d = c.getContext('2d')
                          .getImageData(0, 0, c.width, c.height).data;
                        for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i+1] > 150 && d[i+1] < 230 && d[i+2] < 200) return true;
                        return false; }"""
        )
        assert shaded
        page.wait_for_selector("#jobs tbody tr")
        page.fill("#filter-org", "globex")
        page.wait_for_function("() => [...document.querySelectorAll('#jobs tbody tr')].length === 3")
        assert set(page.locator("#jobs tbody tr td:nth-child(2)").all_inner_texts()) == {"globex"}
        page.select_option("#filter-status", "queued")
        target = int(page.locator("#jobs tbody tr").first.get_attribute("data-id") or 0)
        page.click(f"#jobs tbody tr[data-id='{target}'] a")
        page.wait_for_selector("#job-detail li")
        assert "queued" in page.locator("#job-detail").inner_text()
        page.click("#abort-button")
        page.wait_for_selector("#job-detail .result")
        assert filled.get(target).status is fq.JobStatus.ABORTED  # type: ignore[union-attr]
        page.fill("#flex-org", "initech")
        page.wait_for_selector("#flex tbody tr")
        holding = [r.id for r in filled.flex_queue("initech")]
        assert page.locator("#flex tbody tr").count() == 1 and holding
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    finally:
        server.stop()


def test_the_api_needs_the_token_and_reports_bad_requests(filled: fq.FairQueue) -> None:
    server = Dashboard(filled, port=0, token="s3cret").start()
    host, port = server.address
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{host}:{port}/api/summary", timeout=10)
        with refused.value:  # an HTTPError holds the response: close it
            assert refused.value.code == 401
        request = urllib.request.Request(f"http://{host}:{port}/api/jobs/999", headers={"X-Fairqueue-Token": "s3cret"})
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(request, timeout=10)
        with missing.value:
            assert missing.value.code == 404 and "no job with id 999" in json.loads(missing.value.read())["error"]
        request = urllib.request.Request(f"http://{host}:{port}/api/summary?token=s3cret")
        with urllib.request.urlopen(request, timeout=10) as response:
            summary = json.loads(response.read())
        assert [o["org"] for o in summary["orgs"]] == ["acme", "globex", "initech"]
        assert summary["orgs"][0]["pending"] == 6
    finally:
        server.stop()


def test_the_api_checks_its_inputs_as_the_app_does(app: fq.FairQueue) -> None:
    org = "acme/ä #1"  # needs percent-encoding in a path
    for _ in range(6):
        app.execute_batch(sample.Numbers(10), org=org)
    server = Dashboard(app, port=0).start()
    host, port = server.address

    def get(path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read())

    try:
        status, body = get("/api/jobs?limit=-1")
        assert status == 400 and "invalid limit -1" in body["error"]
        status, body = get("/api/jobs?status=later")
        assert status == 400 and "invalid status 'later'" in body["error"]
        status, body = get("/api/jobs?org=%20acme")
        assert status == 400 and "invalid org" in body["error"]
        status, body = get("/api/flex/" + urllib.parse.quote(org, safe=""))
        assert status == 200 and len(body) == 1 and body[0]["org"] == org
    finally:
        server.stop()
