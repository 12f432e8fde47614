"""The dashboard's pages in headless chromium over a real uvicorn server and a
real SQLite store: the overview with 1,000 orgs, search, sorting, pagination,
the jobs view's filters, bulk retry and bulk abort, a job page with its
explanation, attempts, errors and result, the workers page, the org-scoped
viewer, and XSS payloads that must stay text."""

from __future__ import annotations

import json
import time
from typing import Any

import fairqueue as fq
import fq_sample_jobs as sample
from fairqueue.records import Finish, HistoryEntry, JobStatus, WorkerInfo

XSS_ORG = "<img src=x onerror=alert('org')>"
XSS_ARG = "</script><script>alert('arg')</script>"
XSS_ERROR = "<img src=x onerror=alert('error')> </script>"
XSS_RESULT = "<svg onload=alert('result')></svg>"


def finish(app: fq.FairQueue, ids: list[int], status: JobStatus = JobStatus.COMPLETED, error: Any = None) -> None:
    """Runs ``ids`` to ``status`` through the store, as a worker would."""
    now = time.time()
    assert len(app.storage.job_claim(ids, "w1", now + 60, now)) == len(ids)
    app.storage.job_finish([Finish(i, "w1", status, time.time(), error=error) for i in ids])


def run_to(app: fq.FairQueue, job_id: int, status: JobStatus, *, result: Any = None, errors: tuple[str, ...] = ()) -> None:
    """Runs ``job_id`` as a worker's handler would: one delivery per error in ``errors``
    (each attempt raising ValueError with that message; all but the last retried),
    then ``status`` (``completed`` with ``result``)."""
    for attempt, message in enumerate(errors or (None,), start=1):
        now = time.time()
        assert len(app.storage.job_claim([job_id], "w1", now + 60, now)) == 1
        trace = f"Traceback (most recent call last):\nValueError: {message}\n"
        entry = None if message is None else json.dumps({"attempt": attempt, "at": now, "type": "ValueError",
                                                          "message": message, "traceback": trace})  # fmt: skip
        last = attempt == max(len(errors), 1)
        app.storage.job_finish([Finish(job_id, "w1", status if last else JobStatus.QUEUED, now, ran=True, attempt_error=entry,
                                       error=None if message is None else f"ValueError: {message}", retry_at=None if last else now,
                                       result=None if result is None or not last else json.dumps(result))])  # fmt: skip


def rows(page: Any, table: str, column: int = 1) -> list[str]:
    return page.locator(f"#{table} tbody tr td:nth-child({column})").all_inner_texts()


SPARKLINE = """org => {
    const row = [...document.querySelectorAll('#orgs tbody tr')].find(tr => tr.dataset.org === org);
    const svg = row && row.querySelector('td.spark svg');
    return svg && {title: svg.querySelector('title').textContent, label: svg.getAttribute('aria-label'),
                   lines: [...svg.querySelectorAll('polyline')].map(p => p.getAttribute('points').split(' ').length),
                   children: [...svg.children].map(c => c.tagName)};
}"""
"""The sparkline of an org's row: its title, label, points per polyline and child elements."""


def no_csp_violation(page: Any) -> None:
    assert not [e for e in page.errors if "Content Security Policy" in e], page.errors


def test_the_overview_of_1000_orgs_sorts_searches_and_pages(app: fq.FairQueue, serve: Any, page: Any, screenshot: Any) -> None:
    for i in range(1000):
        sample.record.delay_many(f"org-{i:04d}", [("x",)] * (1 + i % 7))
    finish(app, [h.id for h in sample.record.delay_many("org-0500", [("y",)] * 4)])
    now = time.time()
    history = [HistoryEntry(now - 600 + 30 * s, "pending", f"org-{i:04d}", float((i % 7 + 1) * s), {})
               for s in range(20) for i in range(0, 1000, 50)]  # fmt: skip
    history += [HistoryEntry(now - 400, "throttle_start", None, 0.5, {"worker": "w1", "resources": ["host_cpu"]}),
                HistoryEntry(now - 300, "throttle_end", None, 1.0, {"worker": "w1", "resources": []})]  # fmt: skip
    app.storage.history_append(history)
    url, _ = serve()
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_function("() => document.querySelectorAll('#orgs tbody tr').length === 50")
    rendered = time.perf_counter() - started
    print(f"\noverview of 1,000 orgs rendered {rendered * 1000:.0f} ms after navigation")  # recorded in the report
    assert page.locator("#org-range").inner_text() == "1–50 of 1,000 orgs"
    assert rows(page, "orgs")[0].startswith("org-0006")  # most pending first (7 jobs: i % 7 == 6)
    # org-0300 has history (7 pending more every 30 s for 10 minutes: peak 133); org-0006 none.
    sampled = page.evaluate(SPARKLINE, "org-0300")
    assert sampled["title"] == "org-0300: pending jobs over the last hour, peak 133, now 133" == sampled["label"]
    assert sum(sampled["lines"]) >= 5, "a point per two minutes sampled"
    assert page.evaluate(SPARKLINE, "org-0006")["title"].startswith("org-0006: pending jobs over the last hour, peak 0")
    page.wait_for_selector("#chart canvas")
    assert "the 10 busiest of 20 orgs" in page.locator("#chart-note").inner_text()
    screenshot(page, "overview")
    page.click("#org-next")
    page.wait_for_function("() => document.querySelector('#org-range').textContent.startsWith('51–100')")
    page.click("th[data-sort=org]")
    page.wait_for_function("() => document.querySelector('#orgs tbody td').textContent.startsWith('org-0000')")
    assert [r.split()[0] for r in rows(page, "orgs")[:3]] == ["org-0000", "org-0001", "org-0002"]
    page.click("th[data-sort=finished]")
    page.wait_for_function("() => document.querySelector('#orgs tbody td').textContent.startsWith('org-0500')")
    page.fill("#org-search", "ORG-099")
    page.wait_for_function("() => document.querySelector('#org-range').textContent === '1–10 of 10 orgs'")
    assert sorted(r.split()[0] for r in rows(page, "orgs")) == [f"org-099{i}" for i in range(10)]
    no_csp_violation(page)
    assert not page.dialogs


def test_the_jobs_view_filters_pages_and_aborts_in_bulk(app: fq.FairQueue, serve: Any, page: Any, screenshot: Any) -> None:
    acme = [h.id for h in sample.record.delay_many("acme", [("a",)] * 30)]
    spins = [sample.spin.delay("acme", 0.0).id for _ in range(3)]
    sample.record.delay_many("globex", [("g",)] * 5)
    finish(app, acme[:2], JobStatus.FAILED, error="ValueError: no")
    url, _ = serve()
    page.goto(url + "jobs?limit=25")
    page.wait_for_function("() => document.querySelectorAll('#jobs tbody tr').length === 25")
    page.fill("#filter-org", "acme")
    page.wait_for_function("() => [...document.querySelectorAll('#jobs tbody tr td:nth-child(3)')].every(t => t.textContent === 'acme')")
    page.wait_for_function("() => document.querySelectorAll('#jobs tbody tr').length === 25")
    first_page = [int(i) for i in rows(page, "jobs", 2)]
    page.click("#jobs-next")
    page.wait_for_function("() => document.querySelector('#jobs-range').textContent.startsWith('page 2: 8 jobs')")
    assert [int(i) for i in rows(page, "jobs", 2)] + first_page == sorted(acme + spins)[::-1][25:] + sorted(acme + spins)[::-1][:25]
    page.click("#jobs-prev")
    page.wait_for_function("() => document.querySelector('#jobs-range').textContent.startsWith('page 1: 25 jobs')")
    page.select_option("#filter-status", "failed")
    page.wait_for_function("() => document.querySelectorAll('#jobs tbody tr').length === 2")
    page.select_option("#filter-status", "")
    page.fill("#filter-handler", "fq_sample_jobs:spin")
    page.wait_for_function("() => document.querySelectorAll('#jobs tbody tr').length === 3")
    assert "handler=fq_sample_jobs%3Aspin" in page.url  # the filters are in the URL, to share
    page.fill("#filter-handler", "")
    page.wait_for_function("() => document.querySelectorAll('#jobs tbody tr').length === 25")
    chosen = [int(i) for i in rows(page, "jobs", 2)[:3]]
    for job_id in chosen:
        page.check(f"#jobs tbody tr[data-id='{job_id}'] input[type=checkbox]")
    assert page.locator("#bulk-abort").inner_text() == "Abort selected (3)"
    assert page.locator("#bulk-retry").is_disabled()  # none of them failed, discarded or aborted
    page.click("#bulk-abort")
    assert page.locator("#bulk-question").inner_text() == "Abort 3 jobs?"
    assert [app.get(i).status for i in chosen] == [JobStatus.QUEUED] * 3  # type: ignore[union-attr]  # asked first
    page.click("#bulk-yes")
    page.wait_for_function("() => document.querySelector('#bulk-result').textContent === 'abort: 3 aborted'")
    assert [app.get(i).status for i in chosen] == [JobStatus.ABORTED] * 3  # type: ignore[union-attr]
    assert app.get(acme[5]).status is JobStatus.QUEUED  # type: ignore[union-attr]
    screenshot(page, "jobs")
    no_csp_violation(page)


def test_bulk_retry_asks_with_the_count_and_requeues_only_what_can_rerun(app: fq.FairQueue, serve: Any, page: Any, screenshot: Any) -> None:
    failed, discarded, aborted, done, live = (h.id for h in sample.record.delay_many("acme", [("a",)] * 5))
    run_to(app, failed, JobStatus.FAILED, errors=("no",))
    run_to(app, discarded, JobStatus.DISCARDED, errors=("one", "two", "three"))
    run_to(app, done, JobStatus.COMPLETED, result=1)
    app.abort(aborted)
    url, _ = serve()
    page.goto(url + "jobs?status=discarded")
    page.wait_for_function(f"() => [...document.querySelectorAll('#jobs tbody tr')].map(r => r.dataset.id).join() === '{discarded}'")
    assert page.locator("#filter-status").input_value() == "discarded"
    page.select_option("#filter-status", "")
    page.wait_for_function("() => document.querySelectorAll('#jobs tbody tr').length === 5")
    page.check("#select-all")
    page.wait_for_function("() => document.querySelector('#bulk-retry').textContent === 'Retry selected (3)'")
    assert page.locator("#bulk-abort").inner_text() == "Abort selected (1)"
    page.click("#bulk-retry")
    assert page.locator("#bulk-question").inner_text() == ("Retry 3 jobs? (2 selected jobs cannot be retried: left as they are)")
    screenshot(page, "jobs-retry-confirm")
    page.click("#bulk-no")  # cancelled: nothing changes
    assert page.locator("#bulk-confirm").is_hidden() and app.get(failed).status is JobStatus.FAILED  # type: ignore[union-attr]
    page.click("#bulk-retry")
    page.click("#bulk-yes")
    page.wait_for_function("() => document.querySelector('#bulk-result').textContent === 'retry: 3 queued'")
    statuses = [app.get(i).status for i in (failed, discarded, aborted, done, live)]  # type: ignore[union-attr]
    assert statuses == [JobStatus.QUEUED] * 3 + [JobStatus.COMPLETED, JobStatus.QUEUED]
    page.wait_for_function(
        "() => [...document.querySelectorAll('#jobs tbody td.status')].filter(t => t.textContent === 'queued').length === 4"
    )
    assert page.locator("#jobs tbody input:checked").count() == 0 and page.locator("#bulk-abort").is_disabled()
    screenshot(page, "jobs-retried")
    no_csp_violation(page)


def test_retry_all_matching_counts_first_and_requeues_every_page(app: fq.FairQueue, serve: Any, page: Any, screenshot: Any) -> None:
    acme = [h.id for h in sample.record.delay_many("acme", [("a",)] * 30)]
    globex = sample.record.delay("globex", "g").id
    for job_id in acme[:27]:
        run_to(app, job_id, JobStatus.DISCARDED, errors=("gone",))
    run_to(app, globex, JobStatus.DISCARDED, errors=("gone",))
    url, _ = serve()
    page.goto(url + "jobs?org=acme&status=discarded&limit=25")
    page.wait_for_function("() => document.querySelectorAll('#jobs tbody tr').length === 25")
    page.click("#bulk-retry-all")
    page.wait_for_selector("#bulk-confirm:not([hidden])")
    assert page.locator("#bulk-question").inner_text() == "Retry up to 27 jobs matching org acme, status discarded, on every page?"
    screenshot(page, "jobs-retry-all-confirm")
    assert app.get(acme[0]).status is JobStatus.DISCARDED  # type: ignore[union-attr]  # the count was a dry run
    page.click("#bulk-yes")
    page.wait_for_function("() => document.querySelector('#bulk-result').textContent === 'retry: 27 queued'")
    assert [app.get(i).status for i in acme] == [JobStatus.QUEUED] * 30  # type: ignore[union-attr]
    assert app.get(globex).status is JobStatus.DISCARDED  # type: ignore[union-attr]
    page.wait_for_function("() => document.querySelector('#jobs tbody').textContent === 'no jobs match'")
    page.select_option("#filter-status", "completed")
    page.wait_for_function("() => document.querySelector('#bulk-retry-all').disabled")  # nothing there to re-run
    no_csp_violation(page)


def test_the_job_page_shows_attempts_errors_and_result_and_retries(app: fq.FairQueue, serve: Any, page: Any, screenshot: Any) -> None:
    discarded, done = (h.id for h in sample.record.delay_many("acme", [("a",)] * 2))
    run_to(app, discarded, JobStatus.DISCARDED, errors=("bad row 7", "bad row 8", "bad row 9"))
    run_to(app, done, JobStatus.COMPLETED, result={"rows": 12, "files": ["a.csv"]})
    url, _ = serve()
    page.goto(f"{url}jobs/{done}")
    page.wait_for_function("() => document.querySelector('#job-output').textContent !== ''")
    assert page.locator("#job-output").inner_text() == json.dumps({"rows": 12, "files": ["a.csv"]}, indent=2)
    assert page.locator("#job-attempts").inner_text() == "the handler ran 1 time in 1 delivery; no attempt raised"
    assert page.locator("#job-retry").is_hidden()
    page.goto(f"{url}jobs/{discarded}")
    page.wait_for_selector("#job-attempt-errors details")
    assert page.locator("#job-attempts").inner_text() == "the handler ran 3 times in 3 deliveries"
    items = page.locator("#job-attempt-errors > li")
    assert [items.nth(i).locator("strong").inner_text() for i in range(3)] == [f"attempt {n}: ValueError" for n in (1, 2, 3)]
    assert "bad row 9" in items.nth(2).inner_text()
    traceback = items.nth(2).locator("details pre")
    assert traceback.is_hidden()  # collapsed until asked for
    items.nth(2).locator("summary").click()
    assert traceback.is_visible() and traceback.inner_text().strip() == "Traceback (most recent call last):\nValueError: bad row 9"
    assert "attempt 3 raised ValueError: bad row 9" in page.locator("#job-timeline").inner_text()
    assert page.locator("#job-output").inner_text() == "—" and page.locator("#job-abort").is_hidden()
    screenshot(page, "job-discarded")
    page.click("#job-retry")
    page.wait_for_function("() => document.querySelector('#job-result').textContent === 'retry: queued'")
    assert app.get(discarded).status is JobStatus.QUEUED  # type: ignore[union-attr]
    page.wait_for_function("() => document.querySelector('#job-retry').hidden && !document.querySelector('#job-abort').hidden")
    no_csp_violation(page)


def test_the_workers_page_lists_the_registry(app: fq.FairQueue, serve: Any, page: Any, screenshot: Any) -> None:
    now = time.time()
    app.storage.worker_register(WorkerInfo("w-one", "host-a", 4242, "process", 4, now - 120), now)
    job = sample.record.delay("acme", "a").id
    app.storage.job_claim([job], "w-one", now + 60, now)
    url, _ = serve()
    page.goto(url)
    page.click("#nav-workers")
    page.wait_for_selector("#workers tbody tr[data-name='w-one']")
    cells = page.locator("#workers tbody tr td").all_inner_texts()
    assert cells[:5] == ["w-one", "host-a", "4242", "process", "4"] and cells[8] == "1"
    assert cells[7] == ("alive" if app.storage.worker_list()[0].alive else "dead")
    screenshot(page, "workers")
    no_csp_violation(page)


def test_the_job_page_shows_its_explanation_and_aborts(app: fq.FairQueue, serve: Any, page: Any, screenshot: Any) -> None:
    ids = [h.id for h in sample.record.delay_many("acme", [("a",)] * 4)]
    finish(app, ids[:1])
    target = ids[-1]
    url, _ = serve()
    page.goto(f"{url}jobs/{target}")
    page.wait_for_selector("#job-reasons li")
    expected = app.explain(target)
    assert page.locator("#job-reasons").inner_text().splitlines() == [r.message for r in expected.reasons]
    assert "estimated start" in page.locator("#job-estimate").inner_text()
    assert page.locator("#job-attempts-section").is_hidden() and page.locator("#job-errors-section").is_hidden()  # never ran
    assert "enqueued (future, org acme)" in page.locator("#job-timeline").inner_text()
    assert '"args": [\n    "a"\n  ]' in page.locator("#job-payload").inner_text()
    screenshot(page, "job")
    page.click("#job-abort")
    page.wait_for_function("() => document.querySelector('#job-result').textContent === 'abort: aborted'")
    assert app.get(target).status is JobStatus.ABORTED  # type: ignore[union-attr]
    page.wait_for_function("() => document.querySelector('#job-abort').hidden")
    no_csp_violation(page)


def test_an_org_scoped_viewer_signs_in_and_sees_its_org_only(app: fq.FairQueue, serve: Any, page: Any, screenshot: Any) -> None:
    mine = [h.id for h in sample.record.delay_many("acme", [("a",)] * 3)]
    theirs = sample.record.delay("globex", "g").id
    url, _ = serve(token="admin-token-1", org_scope={"acme-viewer-token": "acme"})
    page.goto(url)
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#login-token", "acme-viewer-token")
    page.click("#login-form button")
    page.wait_for_selector("#orgs tbody tr")
    assert rows(page, "orgs") == ["acme flex settings"] and page.locator("#viewer").inner_text() == "org acme"
    assert page.locator("#nav-workers").is_hidden()  # the workers are fleet-wide
    assert page.context.cookies()[0]["httpOnly"] and page.context.cookies()[0]["sameSite"] == "Strict"
    assert page.evaluate("() => document.cookie") == ""  # HttpOnly: no script reads it
    page.wait_for_function("() => document.querySelector('#flex tbody').textContent === 'org acme has no batch jobs holding'")
    screenshot(page, "scoped-overview")
    page.goto(url + "jobs")
    page.wait_for_function(f"() => document.querySelectorAll('#jobs tbody tr').length === {len(mine)}")
    assert set(rows(page, "jobs", 3)) == {"acme"} and page.locator("#filter-org").get_attribute("readonly") is not None
    page.goto(f"{url}jobs/{theirs}")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('no job with id')")
    assert page.locator("#job-reasons li").count() == 0
    # Even typed into the API by hand: another org's job cannot be aborted.
    answer = page.evaluate(
        """async id => (await fetch(`/api/jobs/${id}/abort`, {method: "POST", body: "{}",
             headers: {"Content-Type": "application/json", "X-Fairqueue-Request": "1"}})).status""",
        theirs,
    )
    assert answer == 404 and app.get(theirs).status is JobStatus.QUEUED  # type: ignore[union-attr]


def test_xss_payloads_in_orgs_arguments_errors_and_results_stay_text(app: fq.FairQueue, serve: Any, page: Any, screenshot: Any) -> None:
    quiet = sample.record.delay(XSS_ORG, XSS_ARG).id
    failed = sample.record.delay(XSS_ORG, XSS_ARG).id
    finish(app, [failed], JobStatus.FAILED, error=XSS_ERROR)
    discarded = sample.record.delay(XSS_ORG, XSS_ARG).id
    run_to(app, discarded, JobStatus.DISCARDED, errors=(XSS_ERROR,))
    done = sample.record.delay(XSS_ORG, XSS_ARG).id
    run_to(app, done, JobStatus.COMPLETED, result={XSS_RESULT: XSS_RESULT})
    app.storage.history_append([HistoryEntry(time.time() - 30, "pending", XSS_ORG, 2.0, {})])
    url, _ = serve()
    page.goto(url)
    page.wait_for_selector("#orgs tbody tr")
    assert rows(page, "orgs")[0] == f"{XSS_ORG} flex settings"
    spark = page.evaluate(SPARKLINE, XSS_ORG)
    assert spark["title"] == f"{XSS_ORG}: pending jobs over the last hour, peak 2, now 2" == spark["label"]
    assert spark["children"] == ["title", "line", "circle"] and page.locator("img").count() == 0  # one sample: a dot
    screenshot(page, "xss-overview")
    page.wait_for_selector("#chart canvas")
    page.goto(url + "jobs")
    page.wait_for_selector(f"#jobs tbody tr[data-id='{quiet}']")
    assert set(rows(page, "jobs", 3)) == {XSS_ORG}
    page.goto(f"{url}jobs/{failed}")
    page.wait_for_selector("#job-errors li")
    assert XSS_ERROR in page.locator("#job-errors").inner_text()
    assert XSS_ARG in page.locator("#job-payload").inner_text()
    assert XSS_ORG in page.locator("#job-summary").inner_text()
    screenshot(page, "xss")
    assert page.locator("img").count() == 0 and page.locator("script").count() == 2  # only the page's own
    page.goto(f"{url}jobs/{discarded}")
    page.wait_for_selector("#job-attempt-errors details")
    page.locator("#job-attempt-errors summary").click()
    assert XSS_ERROR in page.locator("#job-attempt-errors > li").inner_text()
    assert page.locator("#job-attempt-errors pre").inner_text().strip().endswith(f"ValueError: {XSS_ERROR}")
    screenshot(page, "xss-attempts")
    assert page.locator("img").count() == 0 and page.locator("script").count() == 2
    page.goto(f"{url}jobs/{done}")
    page.wait_for_function("() => document.querySelector('#job-output').textContent.length > 1")
    assert json.loads(page.locator("#job-output").inner_text()) == {XSS_RESULT: XSS_RESULT}
    assert page.locator("img").count() == 0 and page.locator("script").count() == 2 and page.locator("svg").count() == 0
    assert not page.dialogs
    no_csp_violation(page)
