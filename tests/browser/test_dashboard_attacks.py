"""What another web page can do to a dashboard open in the same browser: nothing.

The victim is signed in (the cookie is in the browser). The attacker's page is
served from a second loopback origin — another port on 127.0.0.1 (same site:
the SameSite=Strict cookie IS sent, so only the origin checks stand) and
127.0.0.2 (another site) — and tries every request a page can make without
the dashboard's consent. Each must be refused by the server (the recorder shows
its status) and leave the job queued, the failed job failed (not re-run) and the
flex queue in its order.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import fairqueue as fq
import fq_sample_jobs as sample
from fairqueue.records import Finish, JobStatus

TOKEN = "victim-token-123"

ATTACK = """<!doctype html><html><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe><iframe name="sink3"></iframe><iframe name="sink4"></iframe>
<form id="plain" method="POST" enctype="text/plain" target="sink1" action="{base}api/jobs/{job}/abort">
  <input name='{{"x":"' value='"}}'></form>
<form id="reorder" method="POST" enctype="text/plain" target="sink2" action="{base}api/flex/{org}/move">
  <input name='{{"job_id": {last}, "to": "front", "x": "' value='"}}'></form>
<form id="urlencoded" method="POST" target="sink3" action="{base}api/jobs/abort"><input name="ids" value="{job}"></form>
<form id="retry" method="POST" enctype="text/plain" target="sink4" action="{base}api/jobs/retry">
  <input name='{{"ids": [{dead}], "x": "' value='"}}'></form>
<script>
window.results = {{}};
(async () => {{
  const note = (k, v) => window.results[k] = v;
  try {{ await fetch("{base}api/jobs/{job}/abort", {{method: "POST", mode: "no-cors", credentials: "include", body: "{{}}",
                                                   headers: {{"Content-Type": "text/plain"}}}}); note("no-cors", "sent"); }}
  catch (e) {{ note("no-cors", "blocked"); }}
  try {{ await fetch("{base}api/jobs/{dead}/retry", {{method: "POST", mode: "no-cors", credentials: "include", body: "{{}}",
                                                    headers: {{"Content-Type": "text/plain"}}}}); note("no-cors retry", "sent"); }}
  catch (e) {{ note("no-cors retry", "blocked"); }}
  try {{ const r = await fetch("{base}api/jobs/{job}/abort", {{method: "POST", credentials: "include", body: "{{}}",
                                   headers: {{"Content-Type": "application/json", "X-Fairqueue-Request": "1"}}}});
        note("cors-write", "read " + r.status); }}
  catch (e) {{ note("cors-write", "blocked"); }}
  try {{ const r = await fetch("{base}api/jobs", {{credentials: "include"}}); note("read", await r.text()); }}
  catch (e) {{ note("read", "blocked"); }}
  for (const f of ["plain", "reorder", "urlencoded", "retry"]) document.getElementById(f).submit();
  note("done", true);
}})();
</script></body></html>"""


SETTINGS_ATTACK = """<!doctype html><html><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe><iframe name="sink3"></iframe><iframe name="sink4"></iframe>
<form id="cap" method="POST" enctype="text/plain" target="sink1" action="{base}api/orgs/acme/settings">
  <input name='{{"values": {{"cap": 1000}}, "x": "' value='"}}'></form>
<form id="resume" method="POST" enctype="text/plain" target="sink2" action="{base}api/orgs/acme/settings/resume">
  <input name='{{"x": "' value='"}}'></form>
<form id="tier" method="POST" target="sink3" action="{base}api/tiers/default"><input name="cap" value="1000"></form>
<form id="queue" method="POST" enctype="multipart/form-data" target="sink4" action="{base}api/queues/default/pause">
  <input name="x" value="1"></form>
<script>
window.results = {{}};
(async () => {{
  const note = (k, v) => window.results[k] = v;
  try {{ await fetch("{base}api/orgs/acme/settings", {{method: "POST", mode: "no-cors", credentials: "include",
           body: '{{"values": {{"cap": 1000}}}}', headers: {{"Content-Type": "text/plain"}}}}); note("no-cors", "sent"); }}
  catch (e) {{ note("no-cors", "blocked"); }}
  try {{ const r = await fetch("{base}api/orgs/acme/settings/resume", {{method: "POST", credentials: "include", body: "{{}}",
                                   headers: {{"Content-Type": "application/json", "X-Fairqueue-Request": "1"}}}});
        note("cors-write", "read " + r.status); }}
  catch (e) {{ note("cors-write", "blocked"); }}
  try {{ const r = await fetch("{base}api/orgs/acme/settings", {{credentials: "include"}}); note("read", await r.text()); }}
  catch (e) {{ note("read", "blocked"); }}
  try {{ const r = await fetch("{base}api/settings/version", {{credentials: "include"}}); note("version", await r.text()); }}
  catch (e) {{ note("version", "blocked"); }}
  for (const f of ["cap", "resume", "tier", "queue"]) document.getElementById(f).submit();
  note("done", true);
}})();
</script></body></html>"""


def sign_in(page: Any, url: str) -> None:
    page.goto(url)
    page.fill("#login-token", TOKEN)
    page.click("#login-form button")
    page.wait_for_selector("#orgs tbody tr")


@pytest.mark.parametrize("attacker_host", ["127.0.0.1", "127.0.0.2"])
def test_another_origin_cannot_abort_retry_reorder_or_read(
    app: fq.FairQueue, serve: Any, page: Any, other_origin: Any, attacker_host: str
) -> None:
    job = sample.record.delay("acme", "a").id
    dead = sample.record.delay("acme", "d").id
    now = time.time()
    app.storage.job_claim([dead], "w1", now + 60, now)
    app.storage.job_finish([Finish(dead, "w1", JobStatus.FAILED, now, error="ValueError: no")])
    for _ in range(7):
        app.execute_batch(sample.Numbers(10), org="acme")
    order = [r.id for r in app.flex_queue("acme")]
    url, recorder = serve(token=TOKEN)
    sign_in(page, url)
    attack = other_origin(attacker_host, ATTACK.format(base=url, job=job, dead=dead, org="acme", last=order[-1]))
    page.goto(attack)
    page.wait_for_function("() => window.results && window.results.done")
    # The no-cors fetches and the four forms reach the server; the CORS write never
    # leaves the browser (its preflight is not granted).
    deadline = time.monotonic() + 30
    while len(attacks := [r for r in recorder.seen if r[0] == "POST" and "login" not in r[1]]) < 6:
        assert time.monotonic() < deadline, f"the attacks did not all arrive: {recorder.seen}"
        time.sleep(0.01)
    attempts = attacks
    print(f"\nfrom {attacker_host}: {attempts}")
    assert len(attempts) == 6, recorder.seen
    assert all(s in (401, 403, 415) for _, _, s in attempts), attempts
    results = page.evaluate("() => window.results")
    assert results["cors-write"] == "blocked" and results["read"] == "blocked", results
    assert app.get(job).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert app.get(dead).status is JobStatus.FAILED  # type: ignore[union-attr]
    assert [r.id for r in app.flex_queue("acme")] == order
    # The victim's own page still works with the same cookie.
    page.goto(url + f"jobs/{job}")
    page.wait_for_selector("#job-abort:not([hidden])")


def test_a_rebound_host_name_and_a_token_in_the_url_are_refused(app: fq.FairQueue, serve: Any, page: Any, rebound_name: str) -> None:
    sample.record.delay("acme", "a")
    url, _ = serve(token=TOKEN)
    port = url.rsplit(":", 1)[1].strip("/")
    # DNS rebinding: the attacker's name now resolves to loopback; the Host header gives it away.
    rebound = page.goto(f"http://{rebound_name}:{port}/api/orgs")
    assert rebound.status == 400 and rebound_name in json.loads(rebound.text())["error"]
    assert page.goto(f"http://{rebound_name}:{port}/").status == 400
    in_url = page.goto(f"{url}api/orgs?token={TOKEN}")
    assert in_url.status == 400 and "never accepted in the URL" in in_url.text()
    assert page.goto(f"{url}?token={TOKEN}").status == 400
    assert page.goto(f"{url}api/orgs").status == 401


@pytest.mark.parametrize("attacker_host", ["127.0.0.1", "127.0.0.2"])
def test_another_origin_cannot_change_or_read_tenant_settings(
    app: fq.FairQueue, serve: Any, page: Any, other_origin: Any, attacker_host: str
) -> None:
    sample.record.delay("acme", "a")
    app.set_limits("acme", cap=2)
    app.pause("acme", by="ops")
    version = app.storage.settings_version()
    url, recorder = serve(token=TOKEN)
    sign_in(page, url)
    page.goto(other_origin(attacker_host, SETTINGS_ATTACK.format(base=url)))
    page.wait_for_function("() => window.results && window.results.done")
    # The no-cors fetch and the four forms reach the server and are refused; the CORS
    # write and both reads never hand the attacker anything.
    deadline = time.monotonic() + 30
    while len(attacks := [r for r in recorder.seen if r[0] == "POST" and "login" not in r[1]]) < 5:
        assert time.monotonic() < deadline, f"the attacks did not all arrive: {recorder.seen}"
        time.sleep(0.01)
    print(f"\nfrom {attacker_host}: {attacks}")
    assert len(attacks) == 5 and all(s in (401, 403, 415) for _, _, s in attacks), attacks
    results = page.evaluate("() => window.results")
    assert results["cors-write"] == results["read"] == results["version"] == "blocked", results
    assert app.storage.settings_version() == version
    assert app.settings.fresh().org_limits("acme")["cap"] == 2 and app.tenants.describe("acme")["paused"]["by"] == "ops"
    assert app.tenants.paused_queues() == {} and app.tenants.tiers() == {}
    # The victim's own page still changes them with the same cookie.
    page.goto(url + "orgs/acme")
    page.click("#org-resume")
    page.wait_for_function("() => document.querySelector('#org-pause-state').textContent.startsWith('running')")
    assert app.tenants.describe("acme")["paused"] is None
