"""Health endpoints of a worker, for a supervisor's probes (``fairqueue worker APP
--health-port 8081``; off by default, loopback by default).

- ``GET /livez``: 200 while the worker's loop has turned within the last
  :data:`LIVE_WITHIN` seconds, else 503 (the loop is stuck or has stopped: restart).
- ``GET /readyz``: 200 while live and the store answers a read, else 503 with the
  error (the store is unreachable: take the worker out of rotation, do not restart).

Both answer JSON. Two fixed GET routes with no user data and no state to change
are served by the standard library's threading HTTP server on loopback; the
dashboard, which does render user data and take writes, is a separate matter.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from fairqueue.storage import Storage

__all__ = ["HealthServer", "LIVE_WITHIN"]

LIVE_WITHIN = 10.0
"""Seconds since the loop's last turn within which a worker counts as live."""


class HealthServer:
    """Serves ``/livez`` and ``/readyz`` for one worker.

    Args:
        last_turn: the ``time.monotonic()`` of the loop's last turn (None before the first).
        store: the store the readiness probe reads from.
        host: the address to listen on (loopback unless told otherwise).
        port: the port (0: any free one; see :attr:`address`).
    """

    def __init__(self, last_turn: Callable[[], Optional[float]], store: Storage, host: str, port: int) -> None:
        self.last_turn = last_turn
        self.store = store
        handler = type("Handler", (_Handler,), {"health": self})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fairqueue-health", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the endpoints listen on."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> HealthServer:
        """Serves on a background thread."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stops serving."""
        self._server.shutdown()
        self._server.server_close()

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the loop turned lately, and the figures."""
        turned = self.last_turn()
        ago = None if turned is None else round(time.monotonic() - turned, 3)
        live = ago is not None and ago <= LIVE_WITHIN
        return live, {"live": live, "last_turn_seconds_ago": ago, "live_within": LIVE_WITHIN}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the worker is live and its store answers a read."""
        live, figures = self.liveness()
        try:
            self.store.job_get(0)
        except Exception as e:  # any failure of the store is an answer: not ready
            return False, {**figures, "ready": False, "store": f"{type(e).__name__}: {e}"}
        return live, {**figures, "ready": live, "store": "ok"}


class _Handler(BaseHTTPRequestHandler):
    health: HealthServer

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path == "/livez":
            ok, body = self.health.liveness()
        elif self.path == "/readyz":
            ok, body = self.health.readiness()
        else:
            self._send(404, {"error": "not found: GET /livez or /readyz"})
            return
        self._send(200 if ok else 503, body)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds would flood the worker's log
