"""Alerts once per fleet, and signed, retried, durable webhooks: three real worker
processes share a store (SQLite and PostgreSQL); a real HTTP receiver checks every
signature, fails the first deliveries, and is down while an event waits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

import fq_alert_app
from conftest import wait_until
from fairqueue.alerts import AlertEvent
from fairqueue.storage import Storage, open_storage

SUPPORT = Path(__file__).resolve().parents[1] / "support"


class Receiver:
    """A webhook endpoint on 127.0.0.1 that answers 500 to its first ``failures`` POSTs."""

    def __init__(self, key: bytes, failures: int, port: int = 0) -> None:
        self.key = key
        self.failures = failures
        self.posts: list[tuple[dict[str, str], str, int]] = []  # headers, body, the status answered
        receiver = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                status = 500 if len(receiver.posts) < receiver.failures else 204
                receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", port), Hook)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def delivered(self) -> list[dict[str, Any]]:
        """The events answered 2xx, each checked the way a receiver must: the signature
        over id, timestamp and body, with the shared key."""
        events = []
        for headers, body, status in self.posts:
            signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body}".encode()
            expected = "v1," + base64.b64encode(hmac.new(self.key, signed, hashlib.sha256).digest()).decode()
            assert hmac.compare_digest(headers["webhook-signature"], expected), "a forged or corrupted delivery"
            event = json.loads(body)
            assert event["id"] == headers["webhook-id"]
            if status == 204:
                events.append(event)
        return events


def start_worker(store_url: str, url: str, secret: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ, "FQ_STORE": store_url, "FQ_WEBHOOK": url, "FQ_WEBHOOK_SECRET": secret,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
    }  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "fairqueue", "worker", "fq_alert_app:app", "--slots", "2", "--no-conservation"],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=60)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "fq.db")
    else:
        dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
        yield f"{dsn}?schema={schema}"


@pytest.mark.timeout(240)
def test_three_workers_send_one_start_and_one_end_signed_retried_and_delivered_after_a_restart(store_url: str) -> None:
    key = secrets.token_bytes(32)
    secret = "whsec_" + base64.b64encode(key).decode()
    receiver = Receiver(key, failures=2)
    url = f"http://127.0.0.1:{receiver.port}/hooks"
    store: Storage = open_storage(store_url)
    app = fq_alert_app.app
    original, app.storage = app.storage, store
    app.alerts.add_webhook(url, secret=secret, allow_destinations=["127.0.0.1"])
    workers: list[subprocess.Popen[bytes]] = []
    try:
        # Jobs queued before any worker runs wait over the 1 s threshold for sure.
        handles = [fq_alert_app.quick.delay(f"org{i % 3}", i) for i in range(12)]
        time.sleep(1.5)
        workers = [start_worker(store_url, url, secret) for _ in range(3)]
        wait_until(lambda: all(h.status.value == "completed" for h in handles), timeout=120, what="the jobs")
        wait_until(lambda: len([w for w in store.worker_list() if w.alive]) == 3, timeout=60, what="three workers")
        # Each org's observed-wait episode starts, then ends once its starts leave the 3 s window.
        ends = lambda: {e["org"] for e in receiver.delivered() if e["kind"] == "wait_observed" and e["state"] == "end"}  # noqa: E731
        wait_until(lambda: ends() == {"org0", "org1", "org2"}, timeout=60, what="every episode's end")
        time.sleep(3)  # three more evaluations by each worker: nothing more may arrive
        delivered = receiver.delivered()
        assert [p[2] for p in receiver.posts[:2]] == [500, 500], "the first two deliveries failed"
        ids = [e["id"] for e in delivered]
        assert len(ids) == len(set(ids)), "each event taken exactly once, retries included"
        for org in ("org0", "org1", "org2"):
            states = [e["state"] for e in delivered if e["kind"] == "wait_observed" and e["org"] == org]
            assert states == ["start", "end"], f"{org}: one start and one end across three workers, not {states}"
            start = next(e for e in delivered if e["kind"] == "wait_observed" and e["org"] == org)
            assert start["figures"]["p95_wait"] > 1.0
        for kind, org in {(e["kind"], e["org"]) for e in delivered if e["state"] != "once"}:
            states = [e["state"] for e in delivered if (e["kind"], e["org"]) == (kind, org)]
            assert states == ["start", "end"] * (len(states) // 2), f"{kind} of {org}: {states}"

        # Durable: an event put in the outbox while the receiver is down and the workers
        # stop is delivered by a worker started afterwards.
        receiver.stop()
        stop(workers)
        late = AlertEvent("flex_full", "once", "org9", "a test's event while the receiver is down")
        app.alerts.emit(late)
        receiver = Receiver(key, failures=0, port=receiver.port)
        workers = [start_worker(store_url, url, secret)]
        wait_until(lambda: [e["id"] for e in receiver.delivered()] == [late.id], timeout=60, what="the late event")
        assert receiver.delivered()[0]["message"] == late.message
    finally:
        stop(workers)
        receiver.stop()
        app.alerts.clear()
        app.alerts.configure(wait_threshold=1.0, window=3.0)
        app.storage = original
        store.close()
