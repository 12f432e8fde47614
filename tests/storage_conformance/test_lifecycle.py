"""Outcomes that carry the job lifecycle: handler attempts apart from deliveries,
each failed attempt's error, results, and the discarded status."""

from __future__ import annotations

import json

from fairqueue.records import Finish, JobStatus
from fairqueue.storage import Storage

from .builders import NOW, job


def error(attempt: int) -> str:
    return json.dumps({"attempt": attempt, "at": NOW + attempt, "type": "IOError", "message": f"try {attempt}",
                       "traceback": "Traceback …"})  # fmt: skip


def test_retries_count_handler_attempts_keep_each_error_and_the_result(store: Storage) -> None:
    [job_id] = store.job_enqueue([job()], NOW)
    for attempt in (1, 2):
        store.job_claim([job_id], "w", NOW + 60, NOW)
        assert store.job_finish([Finish(job_id, "w", JobStatus.QUEUED, NOW + attempt, error=f"IOError: try {attempt}",
                                        ran=True, attempt_error=error(attempt))]) == [job_id]  # fmt: skip
    # A delivery its stopping worker gave back is neither a handler attempt nor an error.
    store.job_claim([job_id], "w", NOW + 60, NOW)
    store.job_finish([Finish(job_id, "w", JobStatus.QUEUED, NOW + 3, error="re-queued: worker stopped", given_back=True)])
    store.job_claim([job_id], "w", NOW + 60, NOW)
    assert store.job_finish([Finish(job_id, "w", JobStatus.COMPLETED, NOW + 4, ran=True, result='{"rows": 3}')]) == [job_id]
    record = store.job_get(job_id)
    assert record is not None and record.status is JobStatus.COMPLETED
    assert (record.attempts, record.handler_attempts, record.error_count) == (3, 3, 2)
    assert record.result == '{"rows": 3}' and json.loads(record.result) == {"rows": 3}
    assert [e["message"] for e in record.attempt_errors()] == ["try 1", "try 2"]


def test_a_plain_success_counts_its_handler_attempt_and_stores_no_result(store: Storage) -> None:
    ids = store.job_enqueue([job(), job()], NOW)
    store.job_claim(ids, "w", NOW + 60, NOW)
    store.job_finish([Finish(i, "w", JobStatus.COMPLETED, NOW + 1, ran=True) for i in ids])
    records = [store.job_get(i) for i in ids]
    assert [(r.handler_attempts, r.result, r.errors) for r in records if r] == [(1, None, None)] * 2


def test_a_discarded_job_is_finished_with_its_last_error(store: Storage) -> None:
    [job_id, other] = store.job_enqueue([job(), job()], NOW)
    store.job_claim([job_id], "w", NOW + 60, NOW)
    store.job_finish([Finish(job_id, "w", JobStatus.DISCARDED, NOW + 1, error="IOError: try 1; retries exhausted",
                             ran=True, attempt_error=error(1))])  # fmt: skip
    record = store.job_get(job_id)
    assert record is not None and record.status is JobStatus.DISCARDED and record.status.finished
    assert record.finished_at == NOW + 1 and record.extended_status == "IOError: try 1; retries exhausted"
    assert [r.id for r in store.job_list(status=JobStatus.DISCARDED)] == [job_id]
    assert store.job_counts()[("org-1", "future", JobStatus.DISCARDED)] == 1
    assert store.job_get(other).status is JobStatus.QUEUED  # type: ignore[union-attr]


def test_rerun_queues_failed_discarded_and_aborted_jobs_again_and_nothing_else(store: Storage) -> None:
    failed, discarded, aborted, completed, queued, other_org = store.job_enqueue(
        [job(), job(), job(), job(), job(), job(org="org-2")], NOW
    )
    store.job_claim([failed, discarded, completed, other_org], "w", NOW + 60, NOW)
    store.job_finish([
        Finish(failed, "w", JobStatus.FAILED, NOW + 1, error="ValueError: boom", ran=True, attempt_error=error(1)),
        Finish(discarded, "w", JobStatus.DISCARDED, NOW + 1, error="IOError: x (retries exhausted)", ran=True),
        Finish(completed, "w", JobStatus.COMPLETED, NOW + 1, ran=True),
        Finish(other_org, "w", JobStatus.FAILED, NOW + 1, error="ValueError: theirs", ran=True),
    ])  # fmt: skip
    store.job_abort(aborted, NOW + 1)
    everything = [failed, discarded, aborted, completed, queued, other_org, 10_000]
    assert store.job_rerun(everything, NOW + 2, org="org-1") == [failed, discarded, aborted]
    for job_id, was in ((failed, "failed: ValueError: boom"), (discarded, "discarded: IOError: x (retries exhausted)"),
                        (aborted, "aborted: aborted while waiting")):  # fmt: skip
        record = store.job_get(job_id)
        assert record is not None and record.status is JobStatus.QUEUED and record.finished_at is None
        assert record.handler_attempts == 0 and record.extended_status == f"re-run by request (was {was})"
    assert store.job_get(failed).attempt_errors()[0]["message"] == "try 1", "the history stays"  # type: ignore[union-attr]
    assert store.job_get(completed).status is JobStatus.COMPLETED  # type: ignore[union-attr]
    assert store.job_get(other_org).status is JobStatus.FAILED, "another org's job is not touched"  # type: ignore[union-attr]
    assert {p.id for p in store.job_pending()} >= {failed, discarded, aborted}
    # Delivered again: claimed, with attempts counting on.
    [again] = store.job_claim([failed], "w", NOW + 60, NOW + 3)
    assert again.attempts == 2 and again.handler_attempts == 0


def test_rerun_leaves_a_job_whose_signature_a_live_job_holds(store: Storage) -> None:
    [first] = store.job_enqueue([job(duplicate_signature="sig")], NOW)
    store.job_claim([first], "w", NOW + 60, NOW)
    store.job_finish([Finish(first, "w", JobStatus.FAILED, NOW + 1, error="E: x", ran=True)])
    [second] = store.job_enqueue([job(duplicate_signature="sig")], NOW + 2)
    assert store.job_rerun([first], NOW + 3) == []
    assert store.job_get(first).status is JobStatus.FAILED  # type: ignore[union-attr]
    store.job_abort(second, NOW + 4)
    assert store.job_rerun([first], NOW + 5) == [first]


def test_children_of_one_outcome_sharing_a_new_signature_store_the_first_and_say_so(store: Storage) -> None:
    [parent, holder] = store.job_enqueue([job(), job(duplicate_signature="held")], NOW)
    store.job_claim([parent], "w", NOW + 60, NOW)
    children = (job(duplicate_signature="twin"), job(duplicate_signature="twin"), job(duplicate_signature="held"), job())
    assert store.job_finish([Finish(parent, "w", JobStatus.COMPLETED, NOW + 1, children=children, ran=True)]) == [parent]
    stored = [r for r in store.job_list(limit=100) if r.id not in (parent, holder)]
    assert sorted(str(r.duplicate_signature) for r in stored) == ["None", "twin"], "the first twin and the plain child"
    record = store.job_get(parent)
    assert record is not None and record.status is JobStatus.COMPLETED
    assert record.extended_status is not None and "'twin'" in record.extended_status and "'held'" in record.extended_status
