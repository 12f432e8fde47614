"""Tenant settings in the dashboard, in headless chromium over a real uvicorn server
and a real SQLite store: an org's page shows every value with its source and edits
it (the store holds the change and the app's settings apply it), a pause from the
page makes explain say paused and is shaded on the chart, the page follows changes
made elsewhere, the fleet page edits tiers and pauses queues, an org-scoped viewer
sees only its own org's settings and changes nothing (unless the app allows it),
and XSS payloads in an org, a key and a pause's ``by`` stay text."""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import fairqueue as fq
import fq_sample_jobs as sample
from fairqueue.records import HistoryEntry, JobStatus

XSS_ORG = "<img src=x onerror=alert('org')>"
XSS_BY = "<script>alert('by')</script><img src=x onerror=alert('by')>"
XSS_KEY = "<svg onload=alert('key')>"


def org_url(url: str, org: str) -> str:
    return f"{url}orgs/{urllib.parse.quote(org, safe='')}"


def stored(app: fq.FairQueue, scope: str, name: str, kind: str = "", key: str = "") -> dict[str, Any]:
    """The values of one settings row as the store holds it (read afresh)."""
    _, rows = app.storage.settings_read()
    return next((dict(r.values) for r in rows if (r.scope, r.name, r.kind, r.key) == (scope, name, kind, key)), {})


def cell(page: Any, table: str, row: str, column: int) -> str:
    return str(page.locator(f"#{table} tbody tr{row} > :nth-child({column})").inner_text())


def wait_text(page: Any, selector: str, text: str) -> None:
    page.wait_for_function("([s, t]) => (document.querySelector(s) || {textContent: ''}).textContent.includes(t)", arg=[selector, text])


def no_csp_violation(page: Any) -> None:
    assert not [e for e in page.errors if "Content Security Policy" in e], page.errors


def test_an_org_cap_edited_in_the_page_applies(app: fq.FairQueue, serve: Any, page: Any, screenshot: Any) -> None:
    sample.record.delay("acme", "a")
    app.set_tier("premium", cap=24, weight=2.0)
    url, _ = serve()
    page.goto(url)
    page.wait_for_selector("#orgs tbody tr[data-org='acme']")
    page.click("#orgs tbody tr[data-org='acme'] a:text('settings')")
    page.wait_for_selector("#kind-settings tbody tr[data-kind='future']")
    assert page.url == org_url(url, "acme")
    assert cell(page, "kind-settings", "[data-kind='future']", 2).startswith("12 code")  # the code's Limits
    # A kind's cap: typed into its row and saved.
    page.fill("#kind-settings tr[data-kind='future'] input[data-field='cap']", "3")
    page.click("#kind-settings tr[data-kind='future'] button:text('Save')")
    wait_text(page, "#kind-settings tr[data-kind='future'] td:nth-child(2)", "3 kind")
    assert stored(app, "kind", "acme", "future") == {"cap": 3}
    assert app.settings.fresh().cap("acme", "future") == 3
    # The org's cap, weight, rate and tier: one form.
    page.fill("#org-settings tr[data-field='cap'] input", "5")
    page.fill("#org-settings tr[data-field='weight'] input", "2.5")
    page.fill("#org-settings tr[data-field='rate'] input[data-field='rate']", "10/s")
    page.fill("#org-settings tr[data-field='rate'] input[data-burst-of='rate']", "4")
    page.select_option("#org-tier", "premium")
    page.click("#org-save")
    wait_text(page, "#org-settings tr[data-field='rate']", "10/s (burst 4)")
    assert stored(app, "org", "acme") == {"cap": 5, "weight": 2.5, "rate": {"rate": 10.0, "per": 1.0, "burst": 4}, "tier": "premium"}
    assert app.settings.fresh().org_limits("acme")["cap"] == 5
    assert cell(page, "org-settings", "[data-field='tier']", 3) == "org"
    screenshot(page, "settings-org")
    # A typo is refused with the server's message, shown in the page; nothing is stored.
    page.fill("#org-settings tr[data-field='daily_limit'] input", "lots")
    page.click("#org-save")
    wait_text(page, "#settings-error", "invalid daily limit 'lots'")
    assert "daily_limit" not in stored(app, "org", "acme")
    screenshot(page, "settings-org-error")
    # Emptied, a field goes back to what it inherits: the weight to the tier's.
    page.fill("#org-settings tr[data-field='daily_limit'] input", "")
    page.fill("#org-settings tr[data-field='weight'] input", "")
    page.click("#org-save")
    wait_text(page, "#org-settings tr[data-field='weight'] td:nth-child(3)", "tier:premium")
    assert "weight" not in stored(app, "org", "acme") and app.settings.fresh().org("acme")["weight"].value == 2.0
    assert page.locator("#settings-error").inner_text() == ""
    no_csp_violation(page)
    assert not page.dialogs


def test_a_pause_from_the_page_makes_explain_say_paused_and_is_shaded(app: fq.FairQueue, serve: Any, page: Any, screenshot: Any) -> None:
    job = sample.record.delay("acme", "a").id
    batch = app.execute_batch(sample.Numbers(10), org="acme").id
    now = time.time()  # pending samples before and after: the chart draws the last ten minutes and the pauses on it
    app.storage.history_append([HistoryEntry(now - 600 + 30 * s, "pending", "acme", 2.0, {}) for s in range(20)])
    # An earlier pause of ten minutes, as Tenants.resume records one: wide enough to see on the hour's chart.
    ended = HistoryEntry(now - 1500, "pause_end", "acme", 0.0, {"scope": "org 'acme'", "by": "ops", "since": now - 2100})
    app.storage.history_append([ended])
    url, _ = serve()
    page.goto(f"{url}jobs/{job}")
    page.wait_for_selector("#job-reasons li")
    page.click("#job-org-settings")
    page.wait_for_selector("#org-pause:not([hidden])")
    page.click("#org-pause")
    wait_text(page, "#org-pause-state", "paused since")
    assert "by dashboard" in page.locator("#org-pause-state").inner_text()
    explained = app.explain(job)
    assert [r.code for r in explained.reasons][0] == "paused", explained.reasons
    assert "org 'acme' is paused" in explained.reasons[0].message
    # A kind's pause, and the org's resume: the batch stays paused, the future job is not.
    page.click("#kind-settings tr[data-kind='batch'] button:text('Pause kind')")
    wait_text(page, "#kind-settings tr[data-kind='batch']", "paused since")
    time.sleep(1.0)  # a visible stretch of pause on the chart (the assertions below wait on states)
    page.click("#org-resume")
    wait_text(page, "#org-pause-state", "running")
    assert "paused" not in [r.code for r in app.explain(job).reasons]
    assert app.explain(batch).reasons[0].code == "paused"
    screenshot(page, "settings-paused")
    # The chart shades the org's ended pause and the kind's open one (to now).
    history = page.evaluate("async () => (await fetch('/api/history')).json()")
    pauses = sorted((p["scope"], p["end"] is None) for p in history["periods"] if p["kind"] == "pause")
    assert pauses == [("kind 'batch' of org 'acme'", True), ("org 'acme'", False), ("org 'acme'", False)]
    page.goto(url)
    page.wait_for_selector("#chart canvas")
    assert "paused" in page.locator(".legend").inner_text()
    screenshot(page, "settings-chart-paused")
    assert app.get(job).status is JobStatus.QUEUED  # type: ignore[union-attr]
    no_csp_violation(page)


def test_the_settings_panel_follows_changes_made_elsewhere(app: fq.FairQueue, serve: Any, page: Any) -> None:
    url, _ = serve()
    page.goto(org_url(url, "acme"))
    page.wait_for_selector("#kind-settings tbody tr[data-kind='future']")
    page.fill("#org-settings tr[data-field='min'] input", "1")  # being typed: kept across the redraw
    app.set_limits("acme", "future", cap=7)  # the CLI, another tab, the app's code
    app.pause("acme", "queueable", by="ops on call")
    wait_text(page, "#kind-settings tr[data-kind='future'] td:nth-child(2)", "7 kind")
    wait_text(page, "#kind-settings tr[data-kind='queueable']", "by ops on call")
    assert page.locator("#org-settings tr[data-field='min'] input").input_value() == "1"


def test_the_fleet_page_edits_tiers_and_pauses_queues(app: fq.FairQueue, serve: Any, page: Any, screenshot: Any) -> None:
    sample.record.delay("acme", "a")
    url, _ = serve()
    page.goto(url)
    page.click("#nav-settings")
    page.wait_for_selector("#tiers tbody")
    page.fill("#tier-name", "premium")
    page.fill("#tier-cap", "24")
    page.fill("#tier-rate", "600/min")
    page.click("#tier-save")
    page.wait_for_selector("#tiers tbody tr[data-tier='premium']")
    assert stored(app, "tier", "premium") == {"cap": 24, "rate": {"rate": 600.0, "per": 60.0, "burst": 600}}
    page.fill("#tier-name", "premium")
    page.select_option("#tier-kind", "batch")
    page.fill("#tier-cap", "2x")  # a typo: the server says what a cap may be
    page.click("#tier-save")
    wait_text(page, "#fleet-error", "invalid cap '2x'")
    page.fill("#tier-cap", "2")
    page.click("#tier-save")
    page.wait_for_selector("#tiers tbody tr[data-tier='premium'][data-kind='batch']")
    assert stored(app, "tier", "premium", "batch") == {"cap": 2}
    page.fill("#queue-name", "gpu")
    page.click("#queue-pause")
    page.wait_for_selector("#paused-queues tbody tr[data-queue='gpu']")
    assert app.tenants.paused_queues()["gpu"]["by"] == "dashboard"
    screenshot(page, "settings-fleet")
    page.click("#paused-queues tr[data-queue='gpu'] button")
    wait_text(page, "#paused-queues tbody", "no queue is paused")
    assert app.tenants.paused_queues() == {}
    no_csp_violation(page)


WRITE = """async ([path, body]) => (await fetch(path, {method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", "X-Fairqueue-Request": "1"}})).status"""


def test_an_org_scoped_viewer_sees_its_settings_only_and_changes_nothing(app: fq.FairQueue, serve: Any, page: Any, screenshot: Any) -> None:
    sample.record.delay("acme", "a")
    sample.record.delay("globex", "g")
    app.set_limits("acme", cap=4)
    app.set_limits("globex", cap=9)
    url, _ = serve(token="admin-token-1", org_scope={"acme-viewer-token": "acme"})
    page.goto(url)
    page.fill("#login-token", "acme-viewer-token")
    page.click("#login-form button")
    page.wait_for_selector("#orgs tbody tr")
    assert page.locator("#nav-settings").is_hidden()
    page.goto(org_url(url, "acme"))
    page.wait_for_selector("#org-settings tbody tr[data-field='cap']")
    assert cell(page, "org-settings", "[data-field='cap']", 2) == "4"
    assert page.locator("#settings-note").inner_text() == "you may see this org's settings but not change them"
    assert page.locator("#view-org input:visible, #view-org select:visible, #view-org button:visible").count() == 0
    screenshot(page, "settings-scoped")
    version = app.storage.settings_version()
    for path, body in [("/api/orgs/acme/settings", {"values": {"cap": 99}}), ("/api/orgs/acme/settings/resume", {}),
                       ("/api/orgs/acme/settings/pause", {}), ("/api/orgs/globex/settings", {"values": {"cap": 1}}),
                       ("/api/tiers/default", {"values": {"cap": 99}}), ("/api/queues/default/pause", {})]:  # fmt: skip
        assert page.evaluate(WRITE, [path, body]) == 403, path
    assert app.storage.settings_version() == version and stored(app, "org", "acme") == {"cap": 4}
    # Another org's settings, the tiers and the queues are not even read.
    assert page.evaluate("async () => (await fetch('/api/orgs/globex/settings')).status") == 403
    assert page.evaluate("async () => (await fetch('/api/settings')).status") == 403
    page.goto(org_url(url, "globex"))
    wait_text(page, "#status", "this viewer sees only org 'acme'")
    assert page.locator("#org-settings tbody tr").count() == 0
    assert "9" not in page.locator("main:not([hidden])").all_inner_texts()


def test_an_app_may_let_org_scoped_viewers_edit_their_own_org(app: fq.FairQueue, serve: Any, page: Any) -> None:
    url, _ = serve(token="admin-token-1", org_scope={"acme-viewer-token": "acme"}, tenant_edits=True)
    page.goto(url)
    page.fill("#login-token", "acme-viewer-token")
    page.click("#login-form button")
    page.wait_for_selector("#orgs tbody")
    page.goto(org_url(url, "acme"))
    page.wait_for_selector("#org-pause:not([hidden])")
    assert page.locator("#org-tier").count() == 0  # tiers are the operator's plans
    page.fill("#org-settings tr[data-field='cap'] input", "2")
    page.click("#org-save")
    wait_text(page, "#org-settings tr[data-field='cap'] td:nth-child(2)", "2")
    assert app.settings.fresh().org_limits("acme")["cap"] == 2
    assert page.evaluate(WRITE, ["/api/orgs/acme/settings", {"values": {"tier": "default"}}]) == 403
    assert page.evaluate(WRITE, ["/api/orgs/globex/settings", {"values": {"cap": 1}}]) == 403
    page.click("#org-pause")
    wait_text(page, "#org-pause-state", "by dashboard (org acme)")


def test_xss_in_an_org_a_key_and_a_pauses_by_stays_text(app: fq.FairQueue, serve: Any, page: Any, screenshot: Any) -> None:
    job = sample.record.delay(XSS_ORG, "a").id
    app.set_limits(XSS_ORG, key=XSS_KEY, cap=2)
    app.pause(XSS_ORG, by=XSS_BY)
    app.pause(XSS_ORG, key="k-2", by=XSS_BY)
    url, _ = serve()
    page.goto(f"{url}jobs/{job}")
    page.wait_for_selector("#job-reasons li")
    page.click("#job-org-settings")
    wait_text(page, "#org-pause-state", XSS_BY)
    assert page.locator("#org-title").inner_text() == f"Settings of org {XSS_ORG}"
    assert page.locator(f'#key-settings tbody tr th:text-is("{XSS_KEY}")').count() == 1
    assert XSS_BY in page.locator("#key-settings tbody tr[data-key='k-2']").inner_text()
    screenshot(page, "settings-xss")
    page.goto(url + "settings")
    page.wait_for_selector("#settings-orgs a")
    assert page.locator("#settings-orgs").inner_text() == XSS_ORG
    assert page.locator("img").count() == 0 and page.locator("svg").count() == 0 and page.locator("script").count() == 2
    assert not page.dialogs
    no_csp_violation(page)
