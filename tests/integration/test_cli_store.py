"""The store commands of the CLI against a real SQLite file: status, jobs, abort."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import fairqueue as fq
import fq_sample_jobs as sample
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


def test_db_upgrade_creates_and_migrates_idempotently_and_refuses_a_newer_store(tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    from fairqueue.storage import SCHEMA_VERSION
    from sqlite_rewind import rewind

    store = tmp_path / "fq.db"
    for _ in range(2):
        code, out = invoke("db", "upgrade", "--store", str(store), "--json")
        assert code == 0 and json.loads(out) == {"store": str(store), "schema_version": SCHEMA_VERSION}
    with closing(sqlite3.connect(store)) as db:
        # A version-1 store (as an earlier fairqueue left it) is migrated forward.
        rewind(db, 1)
        db.commit()
    code, out = invoke("db", "upgrade", "--store", str(store))
    assert code == 0 and f"schema version {SCHEMA_VERSION}" in out
    with closing(sqlite3.connect(store)) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'fq_jobs_processing'").fetchone()
        db.execute("UPDATE fq_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
        db.commit()
    code, out = invoke("db", "upgrade", "--store", str(store))
    assert code == 2 and "newer than this fairqueue" in out
    code, out = invoke("db", "upgrade", "--store", str(tmp_path / "missing" / "fq.db"))
    assert code == 2 and "no directory" in out


def test_db_upgrade_on_postgres_creates_the_schema_it_is_given(pg_dsn: str, pg_schema: str) -> None:
    import psycopg

    from fairqueue.storage import SCHEMA_VERSION

    url = f"{pg_dsn}?schema={pg_schema}"
    for _ in range(2):
        code, out = invoke("db", "upgrade", "--store", url, "--json")
        assert code == 0 and json.loads(out)["schema_version"] == SCHEMA_VERSION
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(f'SELECT value FROM "{pg_schema}".fq_meta WHERE key = %s', ("schema_version",)).fetchone()
    assert row == (str(SCHEMA_VERSION),)


def test_schedules_lists_triggers_as_json_and_filters_them(app: fq.FairQueue) -> None:
    store = str(app.storage.path)  # type: ignore[attr-defined]
    a = app.schedule("nightly", "0 0 3 * * ?", sample.Chain(0, 0), "acme")
    b = app.schedule("hourly", "0 0 * * * ?", sample.Chain(0, 0), "globex")
    app.unschedule(b.id)
    code, out = invoke("schedules", "--store", store, "--json")
    assert code == 0 and [(t["id"], t["state"]) for t in json.loads(out)] == [(a.id, "waiting"), (b.id, "aborted")]
    code, out = invoke("schedules", "--store", store, "--org", "acme", "--state", "waiting", "--json")
    assert code == 0 and [t["name"] for t in json.loads(out)] == ["nightly"]
    code, out = invoke("schedules", "--store", store)
    assert code == 0 and "nightly" in out and "0 0 3 * * ?" in out
    code, out = invoke("schedules", "--store", store, "--state", "sleeping")
    assert code == 2 and "sleeping" in out


def test_flex_lists_and_reorders_an_orgs_holding_batches(app: fq.FairQueue) -> None:
    store = str(app.storage.path)  # type: ignore[attr-defined]
    handles = [app.execute_batch(sample.Numbers(1), org="acme") for _ in range(8)]
    held = [h.id for h in handles[5:]]
    code, out = invoke("flex", "acme", "--store", store, "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == held and json.loads(out)[0]["status"] == "holding"
    code, out = invoke("flex", "acme", "--store", store, "--move", str(held[2]), "--to", "front", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [held[2], held[0], held[1]]
    code, out = invoke("flex", "acme", "--store", store, "--move", str(held[2]), "--after", str(held[1]))
    assert code == 0 and [r.id for r in app.flex_queue("acme")] == held
    code, out = invoke("flex", "acme", "--store", store, "--move", str(handles[0].id), "--to", "end")
    assert code == 2 and "is not holding" in out
    code, out = invoke("flex", "acme", "--store", store, "--move", str(held[0]))
    assert code == 2 and "exactly one of" in out
    code, out = invoke("flex", "nobody", "--store", store)
    assert code == 0 and "No batch jobs holding for nobody" in out


def test_org_names_with_rich_markup_are_shown_as_written(app: fq.FairQueue) -> None:
    store = str(app.storage.path)  # type: ignore[attr-defined]
    for org in ("[/]", "[bold]loud[/bold]", "[red]x"):
        sample.record.delay(org, "a")
    for command in ("status", "jobs"):
        code, out = invoke(command, "--store", store)
        assert code == 0, out
        assert "[/]" in out and "[bold]loud[/bold]" in out and "[red]x" in out, out


def test_workers_lists_the_registry_alive_and_dead(app: fq.FairQueue) -> None:
    from conftest import wait_until

    store = str(app.storage.path)  # type: ignore[attr-defined]
    sample.wait_for_release.delay("acme")
    with app.worker(slots=2, name="w-[bold]1") as worker:
        wait_until(lambda: app.jobs(status="processing"), timeout=60, what="the job to start")
        code, out = invoke("workers", "--store", store, "--json")
        assert code == 0
        [listed] = json.loads(out)
        assert (listed["name"], listed["mode"], listed["slots"], listed["alive"], listed["running"]) == (
            "w-[bold]1", "thread", 2, True, 1,
        )  # fmt: skip
        assert listed["pid"] == worker.info.pid and 0 <= listed["last_seen_seconds_ago"] < 60
        code, out = invoke("workers", "--store", store)
        assert code == 0 and "w-[bold]1" in out, "names are shown as they are, not as markup"
        sample.release.set()
    code, out = invoke("workers", "--store", store, "--json")
    assert code == 0 and json.loads(out) == [], "a stopped worker leaves the registry"
    assert "No workers registered." in invoke("workers", "--store", store)[1]


def test_retry_and_abort_many_by_filter_count_confirm_and_touch_only_the_matching_jobs(app: fq.FairQueue) -> None:
    store = str(app.storage.path)  # type: ignore[attr-defined]
    poisoned = [sample.poisoned.delay(org) for org in ("acme", "acme", "globex")]
    with app.worker(slots=2):
        for handle in poisoned:
            handle.wait(timeout=60)
    waiting = [sample.record.delay("acme", str(i)) for i in range(3)]
    code, out = invoke("retry", "--store", store, "--all", "--org", "acme")
    assert code == 2 and "2 jobs match: pass --yes" in out, "no terminal to confirm on: refused"
    assert all(h.status is fq.JobStatus.FAILED for h in poisoned)
    code, out = invoke("retry", "--store", store, "--all", "--org", "acme", "--status", "failed", "--yes", "--json")
    assert code == 0 and json.loads(out) == {"matched": 2, "queued": [poisoned[0].id, poisoned[1].id]}
    assert poisoned[2].status is fq.JobStatus.FAILED, "globex's job is not touched"
    code, out = invoke("abort", "--store", store, "--all", "--org", "acme", "--handler", "fq_sample_jobs:record", "--yes")
    assert code == 0 and "3 jobs matched: 3 aborted" in out
    assert all(h.status is fq.JobStatus.ABORTED for h in waiting)
    assert [h.status for h in poisoned[:2]] == [fq.JobStatus.QUEUED] * 2, "another handler's jobs stay queued"
    code, out = invoke("retry", str(waiting[0].id), "--store", store)
    assert code == 0 and "1 of 1 matching jobs queued again" in out
    code, out = invoke("retry", str(poisoned[0].id), "--store", store, "--json")
    assert code == 1 and "is queued: only failed, discarded or aborted" in json.loads(out)["error"]
    code, out = invoke("abort", "--store", store)
    assert code == 2 and "give a JOB_ID, or --all" in out
