"""A stored row fairqueue never wrote (edited by hand, or corrupted) fails its own
job with a clear MalformedRecord error; the worker and every other job go on."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.records import JobStatus


def test_malformed_rows_fail_alone_with_a_clear_error_and_the_worker_goes_on(app: fq.FairQueue) -> None:
    good, not_json, not_object, bad_kind, bad_org, bad_status = (sample.noop.delay(f"org-{i}").id for i in range(6))
    with closing(sqlite3.connect(app.storage.path)) as db, db:  # type: ignore[attr-defined]
        db.execute("UPDATE fq_jobs SET payload = '{not json' WHERE id = ?", (not_json,))
        db.execute("UPDATE fq_jobs SET payload = '[1, 2]' WHERE id = ?", (not_object,))
        db.execute("UPDATE fq_jobs SET kind = 'nonsense' WHERE id = ?", (bad_kind,))
        db.execute("UPDATE fq_jobs SET org = '' WHERE id = ?", (bad_org,))
        db.execute("UPDATE fq_jobs SET status = 'bogus' WHERE id = ?", (bad_status,))

    with app.worker(slots=2) as worker:
        ids = (good, not_json, not_object, bad_kind, bad_org)

        def all_finished() -> list[fq.JobRecord]:
            records = [r for r in map(app.storage.job_get, ids) if r is not None and r.status.finished]
            return records if len(records) == len(ids) else []

        records = wait_until(all_finished, what="the five dispatchable rows to finish")
        after = sample.noop.delay("org-after")
        assert after.wait(10).status is JobStatus.COMPLETED, "the worker goes on"
        assert all(thread.is_alive() for thread in worker.pool.threads), "no handler slot died"

    ok, payload, shape, kind, org = records
    assert ok.status is JobStatus.COMPLETED
    for record, says in [
        (payload, "stored payload is not JSON"),
        (shape, "stored payload is list, not a JSON object"),
        (kind, 'unknown kind "nonsense"'),
        (org, 'invalid org ""'),
    ]:
        assert record.status is JobStatus.FAILED
        assert record.extended_status is not None and record.extended_status.startswith("MalformedRecord: ")
        assert says in record.extended_status and str(record.id) in record.extended_status

    with pytest.raises(fq.MalformedRecord, match=rf"job {bad_status}'s stored status 'bogus' is not one of"):
        app.storage.job_get(bad_status)
