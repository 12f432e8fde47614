"""Proof of life on one host: a lock file per worker, held with ``flock`` for as long
as the worker's process lives.

The kernel releases an ``flock`` the moment the last descriptor of its open file
goes away — when the process exits, however it exits (SIGKILL, ``os._exit``, a
segfault) — and never while the process lives, even stopped (SIGSTOP) or paused in
a debugger. So "the lock can be taken" proves the holder is dead, with no timeout
to tune. ``flock`` (unlike ``fcntl``'s record locks) belongs to the open file, not
the process: two stores in one process do not share or release each other's locks,
and probing another worker's file never disturbs it. Child processes are started
with ``spawn`` (no inherited descriptors), so a worker's children never keep its
lock alive.

Each registration gets a file of its own, named by a random token, so a file is
never reused: a reaper may delete a dead worker's file without racing a newcomer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["HeldLock", "probe"]


class HeldLock:
    """A lock file this process holds for one worker.

    Args:
        folder: where the store keeps its workers' lock files (made if missing).
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(mode=0o700, exist_ok=True)
        self.token = secrets.token_hex(8)
        """The file's name (without ``.lock``), recorded in the registry."""
        self.path = folder / f"{self.token}.lock"
        self._fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        # A file nobody else knows of yet: this cannot block.
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    @property
    def intact(self) -> bool:
        """False if the file was deleted under us (then nobody can probe it: take a new one)."""
        return os.fstat(self._fd).st_nlink > 0

    def release(self) -> None:
        """Deletes the file and drops the lock (idempotent)."""
        if self._fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = -1


@contextlib.contextmanager
def probe(folder: Path, token: str) -> Iterator[bool]:
    """Whether the worker holding ``token``'s lock file is dead; while the block runs,
    a dead worker's lock is held here (so its reaping is done once) and its file is
    deleted when the block ends without error."""
    path = folder / f"{token}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        yield True  # released and deleted (a worker that left) or never made
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    finally:
        os.close(fd)
