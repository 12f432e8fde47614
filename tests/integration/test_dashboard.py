"""The dashboard's API over a real uvicorn server and a real SQLite store, driven
with httpx (so each test can send the Host, Origin and Sec-Fetch-Site a browser
or an attacker would): the safe defaults, the bugs of issue #17, org scoping,
pagination, and mounting inside another ASGI app."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Mount

import fairqueue as fq
import fairqueue.dashboard as dashboard
import fq_sample_jobs as sample
from fairqueue.dashboard.server import DashboardServer
from fairqueue.records import Finish, HistoryEntry, JobStatus, WorkerInfo

JSON_WRITE = {"X-Fairqueue-Request": "1", "Content-Type": "application/json"}

Serve = Callable[..., httpx.Client]


@pytest.fixture
def serve(app: fq.FairQueue) -> Iterator[Serve]:
    """Starts ``dashboard.app(app, **options)`` (or a given ASGI app) on a free loopback
    port and returns an httpx client for it."""
    servers: list[DashboardServer] = []
    clients: list[httpx.Client] = []

    def start(asgi: Any = None, prefix: str = "", **options: Any) -> httpx.Client:
        server = DashboardServer(asgi or dashboard.app(app, **options), port=0).start()
        servers.append(server)
        client = httpx.Client(base_url=server.url.rstrip("/") + prefix, timeout=30)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def finish(app: fq.FairQueue, ids: list[int], status: JobStatus = JobStatus.COMPLETED, error: Any = None) -> None:
    """Runs ``ids`` to ``status`` through the store, as a worker would."""
    now = time.time()
    claimed = app.storage.job_claim(ids, "w1", now + 60, now)
    assert sorted(r.id for r in claimed) == sorted(ids)
    if status is not JobStatus.PROCESSING:
        app.storage.job_finish([Finish(i, "w1", status, time.time(), error=error) for i in ids])


def write(client: httpx.Client, path: str, body: Any, **headers: str) -> httpx.Response:
    return client.post(path, json=body, headers={**JSON_WRITE, **headers})


def test_every_response_carries_the_security_headers(serve: Serve) -> None:
    client = serve()
    for path in ("/", "/jobs/1", "/static/dashboard.js", "/api/orgs", "/api/jobs/999", "/api/nope"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp, path
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
    page = client.get("/").text
    assert "<script>" not in page and "<style>" not in page and " style=" not in page  # everything inline is refused by the CSP


def test_a_foreign_host_is_refused(serve: Serve) -> None:
    client = serve()
    port = urllib.parse.urlsplit(str(client.base_url)).port
    refused = client.get("/api/orgs", headers={"Host": "evil.example"})
    assert refused.status_code == 400 and "evil.example" in refused.json()["error"]
    assert client.get("/", headers={"Host": f"rebound.evil.example:{port}"}).status_code == 400
    assert client.get("/api/orgs", headers={"Host": "127.0.0.1.evil.example"}).status_code == 400
    for ok in (f"localhost:{port}", f"[::1]:{port}", f"127.0.0.1:{port}", "LOCALHOST"):
        assert client.get("/api/orgs", headers={"Host": ok}).status_code == 200, ok
    named = serve(allowed_hosts=["*.example.com"])
    assert named.get("/api/orgs", headers={"Host": "ops.example.com"}).status_code == 200
    assert named.get("/api/orgs", headers={"Host": "example.com.evil.net"}).status_code == 400
    with pytest.raises(fq.InvalidArgument, match="allowed host"):
        dashboard.app(":memory:", allowed_hosts=["ops.*.com"])


def test_the_token_goes_in_a_header_or_a_strict_cookie_never_the_url(serve: Serve) -> None:
    sample.record.delay("acme", "a")
    client = serve(token="s3cret-token")
    assert client.get("/api/orgs").status_code == 401
    bearer = {"Authorization": "Bearer s3cret-token"}
    assert client.get("/api/orgs", headers=bearer).json()["total"] == 1
    assert client.get("/api/orgs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    in_url = client.get("/api/orgs?token=s3cret-token")
    assert in_url.status_code == 400 and "never accepted in the URL" in in_url.json()["error"]
    assert client.get("/api/orgs?token=s3cret-token", headers=bearer).status_code == 400
    assert client.get("/?token=s3cret-token").status_code == 400
    assert client.get("/").status_code == 200  # the page holds no data: it shows the sign-in
    assert write(client, "/api/login", {"token": "wrong"}).status_code == 401
    assert client.post("/api/login", json={"token": "s3cret-token"}).status_code == 403  # no header: a form could do it
    login = write(client, "/api/login", {"token": "s3cret-token"})
    assert login.status_code == 200
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert client.get("/api/me").json()["signed_in"] is True  # the client now sends the cookie
    assert write(client, "/api/logout", {}).status_code == 200
    assert client.get("/api/orgs").status_code == 401


def test_a_change_needs_same_origin_json_and_the_header(app: fq.FairQueue, serve: Serve) -> None:
    job = sample.record.delay("acme", "a").id
    client = serve()
    own = str(client.base_url)
    attempts = {
        "no header": client.post(f"/api/jobs/{job}/abort", json={}),
        "form, text/plain": client.post(f"/api/jobs/{job}/abort", content=b'{"x": 1}', headers={
            "Content-Type": "text/plain", "X-Fairqueue-Request": "1"}),
        "form, urlencoded": client.post(f"/api/jobs/{job}/abort", data={"a": "b"}, headers={"X-Fairqueue-Request": "1"}),
        "other origin": write(client, f"/api/jobs/{job}/abort", {}, Origin="http://127.0.0.1:1"),
        "null origin": write(client, f"/api/jobs/{job}/abort", {}, Origin="null"),
        "cross-site": write(client, f"/api/jobs/{job}/abort", {}, **{"Sec-Fetch-Site": "cross-site"}),
        "same-site, other port": write(client, f"/api/jobs/{job}/abort", {}, **{"Sec-Fetch-Site": "same-site"}),
    }  # fmt: skip
    for what, response in attempts.items():
        assert response.status_code in (403, 415), (what, response.status_code, response.text)
        assert app.get(job).status is JobStatus.QUEUED, what  # type: ignore[union-attr]
    assert attempts["form, text/plain"].status_code == 415 and "application/json" in attempts["form, text/plain"].json()["error"]
    browser = write(client, f"/api/jobs/{job}/abort", {}, Origin=own.rstrip("/"), **{"Sec-Fetch-Site": "same-origin"})
    assert browser.json() == {"id": job, "status": "aborted"}
    assert app.get(job).status is JobStatus.ABORTED  # type: ignore[union-attr]
    # Reads from another site are refused too (the browser would hide them; the server does not even answer).
    assert client.get("/api/jobs", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403


def test_bad_input_is_a_400_naming_the_value_and_the_limit(app: fq.FairQueue, serve: Serve) -> None:
    app.execute_batch(sample.Numbers(10), org="acme")
    client = serve()
    cases = {
        "/api/jobs?limit=-1": "invalid limit -1: expected an integer from 1 to 500",
        "/api/jobs?limit=501": "invalid limit 501",
        "/api/jobs?limit=ten": "invalid limit 'ten'",
        "/api/jobs?status=later": "invalid status 'later'",
        "/api/jobs?org=%20acme": "invalid org",
        "/api/jobs?before=0": "invalid before 0",
        "/api/orgs?sort=colour": "invalid sort 'colour': expected one of org, pending",
        "/api/orgs?offset=-5": "invalid offset -5",
        "/api/history?seconds=1e9": "invalid seconds '1e9'",
        "/api/jobs/abc": "invalid job id 'abc'",
    }
    for path, message in cases.items():
        response = client.get(path)
        assert response.status_code == 400 and message in response.json()["error"], (path, response.text)
    assert client.get("/api/jobs/999").status_code == 404
    bodies = {
        "[1, 2]": "expected a JSON object as the body, not a list",
        '"job"': "expected a JSON object as the body, not a string",
        "{nope": "the body is not valid JSON",
        '{"job_id": "1", "to": "front"}': "invalid job_id '1'",
        '{"job_id": 1, "to": "front", "colour": 1}': "unexpected field 'colour'",
        '{"job_id": 1, "to": "middle"}': "invalid to 'middle'",
    }
    for body, message in bodies.items():
        response = client.post("/api/flex/acme/move", content=body.encode(), headers=JSON_WRITE)
        assert response.status_code == 400 and message in response.json()["error"], (body, response.text)
    assert write(client, "/api/jobs/abort", {"ids": "1"}).status_code == 400
    assert write(client, "/api/jobs/abort", {"ids": list(range(1, 502))}).status_code == 400
    huge = client.post("/api/jobs/abort", content=b'{"ids": [' + b"1, " * 40_000 + b"1]}", headers=JSON_WRITE)
    assert huge.status_code == 413


def test_the_flex_queue_of_an_org_that_needs_encoding(app: fq.FairQueue, serve: Serve) -> None:
    org = "acme/ä #1?"  # a slash, a space, a hash and a question mark
    for _ in range(7):
        app.execute_batch(sample.Numbers(10), org=org)
    client = serve()
    path = "/api/flex/" + urllib.parse.quote(org, safe="")
    holding = client.get(path).json()
    assert [j["org"] for j in holding] == [org, org]
    last = holding[-1]["id"]
    moved = write(client, path + "/move", {"job_id": last, "to": "front"})
    assert moved.status_code == 200 and moved.json()["order"][0] == last
    assert [r.id for r in app.flex_queue(org)][0] == last


def test_the_orgs_table_counts_every_org_and_pages_on_the_server(app: fq.FairQueue, serve: Serve) -> None:
    for i in range(120):
        sample.record.delay_many(f"org-{i:03d}", [("x",)] * (i % 4 + 1))
    done = [h.id for h in sample.record.delay_many("finisher", [("x",)] * 5)]
    finish(app, done[:3])
    finish(app, done[3:4], JobStatus.FAILED, error="boom")
    running = sample.record.delay("runner", "x").id
    finish(app, [running], JobStatus.PROCESSING)
    for _ in range(6):
        app.execute_batch(sample.Numbers(10), org="holder")  # 5 queued, 1 holding in the flex queue
    client = serve()
    everything = client.get("/api/orgs?limit=500&sort=org").json()
    rows = {r["org"]: r for r in everything["orgs"]}
    assert everything["total"] == 123 and len(rows) == 123
    assert (rows["finisher"]["finished"], rows["finisher"]["pending"]) == (4, 1)
    assert rows["runner"]["running"] == 1 and rows["holder"]["pending"] == 6
    assert rows["finisher"]["wait_p50"] is not None and rows["org-000"]["wait_p50"] is None
    assert [r["org"] for r in everything["orgs"]][:2] == ["finisher", "holder"]
    first = client.get("/api/orgs?limit=50").json()
    assert first["orgs"][0]["org"] == "holder" and first["sort"] == "pending" and first["order"] == "desc"
    pages = [client.get(f"/api/orgs?sort=org&limit=50&offset={o}").json()["orgs"] for o in (0, 50, 100)]
    assert [len(p) for p in pages] == [50, 50, 23]
    assert [r["org"] for p in pages for r in p] == sorted(rows)
    found = client.get("/api/orgs?search=ORG-11&sort=org").json()
    assert [r["org"] for r in found["orgs"]] == [f"org-11{i}" for i in range(10)] and found["total"] == 10
    by_wait = client.get("/api/orgs?sort=wait_p95&order=asc&limit=3").json()["orgs"]
    assert by_wait[0]["org"] in ("finisher", "runner")  # the orgs with a measured wait come first, either order


def test_jobs_page_by_cursor_and_filter_by_handler(app: fq.FairQueue, serve: Serve) -> None:
    ids = [h.id for h in sample.record.delay_many("acme", [("a",)] * 7)]
    spins = [sample.spin.delay("acme", 0.0).id for _ in range(2)]
    sample.record.delay("globex", "g")
    client = serve()
    seen: list[int] = []
    before = None
    for _ in range(10):
        page = client.get("/api/jobs", params={"org": "acme", "limit": 3, **({"before": before} if before else {})}).json()
        seen += [j["id"] for j in page["jobs"]]
        before = page["next"]
        if before is None:
            break
    assert seen == sorted(ids + spins, reverse=True)
    handler = client.get("/api/jobs", params={"handler": "fq_sample_jobs:spin"}).json()
    assert [j["id"] for j in handler["jobs"]] == sorted(spins, reverse=True) and handler["next"] is None
    queued = client.get("/api/jobs", params={"status": "queued", "kind": "future", "limit": 500}).json()
    assert len(queued["jobs"]) == 10 and queued["next"] is None


def test_the_job_page_has_its_explanation_timeline_and_errors(app: fq.FairQueue, serve: Serve) -> None:
    waiting, failing = sample.record.delay("acme", "a").id, sample.record.delay("acme", "b").id
    finish(app, [failing], JobStatus.FAILED, error="ValueError: bad row 7")
    client = serve()
    detail = client.get(f"/api/jobs/{waiting}").json()
    assert detail["record"]["status"] == "queued" and detail["explanation"]["job_id"] == waiting
    assert [r["code"] for r in detail["explanation"]["reasons"]] == [r.code for r in app.explain(waiting).reasons]
    assert detail["explanation"]["estimate_basis"]
    failed = client.get(f"/api/jobs/{failing}").json()
    assert failed["explanation"]["reasons"][0]["code"] == "finished"
    assert [e["event"].split(" ")[0] for e in failed["timeline"]] == ["enqueued", "started", "failed:"]
    assert "bad row 7" in failed["timeline"][-1]["event"]
    assert client.get("/jobs/42").status_code == 200  # the job page's own URL serves the page


def test_bulk_abort_and_read_only(app: fq.FairQueue, serve: Serve) -> None:
    ids = [h.id for h in sample.record.delay_many("acme", [("a",)] * 4)]
    read_only = serve(read_only=True)
    refused = write(read_only, "/api/jobs/abort", {"ids": ids})
    assert refused.status_code == 403 and "read-only" in refused.json()["error"]
    assert read_only.get("/api/me").json()["read_only"] is True and read_only.get("/api/jobs").status_code == 200
    assert all(app.get(i).status is JobStatus.QUEUED for i in ids)  # type: ignore[union-attr]
    client = serve()
    results = write(client, "/api/jobs/abort", {"ids": [*ids[:3], 999]}).json()["results"]
    assert results[:3] == [{"id": i, "status": "aborted"} for i in ids[:3]]
    assert results[3] == {"id": 999, "error": "no job with id 999"}
    assert [app.get(i).status for i in ids] == [JobStatus.ABORTED] * 3 + [JobStatus.QUEUED]  # type: ignore[union-attr]


def check_sees_only_acme(app: fq.FairQueue, client: httpx.Client, other: int, **headers: str) -> None:
    """A viewer scoped to acme reads and acts on acme only; globex's job ``other`` stays queued."""
    orgs = client.get("/api/orgs", headers=headers).json()
    assert [r["org"] for r in orgs["orgs"]] == ["acme"] and orgs["total"] == 1
    assert {j["org"] for j in client.get("/api/jobs", headers=headers).json()["jobs"]} == {"acme"}
    assert client.get("/api/jobs?org=globex", headers=headers).status_code == 403
    assert client.get(f"/api/jobs/{other}", headers=headers).status_code == 404
    assert client.get("/api/flex/globex", headers=headers).status_code == 403
    assert set(client.get("/api/history", headers=headers).json()["pending"]) == {"acme"}
    assert write(client, f"/api/jobs/{other}/abort", {}, **headers).status_code == 404
    assert "error" in write(client, "/api/jobs/abort", {"ids": [other]}, **headers).json()["results"][0]
    assert write(client, "/api/flex/globex/move", {"job_id": other, "to": "front"}, **headers).status_code == 403
    assert write(client, "/api/flex/acme/move", {"job_id": other, "to": "front"}, **headers).status_code == 404
    assert app.get(other).status is JobStatus.QUEUED  # type: ignore[union-attr]
    own = client.get("/api/jobs", headers=headers).json()["jobs"][0]["id"]
    assert client.get(f"/api/jobs/{own}", headers=headers).json()["explanation"]["org"] == "acme"
    assert write(client, f"/api/jobs/{own}/abort", {}, **headers).json()["status"] == "aborted"


def two_orgs(app: fq.FairQueue) -> int:
    """Two acme jobs, one globex job (returned), and both orgs' pending history."""
    sample.record.delay_many("acme", [("a",)] * 2)
    now = time.time()
    app.storage.history_append([HistoryEntry(now - 10, "pending", org, 3.0, {}) for org in ("acme", "globex")])
    return sample.record.delay("globex", "g").id


def test_an_org_scoped_token_sees_and_acts_on_its_org_only(app: fq.FairQueue, serve: Serve) -> None:
    other = two_orgs(app)
    client = serve(token="admin-token", org_scope={"acme-token": "acme"})
    check_sees_only_acme(app, client, other, Authorization="Bearer acme-token")
    assert client.get("/api/me", headers={"Authorization": "Bearer acme-token"}).json()["org"] == "acme"
    admin = client.get("/api/orgs", headers={"Authorization": "Bearer admin-token"}).json()
    assert {r["org"] for r in admin["orgs"]} == {"acme", "globex"}


def test_mounted_in_another_app_behind_its_own_auth(app: fq.FairQueue, serve: Serve) -> None:
    other = two_orgs(app)

    async def customer_org(request: Request) -> str:
        # The service's own authentication: here a header its proxy sets.
        org = request.headers.get("x-customer")
        if org is None:
            raise HTTPException(403, "not signed in to the service")
        return org

    service = Starlette(routes=[Mount("/ops/fairqueue", dashboard.app(app, org_scope=customer_org))])
    client = serve(service, prefix="/ops/fairqueue")
    page = client.get("/jobs", headers={"X-Customer": "acme"})
    assert 'href="/ops/fairqueue/static/dashboard.css"' in page.text
    assert client.get("/static/dashboard.js").status_code == 200
    refused = client.get("/api/orgs")
    assert refused.status_code == 403 and refused.json()["error"] == "not signed in to the service"
    check_sees_only_acme(app, client, other, **{"X-Customer": "acme"})


def test_the_command_serves_it_and_stops_on_sigterm(app: fq.FairQueue) -> None:
    sample.record.delay("acme", "a")
    store = app.storage.path  # type: ignore[attr-defined]  # the fixture's SQLite file
    command = [sys.executable, "-m", "fairqueue", "dashboard", "--store", str(store), "--port", "0", "--read-only"]
    env = {**os.environ, "FAIRQUEUE_DASHBOARD_TOKEN": "cli-token"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            assert "(sign in with the token), read-only" in line, line
            url = line.split(" on ", 1)[1].split(" ", 1)[0]
            with httpx.Client(base_url=url, timeout=30) as client:
                assert client.get("api/orgs").status_code == 401
                orgs = client.get("api/orgs", headers={"Authorization": "Bearer cli-token"}).json()
                assert [r["org"] for r in orgs["orgs"]] == ["acme"]
                assert write(client, "api/jobs/1/abort", {}, Authorization="Bearer cli-token").status_code == 403
        finally:
            server.send_signal(signal.SIGTERM)
            # A requested stop: uvicorn shuts down gracefully and the command exits 0.
            assert server.wait(timeout=60) == 0


def test_a_store_fault_is_the_servers_error_not_the_requests(app: fq.FairQueue, serve: Serve) -> None:
    client = serve()
    assert client.get("/api/jobs").status_code == 200
    app.storage.close()
    broken = client.get("/api/jobs")
    assert broken.status_code in (500, 503) and broken.json()["error"]


def run_to(app: fq.FairQueue, job_id: int, status: JobStatus, *, result: Any = None, error: str = "boom") -> None:
    """Runs ``job_id`` once to ``status`` as a worker's handler would: ``completed`` with
    ``result`` (JSON), or ``failed`` / ``discarded`` with one attempt's error."""
    now = time.time()
    assert [r.id for r in app.storage.job_claim([job_id], "w1", now + 60, now)] == [job_id]
    entry = (
        None
        if status is JobStatus.COMPLETED
        else json.dumps(
            {"attempt": 1, "at": now, "type": "ValueError", "message": error, "traceback": f"Traceback …\nValueError: {error}\n"}
        )
    )
    app.storage.job_finish([Finish(job_id, "w1", status, now, error=None if entry is None else f"ValueError: {error}",
                                   ran=True, result=None if result is None else json.dumps(result), attempt_error=entry)])  # fmt: skip


def test_retry_one_job_and_in_bulk_by_ids_or_filter(app: fq.FairQueue, serve: Serve) -> None:
    failed, discarded, aborted, done, live = (h.id for h in sample.record.delay_many("acme", [("a",)] * 5))
    run_to(app, failed, JobStatus.FAILED)
    run_to(app, discarded, JobStatus.DISCARDED)
    run_to(app, done, JobStatus.COMPLETED, result={"ok": 1})
    app.abort(aborted)
    client = serve()
    assert write(client, f"/api/jobs/{failed}/retry", {}).json() == {"id": failed, "status": "queued"}
    assert app.get(failed).status is JobStatus.QUEUED  # type: ignore[union-attr]
    not_rerunnable = write(client, f"/api/jobs/{done}/retry", {})
    assert not_rerunnable.status_code == 400 and "completed" in not_rerunnable.json()["error"]
    assert write(client, "/api/jobs/999/retry", {}).status_code == 404
    results = write(client, "/api/jobs/retry", {"ids": [discarded, aborted, done, live, 999]}).json()["results"]
    assert [r.get("status") for r in results] == ["queued", "queued", None, None, None]
    assert "completed" in results[2]["error"] and "queued" in results[3]["error"] and results[4]["error"] == "no job with id 999"
    assert [app.get(i).status for i in (discarded, aborted, done, live)] == [JobStatus.QUEUED] * 2 + [  # type: ignore[union-attr]
        JobStatus.COMPLETED,
        JobStatus.QUEUED,
    ]
    # By filter: only the matching jobs; an empty filter must say "all".
    again = [h.id for h in sample.record.delay_many("acme", [("b",)] * 3)]
    run_to(app, again[0], JobStatus.FAILED)
    run_to(app, again[1], JobStatus.DISCARDED)
    assert write(client, "/api/jobs/retry", {}).status_code == 400
    assert write(client, "/api/jobs/retry", {"status": "completed"}).status_code == 400
    assert write(client, "/api/jobs/retry", {"status": "discarded", "since": "yesterday"}).status_code == 400
    assert write(client, "/api/jobs/retry", {"all": 1}).status_code == 400  # true, not a truthy number
    dry = write(client, "/api/jobs/retry", {"status": "discarded", "org": "acme", "dry_run": True}).json()
    assert dry == {"matched": 1, "dry_run": True} and app.get(again[1]).status is JobStatus.DISCARDED  # type: ignore[union-attr]
    by_filter = write(client, "/api/jobs/retry", {"status": "discarded", "org": "acme", "since": time.time() - 3600}).json()
    assert by_filter == {"matched": 1, "results": [{"id": again[1], "status": "queued"}]}
    assert write(client, "/api/jobs/retry", {"all": True}).json()["matched"] == 1  # again[0], the last failed one
    assert app.get(again[0]).status is JobStatus.QUEUED  # type: ignore[union-attr]
    # Bulk abort takes the same filter body.
    queued = sorted(r.id for r in app.jobs(org="acme", status="queued"))
    globex = sample.record.delay("globex", "g").id
    aborted_now = write(client, "/api/jobs/abort", {"org": "acme", "status": "queued"}).json()
    assert aborted_now == {"matched": len(queued), "results": [{"id": i, "status": "aborted"} for i in queued]}
    assert app.get(globex).status is JobStatus.QUEUED and app.get(done).status is JobStatus.COMPLETED  # type: ignore[union-attr]


def test_retry_is_refused_cross_origin_without_the_header_read_only_and_out_of_scope(app: fq.FairQueue, serve: Serve) -> None:
    job = sample.record.delay("acme", "a").id
    other = sample.record.delay("globex", "g").id
    run_to(app, job, JobStatus.FAILED)
    run_to(app, other, JobStatus.DISCARDED)
    client = serve(token="admin-token", org_scope={"acme-token": "acme"})
    admin = {"Authorization": "Bearer admin-token"}
    for path, body in ((f"/api/jobs/{job}/retry", {}), ("/api/jobs/retry", {"ids": [job]}), ("/api/jobs/retry", {"all": True})):
        refused = {
            "no header": client.post(path, json=body, headers=admin),
            "text/plain": client.post(path, content=json.dumps(body).encode(), headers={
                **admin, "Content-Type": "text/plain", "X-Fairqueue-Request": "1"}),
            "other origin": write(client, path, body, Origin="http://127.0.0.1:1", **admin),
            "cross-site": write(client, path, body, **{"Sec-Fetch-Site": "cross-site"}, **admin),
            "no token": write(client, path, body),
        }  # fmt: skip
        for what, response in refused.items():
            assert response.status_code in (401, 403, 415), (path, what, response.status_code, response.text)
    read_only = serve(read_only=True)
    for path, body in ((f"/api/jobs/{job}/retry", {}), ("/api/jobs/retry", {"ids": [job]})):
        assert write(read_only, path, body).status_code == 403
    assert app.get(job).status is JobStatus.FAILED  # type: ignore[union-attr]
    # An org-scoped viewer cannot retry another org's job, by id or by filter.
    acme = {"Authorization": "Bearer acme-token"}
    assert write(client, f"/api/jobs/{other}/retry", {}, **acme).status_code == 404
    assert "error" in write(client, "/api/jobs/retry", {"ids": [other]}, **acme).json()["results"][0]
    assert write(client, "/api/jobs/retry", {"org": "globex"}, **acme).status_code == 403
    assert write(client, "/api/jobs/retry", {"all": True}, **acme).json() == {"matched": 1, "results": [{"id": job, "status": "queued"}]}
    assert app.get(other).status is JobStatus.DISCARDED  # type: ignore[union-attr]
    assert write(client, f"/api/jobs/{other}/retry", {}, **admin).json()["status"] == "queued"


def test_the_job_page_has_attempts_errors_and_result(app: fq.FairQueue, serve: Serve) -> None:
    failing, done = (h.id for h in sample.record.delay_many("acme", [("a",)] * 2))
    run_to(app, failing, JobStatus.DISCARDED, error="bad row 9")
    run_to(app, done, JobStatus.COMPLETED, result={"rows": [1, 2]})
    client = serve()
    detail = client.get(f"/api/jobs/{failing}").json()
    assert detail["record"]["handler_attempts"] == 1 and detail["record"]["status"] == "discarded" and detail["rerunnable"]
    [attempt] = detail["attempt_errors"]
    assert attempt["type"] == "ValueError" and attempt["message"] == "bad row 9" and "Traceback" in attempt["traceback"]
    assert any("attempt 1 raised ValueError: bad row 9" in e["event"] for e in detail["timeline"])
    completed = client.get(f"/api/jobs/{done}").json()
    assert json.loads(completed["record"]["result"]) == {"rows": [1, 2]} and not completed["rerunnable"]
    assert client.get("/api/jobs", params={"status": "discarded"}).json()["jobs"][0]["id"] == failing
    listed = client.get("/api/jobs").json()["jobs"][0]
    assert "errors" not in listed and "result" not in listed  # a listing stays small: the job's page has them
    batch = app.execute_batch(sample.Numbers(10), org="acme").id
    app.abort(batch)
    assert client.get(f"/api/jobs/{batch}").json()["rerunnable"] is False  # a batch cannot be re-run


def test_the_workers_are_listed_for_fleet_viewers_only(app: fq.FairQueue, serve: Serve) -> None:
    now = time.time()
    app.storage.worker_register(WorkerInfo("w-one", "host-a", 4242, "process", 4, now - 30), now)
    job = sample.record.delay("acme", "a").id
    app.storage.job_claim([job], "w-one", now + 60, now)
    client = serve(token="admin-token", org_scope={"acme-token": "acme"})
    [worker] = client.get("/api/workers", headers={"Authorization": "Bearer admin-token"}).json()
    assert {k: worker[k] for k in ("name", "host", "pid", "mode", "slots", "running")} == {
        "name": "w-one",
        "host": "host-a",
        "pid": 4242,
        "mode": "process",
        "slots": 4,
        "running": 1,
    }
    assert worker["last_seen"] == pytest.approx(now, abs=5) and isinstance(worker["alive"], bool)
    assert client.get("/api/workers", headers={"Authorization": "Bearer acme-token"}).status_code == 403
    assert client.get("/workers").status_code == 200
