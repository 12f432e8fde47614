"""Fixtures for tests that run the app end to end on a real SQLite file."""

from __future__ import annotations

import time
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
