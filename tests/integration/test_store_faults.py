"""The embedded store's faults, typed: a damaged file is refused by every entry point
with a message that says what to do, and a full disk refuses an enqueue with
StorageFull and loses nothing (a real file, a real small tmpfs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import fairqueue as fq
from fairqueue.cli import main
from fairqueue.storage.sqlite import SQLiteStorage


def damage(path: Path) -> None:
    """Overwrites pages in the middle of the file with garbage, as a bad disk would."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(8192))


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    path = tmp_path / "fq.db"
    with SQLiteStorage(path) as store:
        store.job_enqueue([fq.records.NewJob("acme", "future", "m:f", "x" * 500) for _ in range(2000)], 1.0)
        store.close()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    damage(path)
    return path


def test_a_damaged_file_is_refused_by_every_entry_point(damaged: Path) -> None:
    with pytest.raises(fq.StorageCorrupt, match="is damaged.*restore it from a backup"):
        SQLiteStorage(damaged)
    app = fq.FairQueue(damaged)
    with pytest.raises(fq.StorageCorrupt):
        app.jobs()
    for command in (["status"], ["jobs"], ["schedules"]):
        result = CliRunner().invoke(main, [*command, "--store", str(damaged)])
        assert result.exit_code == 2 and "is damaged" in result.output, result.output
        assert "Traceback" not in result.output


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(os.urandom(64 * 1024))
    with pytest.raises(fq.StorageCorrupt, match="is damaged"):
        SQLiteStorage(path)


def test_a_full_disk_refuses_an_enqueue_with_storage_full_and_loses_nothing(small_disk: Path) -> None:
    app = fq.FairQueue(small_disk / "fq.db")
    stored = [app.enqueue_whole_batch(Filler(), org="acme").id]
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * max(free - 64 * 1024, 0))
    with pytest.raises(fq.StorageFull, match="disk is full"):
        for _ in range(1000):
            stored.append(app.enqueue_whole_batch(Filler(), org="acme").id)
    assert sorted(r.id for r in app.jobs(limit=10_000)) == stored, "every acknowledged enqueue is kept"
    filler.unlink()
    stored.append(app.enqueue_whole_batch(Filler(), org="acme").id)  # space is back: it heals
    assert len(app.jobs(limit=10_000)) == len(stored)
    app.close()


class Filler(fq.Batchable):
    """A batch whose state takes room (the enqueues fill the disk)."""

    def __init__(self) -> None:
        self.pad = "p" * 20_000

    def start(self, ctx: fq.Context) -> list[int]:
        return []

    def execute(self, ctx: fq.Context, scope: list[int]) -> None:
        pass


def test_a_worker_waits_out_a_full_disk_and_runs_every_job_once(small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    import fq_sample_jobs as sample
    from conftest import fill, wait_until

    original = sample.app.storage
    sample.app.storage = SQLiteStorage(small_disk / "fq.db")
    sample.runs.clear()
    try:
        ids = [h.id for h in sample.record.delay_many("acme", [("t",)] * 200)]
        filler = fill(small_disk)
        with caplog.at_level("WARNING", logger="fairqueue.worker"), sample.app.worker(slots=4) as worker:
            wait_until(lambda: "disk is full" in caplog.text and "retrying in" in caplog.text, timeout=60,
                       what="the worker to meet the full disk and wait")  # fmt: skip
            filler.unlink()
            wait_until(lambda: len(sample.app.jobs(status="completed", limit=1000)) == len(ids), timeout=120,
                       what="every job to complete once space is back")  # fmt: skip
            assert worker.crash is None
        ran = sorted(job_id for _, _, job_id in sample.runs)
        assert ran == sorted(ids), "every job ran, and none twice"
    finally:
        sample.app.storage.close()
        sample.app.storage = original
