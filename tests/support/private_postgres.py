"""A PostgreSQL server of a test's own, which the test may stop, crash and start again.

The shared test server (``FAIRQUEUE_TEST_POSTGRES``) must never be stopped, so a
test of a database outage runs its own: a fresh cluster (``initdb``) in a
temporary directory, listening on a free loopback port, its unix sockets in that
directory. ``fsync`` is off: nothing here must survive a power cut, and the
cluster is thrown away afterwards.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres``
user (``runuser``) and the directory is handed to that user. The binaries come
from ``FAIRQUEUE_TEST_PG_BIN``, else ``pg_config --bindir``, else the newest
``/usr/lib/postgresql/*/bin`` (Debian's layout). Without them the test is skipped,
except under ``CI=true``, where it fails: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import pytest

__all__ = ["PrivatePostgres", "find_bindir", "private_postgres"]

_TOOLS = ("initdb", "pg_ctl", "postgres")


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def find_bindir() -> Optional[Path]:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    candidates: list[Path] = []
    if os.environ.get("FAIRQUEUE_TEST_PG_BIN"):
        candidates.append(Path(os.environ["FAIRQUEUE_TEST_PG_BIN"]))
    if shutil.which("pg_config"):
        done = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            candidates.append(Path(done.stdout.strip()))
    # Version directories sort numerically: 9.6 < 15 < 16.
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted(debian.iterdir(), key=lambda p: [int(x) if x.isdigit() else 0 for x in p.name.split(".")])
        candidates += [v / "bin" for v in reversed(versions)]
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in _TOOLS):
            return bindir
    return None


def free_port() -> int:
    """A loopback TCP port nothing listens on (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """One throw-away PostgreSQL cluster and its server process.

    Args:
        bindir: where ``initdb``, ``pg_ctl`` and ``postgres`` are.
        root: an empty directory for the cluster, its sockets and its log
            (readable by the server's user: not under pytest's root-only tmp).
    """

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = free_port()
        """The loopback port the server listens on, kept across restarts."""
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        """A libpq URL of the cluster's ``postgres`` database (trust authentication)."""
        # As root, everything runs as the postgres user, who must own the directory.
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        os.chmod(root, 0o700)

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        done = subprocess.run(
            [*self._as, str(self.bindir / tool), *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}\n{log}")

    def init(self) -> PrivatePostgres:
        """Creates the cluster (superuser ``postgres``, trust authentication, no fsync)."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
        return self

    def start(self) -> None:
        """Starts the server and returns once it accepts connections."""
        options = " ".join([
            f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.root}",
            # A small server: the machine is shared, and the test needs little.
            "-c fsync=off", "-c full_page_writes=off", "-c shared_buffers=16MB", "-c max_connections=60",
        ])  # fmt: skip
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stops the server: ``fast`` ends every session (a restart for maintenance),
        ``immediate`` kills them, as a crash would (recovery runs at the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    @property
    def running(self) -> bool:
        """Whether the server's postmaster is up (its pid file exists)."""
        return (self.data / "postmaster.pid").exists()


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started :class:`PrivatePostgres`, stopped and deleted afterwards; skips the test
    (fails it under ``CI=true``) when the PostgreSQL server binaries are missing."""
    bindir = find_bindir()
    if bindir is None:
        reason = "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: set FAIRQUEUE_TEST_PG_BIN"
        if _under_ci():
            pytest.fail(f"{reason}; under CI the PostgreSQL outage test must run", pytrace=False)
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="fq-private-pg-"))
    try:
        server = PrivatePostgres(bindir, root).init()
        server.start()
        try:
            yield server
        finally:
            if server.running:
                server.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)
