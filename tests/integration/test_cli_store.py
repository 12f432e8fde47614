"""The store commands of the CLI against a real SQLite file: status, jobs, abort."""

from __future__ import annotations

import json
from pathlib import Path

import fq_sample_jobs as sample
from click.testing import CliRunner

import fairqueue as fq
from fairqueue.cli import main


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_status_jobs_and_abort_read_and_change_the_store(app: fq.FairQueue) -> None:
    store = str(app.storage.path)  # type: ignore[attr-defined]
    a = sample.record.delay("acme", "a")
    b = app.enqueue(sample.Chain(0, 0), org="globex")

    code, out = invoke("status", "--store", store, "--json")
    assert code == 0
    assert json.loads(out) == [
        {"org": "acme", "kind": "future", **dict.fromkeys([s.value for s in fq.JobStatus], 0), "queued": 1},
        {"org": "globex", "kind": "queueable", **dict.fromkeys([s.value for s in fq.JobStatus], 0), "queued": 1},
    ]
    code, out = invoke("jobs", "--store", store, "--org", "acme", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [a.id]
    assert json.loads(out)[0]["status"] == "queued"

    code, out = invoke("abort", str(b.id), "--store", store, "--org", "acme", "--json")
    assert code == 1 and "no job" in json.loads(out)["error"]
    assert b.status is fq.JobStatus.QUEUED
    code, out = invoke("abort", str(b.id), "--store", store, "--json")
    assert code == 0 and json.loads(out) == {"id": b.id, "status": "aborted"}
    assert b.status is fq.JobStatus.ABORTED

    code, out = invoke("jobs", "--store", store, "--status", "aborted")
    assert code == 0 and "globex" in out and "acme" not in out


def test_bad_arguments_give_a_clear_message_and_a_non_zero_exit(tmp_path: Path) -> None:
    code, out = invoke("status", "--store", str(tmp_path / "missing.db"))
    assert code == 2 and "no store at" in out
    code, out = invoke("jobs", "--status", "sleeping")
    assert code == 2 and "'sleeping' is not one of" in out
    code, out = invoke("abort", "not-a-number")
    assert code == 2 and "not a valid integer" in out
