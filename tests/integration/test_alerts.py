"""Alerts: the predictive wait alert fires before the jobs are late, once, and ends once;
limits and throttling are announced; webhooks receive the events over real HTTP, and
only destinations that are public addresses or explicitly allowed.
(Several workers, signatures, retries and restarts: test_alert_fleet.py.)"""

from __future__ import annotations

import base64
import ipaddress
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.alerts import AlertEvent, Webhook, forbidden_address
from fairqueue.conservation import ResourceMonitor
from fairqueue.errors import InvalidArgument
from fairqueue.runtime.duties.webhook_delivery import post
from fairqueue.storage.interface import WebhookDelivery


@pytest.fixture
def events(app: fq.FairQueue) -> Iterator[list[AlertEvent]]:
    heard: list[AlertEvent] = []
    app.alerts.subscribe(heard.append)
    yield heard
    app.alerts.clear()
    app.alerts.configure(wait_threshold=None)


@pytest.mark.timeout(120)
def test_a_flood_raises_the_quiet_orgs_predicted_wait_before_its_job_is_late(app: fq.FairQueue, events: list[AlertEvent]) -> None:
    threshold = 2.0
    app.alerts.configure(wait_threshold=threshold, window=3.0)
    policy, app.policy = app.policy, "peek_set"  # first come, first served: the flood is ahead of everyone
    try:
        sample.spin.delay_many("noisy", [(0.01,)] * 900)
        with fq.Worker(app, slots=2):
            wait_until(lambda: len(app.jobs(status="completed", limit=100)) >= 100, timeout=30, what="a measured rate")
            quiet = sample.record.delay("quiet", "q")
            start = wait_until(lambda: [e for e in events if e.kind == "wait_predicted" and e.org == "quiet"],
                               timeout=30, what="the alert")[0]  # fmt: skip
            record = app.get(quiet.id)
            assert record is not None and record.started_at is None, "the alert came while the job still waited"
            wait_until(lambda: quiet.status is fq.JobStatus.COMPLETED, timeout=60, what="the quiet job")
            wait_until(lambda: len([e for e in events if e.org == "quiet" and e.kind == "wait_predicted"]) >= 2,
                       timeout=10, what="the end event")  # fmt: skip
            # Observed: its one job waited over the threshold; once it leaves the 3 s window, that ends too.
            wait_until(lambda: [e.state for e in events if e.org == "quiet" and e.kind == "wait_observed"] == ["start", "end"],
                       timeout=15, what="the observed wait's start and end")  # fmt: skip
            time.sleep(1.5)  # two more evaluations: nothing more may arrive
    finally:
        app.policy = policy
    quiet_events = [e for e in events if e.kind == "wait_predicted" and e.org == "quiet"]
    assert [e.state for e in quiet_events] == ["start", "end"], "one start, one end: no storm"
    observed = [e for e in events if e.kind == "wait_observed" and e.org == "quiet"]
    assert [e.state for e in observed] == ["start", "end"] and observed[0].figures["p95_wait"] > threshold
    assert start.figures["predicted_wait"] > threshold and start.figures["threshold"] == threshold
    assert start.at - record.created_at < threshold, "fired before the job was late"
    done = app.get(quiet.id)
    assert done is not None and done.started_at is not None
    assert done.started_at - done.created_at > threshold, "and the job really was late: the prediction was right"


def test_daily_limit_and_flex_queue_events_reach_a_webhook(app: fq.FairQueue, events: list[AlertEvent]) -> None:
    received: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app.alerts.add_webhook(f"http://127.0.0.1:{server.server_port}/alerts", allow_destinations=["127.0.0.1"])
        app.set_daily_limit("acme", 5)
        sample.record.delay_many("acme", [("a",)] * 3)
        sample.record.delay("acme", "4th")  # 80 %
        sample.record.delay("acme", "5th")  # 100 %
        with pytest.raises(fq.DailyLimitExceeded):
            sample.record.delay("acme", "6th")
        for _ in range(105):
            app.execute_batch(sample.Numbers(1), org="globex")
        with pytest.raises(fq.errors.FlexQueueFull):
            app.execute_batch(sample.Numbers(1), org="globex")
        with fq.Worker(app, slots=1):  # the outbox is delivered by workers
            wait_until(lambda: len(received) == 3, what="three webhook posts")
    finally:
        server.shutdown()
        server.server_close()
    assert [(e.kind, e.org, e.figures.get("percent")) for e in events] == [
        ("daily_limit", "acme", 80), ("daily_limit", "acme", 100), ("flex_full", "globex", None)
    ]  # fmt: skip
    assert [(r["kind"], r["org"], r["state"]) for r in received] == [
        ("daily_limit", "acme", "once"), ("daily_limit", "acme", "once"), ("flex_full", "globex", "once")
    ]  # fmt: skip


def test_throttling_starts_and_ends_once(app: fq.FairQueue, events: list[AlertEvent]) -> None:
    app.conservation = ResourceMonitor()
    try:
        with fq.Worker(app, slots=2):
            app.report_load(0.5, 0.3)
            sample.record.delay("acme", "x")
            wait_until(lambda: [e.state for e in events if e.kind == "throttle"] == ["start", "end"], what="start and end")
    finally:
        app.conservation = None
    start = next(e for e in events if e.kind == "throttle")
    assert start.figures["capacity"] == 0.5 and start.org is None


def test_bad_alert_settings_are_refused(app: fq.FairQueue) -> None:
    with pytest.raises(InvalidArgument, match="invalid wait_threshold -1"):
        app.alerts.configure(wait_threshold=-1)
    with pytest.raises(InvalidArgument, match="invalid webhook URL 'ftp://x'"):
        app.alerts.add_webhook("ftp://x")
    with pytest.raises(InvalidArgument, match="takes a callable"):
        app.alerts.subscribe("not callable")  # type: ignore[arg-type]


@pytest.mark.parametrize(("url", "allowance"), [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"), ("http://127.0.0.1:8080/hook", "127.0.0.0/8"),
    ("https://10.1.2.3/hook", "10.0.0.0/8"), ("http://[::1]/hook", "::1"), ("http://[fe80::1]/hook", "fe80::/10"),
    ("http://192.168.0.7/hook", "192.168.0.7"), ("http://localhost/hook", "localhost"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata.google.internal"),
    ("http://[::ffff:127.0.0.1]/hook", "127.0.0.1"),
])  # fmt: skip
def test_webhooks_to_addresses_that_are_not_public_are_refused_unless_allowed(app: fq.FairQueue, url: str, allowance: str) -> None:
    with pytest.raises(InvalidArgument, match="not a public address") as refused:
        app.alerts.add_webhook(url)
    assert repr(url) in str(refused.value) and "allow_destinations=" in str(refused.value)
    assert url not in app.alerts.webhooks
    app.alerts.add_webhook(url, allow_destinations=[allowance])
    assert url in app.alerts.webhooks
    app.alerts.clear()


def test_a_webhook_host_that_resolves_to_a_forbidden_address_is_refused_at_delivery() -> None:
    # Built directly, past add_webhook's check: the name resolves (really) to loopback,
    # as a rebinding DNS answer would at delivery time.
    hook = Webhook("http://localhost:9/hook", 1.0, None)
    refusal = post(hook, WebhookDelivery(1, "evt_1", hook.url, "{}", 0, 0.0), 0.0)
    assert refusal is not None and "localhost is" in refusal and "not a public address" in refusal
    assert not forbidden_address(ipaddress.ip_address("93.184.215.14"))
    assert forbidden_address(ipaddress.ip_address("100.100.100.200")), "Alibaba's metadata address (shared space)"
    assert forbidden_address(ipaddress.ip_address("fd00:ec2::254")), "AWS's IPv6 metadata address (private)"


def test_a_webhook_secret_must_be_long_enough(app: fq.FairQueue) -> None:
    with pytest.raises(InvalidArgument, match="webhook secret too short: 5 bytes"):
        app.alerts.add_webhook("https://hooks.example.com/x", secret="short")
    with pytest.raises(InvalidArgument, match="whsec_ must be followed by base64"):
        app.alerts.add_webhook("https://hooks.example.com/x", secret="whsec_!!!")
    app.alerts.add_webhook("https://hooks.example.com/x", secret="whsec_" + base64.b64encode(b"k" * 32).decode())
    app.alerts.clear()
