"""``fairqueue dashboard``: a local web page over a store.

Pending jobs per org over time (the graph seed 001 wished it had, from the
history workers record) with throttle and extended-delay periods shaded, wait
percentiles per org, a jobs table with filters, a job page with its explanation
and an abort button, and each org's flex queue with reordering.

Served by the standard library's threading HTTP server: the page is one static
HTML file and a JSON API, so there is nothing to build and nothing else to
install. The chart is uPlot (MIT), shipped inside the package. Loopback only
unless told otherwise; with a token, every request must carry it (``?token=``
on the page, the ``X-Fairqueue-Token`` header on the API).
"""

from __future__ import annotations

import hmac
import json
import logging
import statistics
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from fairqueue.app import FairQueue
from fairqueue.errors import FairQueueError
from fairqueue.records import JobRecord, JobStatus

__all__ = ["Dashboard"]

log = logging.getLogger("fairqueue.dashboard")

_STATIC = {
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot-LICENSE.txt": "text/plain; charset=utf-8",
}
_JOBS_FOR_PERCENTILES = 5000


class Dashboard:
    """The dashboard's HTTP server for ``app``'s store.

    Args:
        app: whose store (and limits) to show.
        host: the address to listen on (loopback by default).
        port: the port (0: any free one; see :attr:`address`).
        token: if given, every request must carry it.
    """

    def __init__(self, app: FairQueue, *, host: str = "127.0.0.1", port: int = 8700, token: Optional[str] = None) -> None:
        self.app = app
        self.token = token
        handler = type("Handler", (_Handler,), {"dashboard": self})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """The page's URL (with the token, if any)."""
        host, port = self.address
        return f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")

    def start(self) -> Dashboard:
        """Serves on a background thread and returns at once."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="fairqueue-dashboard", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serves until interrupted."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stops serving."""
        self._server.shutdown()
        self._server.server_close()

    # ----- the API -------------------------------------------------------------------------

    def summary(self, now: float) -> dict[str, Any]:
        """Per org: pending, running, and wait percentiles of its recently started jobs."""
        counts: dict[str, dict[str, int]] = {}
        for (org, _, status), n in self.app.storage.job_counts(live=True).items():
            row = counts.setdefault(org, {"pending": 0, "running": 0, "finished": 0})
            if status in (JobStatus.QUEUED, JobStatus.HOLDING):
                row["pending"] += n
            elif status is JobStatus.PROCESSING:
                row["running"] += n
            elif status.finished:
                row["finished"] += n
        waits: dict[str, list[float]] = {}
        for r in self.app.storage.job_list(limit=_JOBS_FOR_PERCENTILES):
            if r.started_at is not None:
                waits.setdefault(r.org, []).append(r.started_at - max(r.created_at, r.run_at or r.created_at))
        orgs = []
        for org in sorted(counts):
            found = sorted(waits.get(org, []))
            figures = {f"wait_p{q}": _percentile(found, q) for q in (50, 95, 99)}
            orgs.append({"org": org, **counts[org], **figures, "sampled": len(found)})
        return {"now": now, "orgs": orgs}

    def history(self, seconds: float, now: float) -> dict[str, Any]:
        """Pending jobs per org over time, and throttle / extended-delay periods."""
        pending: dict[str, list[list[float]]] = {}
        periods: list[dict[str, Any]] = []
        open_throttles: dict[str, dict[str, Any]] = {}
        for e in self.app.storage.history_read(now - seconds):
            if e.kind == "pending" and e.org is not None:
                pending.setdefault(e.org, []).append([e.at, e.value])
            elif e.kind == "extended_delay":
                periods.append({"kind": "extended_delay", "org": e.org, "start": e.at, "end": e.value, **e.figures})
            elif e.kind == "throttle_start":
                open_throttles[str(e.figures.get("worker"))] = {"kind": "throttle", "start": e.at, "end": None, **e.figures}
            elif e.kind == "throttle_end":
                period = open_throttles.pop(str(e.figures.get("worker")), None)
                if period is not None:
                    periods.append({**period, "end": e.at})
        periods += list(open_throttles.values())
        return {"now": now, "since": now - seconds, "pending": pending, "periods": periods}

    def jobs(self, org: Optional[str], status: Optional[str], limit: int) -> list[dict[str, Any]]:
        return [_record(r) for r in self.app.jobs(org=org or None, status=status or None, limit=limit)]

    def job(self, job_id: int) -> dict[str, Any]:
        record = self.app.get(job_id)
        if record is None:
            raise LookupError(f"no job with id {job_id}")
        return {"record": _record(record), "explanation": self.app.explain(job_id).to_json()}


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "fairqueue-dashboard"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        d = self.dashboard
        # The static files are the public chart library: a <script> tag cannot send the token.
        if d.token is not None and not url.path.startswith("/static/"):
            given = self.headers.get("X-Fairqueue-Token") or query.get("token", "")
            if not hmac.compare_digest(given.encode(), d.token.encode()):
                self._send(HTTPStatus.UNAUTHORIZED, {"error": "a token is required: open the URL the dashboard printed"})
                return
        parts = [unquote(p) for p in url.path.split("/") if p]
        try:
            self._route(method, parts, query)
        except (LookupError, ValueError, FairQueueError) as e:
            status = HTTPStatus.NOT_FOUND if isinstance(e, LookupError) else HTTPStatus.BAD_REQUEST
            self._send(status, {"error": str(e).strip("'\"")})

    def _route(self, method: str, parts: list[str], query: dict[str, str]) -> None:
        d, now = self.dashboard, time.time()
        if method == "GET" and not parts:
            self._send_bytes(HTTPStatus.OK, _resource("page.html"), "text/html; charset=utf-8")
        elif method == "GET" and len(parts) == 2 and parts[0] == "static" and parts[1] in _STATIC:
            self._send_bytes(HTTPStatus.OK, _resource(f"static/{parts[1]}"), _STATIC[parts[1]])
        elif method == "GET" and parts == ["api", "summary"]:
            self._send(HTTPStatus.OK, d.summary(now))
        elif method == "GET" and parts == ["api", "history"]:
            self._send(HTTPStatus.OK, d.history(float(query.get("seconds", 3600)), now))
        elif method == "GET" and parts == ["api", "jobs"]:
            self._send(HTTPStatus.OK, d.jobs(query.get("org"), query.get("status"), int(query.get("limit", 200))))
        elif method == "GET" and len(parts) == 3 and parts[:2] == ["api", "jobs"]:
            self._send(HTTPStatus.OK, d.job(int(parts[2])))
        elif method == "POST" and len(parts) == 4 and parts[:2] == ["api", "jobs"] and parts[3] == "abort":
            self._send(HTTPStatus.OK, {"id": int(parts[2]), "status": d.app.abort(int(parts[2])).value})
        elif method == "GET" and len(parts) == 3 and parts[:2] == ["api", "flex"]:
            self._send(HTTPStatus.OK, [_record(r) for r in d.app.flex_queue(parts[2])])
        elif method == "POST" and len(parts) == 4 and parts[:2] == ["api", "flex"] and parts[3] == "move":
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            where = {k: body[k] for k in ("before", "after", "to") if body.get(k) is not None}
            self._send(HTTPStatus.OK, d.app.control.flex_move(int(body["job_id"]), org=parts[2], **where))
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such page: {method} /{'/'.join(parts)}"})

    def _send(self, status: HTTPStatus, payload: Any) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json")

    def _send_bytes(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def _resource(name: str) -> bytes:
    return resources.files("fairqueue.dashboard").joinpath(name).read_bytes()


def _record(record: JobRecord) -> dict[str, Any]:
    data = dict(vars(record))
    data["status"] = record.status.value
    return data


def _percentile(values: list[float], q: int) -> Optional[float]:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]
