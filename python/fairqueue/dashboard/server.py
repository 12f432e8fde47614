"""Serving the dashboard standalone: uvicorn on one socket bound here, so a port
in use is an error the caller can report, and port 0 gives a free one
(``fairqueue dashboard`` and the tests both serve this way)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Optional

import uvicorn
from starlette.types import ASGIApp

__all__ = ["DashboardServer"]

STARTUP_DEADLINE = 30.0
"""Seconds :meth:`DashboardServer.start` waits for uvicorn to serve."""


class DashboardServer:
    """uvicorn serving ``asgi`` on ``host``:``port``.

    Args:
        asgi: the app (``fairqueue.dashboard.app(...)``).
        host: the address to listen on.
        port: the port; 0 for any free one (see :attr:`url`).

    Raises:
        OSError: the address cannot be bound (in use, not this host's).
    """

    def __init__(self, asgi: ASGIApp, *, host: str = "127.0.0.1", port: int = 8700) -> None:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        self._socket = socket.socket(family, kind, proto)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind(address)
            # Listening from here, so a client told the address (the command prints it
            # before uvicorn starts) waits in the backlog rather than being refused.
            self._socket.listen(2048)
        except OSError:
            self._socket.close()
            raise
        bound_host, self.port = self._socket.getsockname()[:2]
        self.host = str(bound_host)
        config = uvicorn.Config(
            asgi, log_level="warning", access_log=False, lifespan="off", ws="none", server_header=False, proxy_headers=False
        )
        self._server = uvicorn.Server(config)
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        """The dashboard's address, e.g. ``http://127.0.0.1:8700/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        """Serves until SIGINT or SIGTERM (uvicorn's graceful shutdown)."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def start(self) -> DashboardServer:
        """Serves on a background thread; returns once it accepts requests."""
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True,
                                        name="fairqueue-dashboard")  # fmt: skip
        self._thread.start()
        deadline = time.monotonic() + STARTUP_DEADLINE
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start serving on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stops serving (after the requests in flight) and closes the socket."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self._socket.close()
