"""Tenant settings rows and the claim's admission (caps per org and key, rate limits,
pauses, the settings version): the storage contract, the same for every backend."""

from __future__ import annotations

from fairqueue.records import Admission, Finish, JobStatus, Rate, SettingChange
from fairqueue.storage import Storage

from .builders import NOW, job


def rows(store: Storage) -> dict[tuple[str, str, str, str], dict[str, object]]:
    return {(r.scope, r.name, r.kind, r.key): dict(r.values) for r in store.settings_read()[1]}


def test_every_settings_change_bumps_the_version_and_patches_its_row(store: Storage) -> None:
    assert store.settings_version() == 0 and store.settings_read() == (0, [])
    v1 = store.settings_write([SettingChange("org", "acme", values={"cap": 3, "weight": 2.0})], NOW, "ops")
    v2 = store.settings_write([SettingChange("org", "acme", values={"cap": 4}),
                               SettingChange("key", "acme", key="user-42", values={"cap": 2})], NOW + 1)  # fmt: skip
    assert 0 < v1 < v2 == store.settings_version()
    assert rows(store) == {("org", "acme", "", ""): {"cap": 4, "weight": 2.0}, ("key", "acme", "", "user-42"): {"cap": 2}}
    [org_row] = [r for r in store.settings_read()[1] if r.scope == "org"]
    assert (org_row.updated_at, org_row.updated_by) == (NOW + 1, None)
    # None removes a field; a row left empty is deleted.
    store.settings_write([SettingChange("org", "acme", values={"cap": None}),
                          SettingChange("key", "acme", key="user-42", values={"cap": None})], NOW + 2)  # fmt: skip
    assert rows(store) == {("org", "acme", "", ""): {"weight": 2.0}}
    nested = {"rate": {"rate": 10.0, "per": 1.0, "burst": 5}, "paused": {"at": NOW, "by": "ops"}}
    store.settings_write([SettingChange("kind", "acme", kind="batch", values=nested)], NOW + 3)
    assert rows(store)[("kind", "acme", "batch", "")] == nested


def test_a_claim_built_from_older_settings_claims_nothing_but_its_outcomes_apply(store: Storage) -> None:
    a = store.job_enqueue([job(org="a") for _ in range(3)], NOW)
    store.job_claim([a[0]], "w1", NOW + 30, NOW)
    old = store.settings_version()
    store.settings_write([SettingChange("org", "a", values={"cap": 1})], NOW)
    applied, claim = store.job_finish_and_claim(
        [Finish(a[0], "w1", JobStatus.COMPLETED, NOW + 1)], [a[1]], "w1", NOW + 31, NOW + 1, Admission(version=old)
    )
    assert applied == [a[0]] and claim.stale and list(claim) == []
    assert store.job_get(a[1]).status is JobStatus.QUEUED  # type: ignore[union-attr]
    claim = store.job_claim([a[1]], "w1", NOW + 31, NOW + 1, Admission(version=store.settings_version()))
    assert not claim.stale and [r.id for r in claim] == [a[1]]


def test_org_and_key_caps_count_every_kind_and_the_jobs_of_each_key(store: Storage) -> None:
    ids = store.job_enqueue(
        [job(org="a", key="u1"), job(org="a", key="u1"), job(org="a", key="u1", kind="queueable"),
         job(org="a", key="u2"), job(org="a"), job(org="b", key="u1")], NOW,
    )  # fmt: skip
    admission = Admission(org_caps={"a": 3}, key_caps={("a", "u1"): 2, ("b", "u1"): 1})
    claim = store.job_claim(ids, "w1", NOW + 30, NOW, admission)
    # u1 of a holds 2 of 2 (its third job waits, whatever its kind), a holds 3 of 3; b's u1 is its own key.
    assert [r.id for r in claim] == [ids[0], ids[1], ids[3], ids[5]]
    assert claim.at_cap == [ids[2], ids[4]]
    store.job_finish([Finish(ids[0], "w1", JobStatus.COMPLETED, NOW + 1)])
    claim = store.job_claim([ids[2], ids[4]], "w1", NOW + 31, NOW + 1, admission)
    assert [r.id for r in claim] == [ids[2]] and claim.at_cap == [ids[4]]


def test_a_paused_scope_starts_nothing_and_says_so(store: Storage) -> None:
    ids = store.job_enqueue([job(org="a"), job(org="a", key="u1"), job(org="b", queue="gpu"), job(org="b"),
                             job(org="c", kind="batch"), job(org="c")], NOW)  # fmt: skip
    admission = Admission(paused=frozenset({("key", "a", "u1"), ("queue", "gpu"), ("kind", "c", "batch")}))
    claim = store.job_claim(ids, "w1", NOW + 30, NOW, admission)
    assert [r.id for r in claim] == [ids[0], ids[3], ids[5]]
    assert claim.paused == [ids[1], ids[2], ids[4]] and claim.at_cap == []
    assert all(store.job_get(i).status is JobStatus.QUEUED for i in claim.paused)  # type: ignore[union-attr]
    claim = store.job_claim(ids, "w1", NOW + 30, NOW, Admission(paused=frozenset({("org", "a")})))
    assert [r.id for r in claim] == [ids[2], ids[4]] and claim.paused == [ids[1]]


def test_a_rate_limit_admits_its_burst_then_one_cost_per_interval_and_names_the_instant(store: Storage) -> None:
    # 10 units a second (one every 0.1 s), bursts of 3; job costs 1, 1, 2, 1, 1.
    ids = store.job_enqueue([job(org="a", cost=c) for c in (1, 1, 2, 1, 1)], NOW)
    admission = Admission(rates={("a", "org", ""): Rate(10.0, 1.0, 3)})
    claim = store.job_claim(ids, "w1", NOW + 30, NOW, admission)
    # 1 + 1; the cost-2 job would make 4 > 3, and the cost-1 jobs behind it wait their turn.
    assert [r.id for r in claim] == ids[:2]
    assert set(claim.rate_limited) == set(ids[2:])
    assert abs(claim.rate_limited[ids[2]] - (NOW + 0.1)) < 1e-6  # room for 2 more once 0.1 s passed
    claim = store.job_claim(ids[2:], "w1", NOW + 30, NOW + 0.1, admission)
    assert [r.id for r in claim] == [ids[2]] and set(claim.rate_limited) == set(ids[3:])
    assert abs(claim.rate_limited[ids[3]] - (NOW + 0.2)) < 1e-6
    # Ten seconds idle refills only the burst.
    claim = store.job_claim(ids[3:], "w1", NOW + 40, NOW + 10, admission)
    assert [r.id for r in claim] == ids[3:]


def test_a_key_rate_limit_is_each_keys_own_and_the_state_is_the_stores(store: Storage) -> None:
    ids = store.job_enqueue([job(org="a", key="u1"), job(org="a", key="u1"), job(org="a", key="u2")], NOW)
    admission = Admission(rates={("a", "key", "u1"): Rate(1.0, 1.0, 1), ("a", "key", "u2"): Rate(1.0, 1.0, 1)})
    claim = store.job_claim(ids, "w1", NOW + 30, NOW, admission)
    assert [r.id for r in claim] == [ids[0], ids[2]] and list(claim.rate_limited) == [ids[1]]
    # Another claimer (same store) sees the same state: no room for u1 until NOW + 1.
    assert store.job_claim([ids[1]], "w2", NOW + 30, NOW + 0.5, admission).rate_limited == {ids[1]: NOW + 1.0}
    assert [r.id for r in store.job_claim([ids[1]], "w2", NOW + 31, NOW + 1.0, admission)] == [ids[1]]


def test_a_job_at_its_cap_is_not_charged_to_its_rate_limit(store: Storage) -> None:
    ids = store.job_enqueue([job(org="a"), job(org="a")], NOW)
    admission = Admission(pair_caps={("a", "future"): 1}, rates={("a", "org", ""): Rate(1.0, 1.0, 1)})
    claim = store.job_claim(ids, "w1", NOW + 30, NOW, admission)
    assert [r.id for r in claim] == [ids[0]] and claim.at_cap == [ids[1]] and claim.rate_limited == {}


def test_idle_rate_states_are_pruned_and_a_pruned_scope_has_its_whole_burst(store: Storage) -> None:
    ids = store.job_enqueue([job(org="a", key=f"u{i}") for i in range(3)] + [job(org="a", key="u0")], NOW)
    admission = Admission(rates={("a", "key", f"u{i}"): Rate(1.0, 1.0, 1) for i in range(3)})
    assert [r.id for r in store.job_claim(ids[:3], "w1", NOW + 30, NOW, admission)] == ids[:3]
    scopes = [("a", "key", f"u{i}") for i in range(3)]
    assert set(store.rate_states(scopes)) == set(scopes)
    assert store.rate_state_prune(NOW + 0.5, 10) == 0, "each state's arrival time is NOW + 1"
    assert store.rate_state_prune(NOW + 2, 10, dry_run=True) == 3 and len(store.rate_states(scopes)) == 3
    assert store.rate_state_prune(NOW + 2, 2) == 2 and store.rate_state_prune(NOW + 2, 10) == 1
    assert store.rate_states(scopes) == {}
    assert [r.id for r in store.job_claim([ids[3]], "w1", NOW + 32, NOW + 2, admission)] == [ids[3]]
