"""Fixtures for tests that run the app end to end on a real SQLite file."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

import fairqueue as fq
import fq_sample_jobs as sample
from fairqueue.storage.sqlite import SQLiteStorage

T = TypeVar("T")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[fq.FairQueue]:
    """The sample jobs' app, on a fresh SQLite file for this test."""
    original = sample.app.storage
    sample.app.storage = SQLiteStorage(tmp_path / "fq.db")
    sample.runs.clear()
    sample.release.clear()
    try:
        yield sample.app
    finally:
        sample.app.settings.forget()
        sample.release.set()
        sample.app.storage.close()
        sample.app.storage = original


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Polls ``predicate`` until it is truthy, or fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of this test's own: small to fill, and once space is back, room
    for the write-ahead log to grow to where SQLite checkpoints it (1,000 pages, ~4 MB)."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"cannot mount a tmpfs for the full-disk test: {done.stderr.strip()}", pytrace=False)
        pytest.skip(f"cannot mount a tmpfs here (root needed): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Takes every free byte of ``disk``; returns the file to delete to give them back."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)
    return filler
