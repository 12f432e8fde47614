"""How stored tenant settings resolve (own row, tier, code) and reach a worker's core."""

from __future__ import annotations

import pytest

import fairqueue as fq
from fairqueue._core import Dispatcher
from fairqueue.runtime.core import Admissions, CoreSettings, build_dispatcher
from fairqueue.settings import CORE_NO_CAP, QueueSettings
from fairqueue.storage.memory import MemoryStorage
from fairqueue.tenants import Tenants


@pytest.fixture
def tenants() -> Tenants:
    store, settings = MemoryStorage(), QueueSettings(limits=fq.Limits(cap=None, weight=1.0))
    return Tenants(lambda: store, settings)


def test_a_value_resolves_from_its_own_row_then_its_tier_then_the_code(tenants: Tenants) -> None:
    settings = tenants.settings
    tenants.set_tier("premium", cap=24, weight=2.0, per_key_cap=3)
    tenants.set_tier("premium", "batch", cap=2)
    tenants.set_tier("default", "future", cap=8)
    tenants.assign_tier("acme", "premium")
    tenants.set_limits("acme", weight=5.0)
    assert {k: (r.value, r.source) for k, r in settings.org("acme").items() if k in ("cap", "weight", "tier")} == {
        "cap": (24, "tier:premium"), "weight": (5.0, "org"), "tier": ("premium", "org")}  # fmt: skip
    assert settings.cap("acme", "batch") == 2 and settings.pair("acme", "batch")["cap"].source == "tier:premium"
    assert settings.cap("acme", "future") is None, "premium has no future row; fair_share's code default is no cap"
    assert settings.cap("other", "future") == 8 and settings.pair("other", "future")["cap"].source == "tier:default"
    assert settings.key("acme", "user-1")["cap"].value == 3
    tenants.set_limits("acme", key="user-1", cap="none")
    assert settings.key("acme", "user-1")["cap"].value is None and settings.key("acme", "user-2")["cap"].value == 3
    tenants.set_limits("acme", weight=None)
    assert settings.org("acme")["weight"].value == 2.0, "a field set to None inherits again"


def test_the_policys_default_cap_is_the_references_12_under_peek_set_and_none_under_fair_share() -> None:
    assert QueueSettings("fair_share").cap("acme", "future") is None
    assert QueueSettings("peek_set").cap("acme", "future") == 12
    assert QueueSettings("fair_share", fq.Limits(cap=3)).cap("acme", "future") == 3
    assert build_dispatcher(QueueSettings("fair_share"), 4).limits("acme", "future")["cap"] == CORE_NO_CAP
    assert build_dispatcher(QueueSettings("peek_set", fq.Limits(min=20)), 4).limits("acme", "future") == {
        "cap": 12, "min": 12, "weight": 1.0}  # fmt: skip


def test_each_version_reaches_the_core_and_a_deleted_row_goes_back_to_the_defaults(tenants: Tenants) -> None:
    settings = tenants.settings
    core = build_dispatcher(settings, 8, virtual_time=0.0)
    applied = CoreSettings(core, settings)
    tenants.set_limits("acme", cap=6, per_key_cap=2, rate=fq.RateLimit(10, burst=4))
    tenants.set_limits("acme", "batch", cap=1)
    tenants.set_limits("acme", key="vip", cap=5, rate=fq.RateLimit(1, per=60))
    assert applied.apply() and not applied.apply(), "once per version"
    assert core.limits("acme", "batch")["cap"] == 1
    assert core.org_limits("acme")["cap"] == 6 and core.org_limits("acme")["per_key"]["cap"] == 2
    assert core.key_limits("acme", "vip")["cap"] == 5
    assert core.rate_limit("acme") is not None and core.rate_limit("acme", key="vip") is not None
    tenants.reset("acme")
    tenants.reset("acme", "batch")
    tenants.reset("acme", key="vip")
    assert applied.apply()
    assert core.limits("acme", "batch")["cap"] == CORE_NO_CAP and core.org_limits("acme")["cap"] is None
    assert core.key_limits("acme", "vip")["cap"] is None
    assert core.rate_limit("acme") is None and core.rate_limit("acme", key="vip") is None


def test_a_claims_admission_carries_the_stored_caps_rates_pauses_and_version(tenants: Tenants) -> None:
    settings = tenants.settings
    tenants.set_limits("acme", cap=6, per_key_cap=2, rate=fq.RateLimit(10, burst=4))
    tenants.pause("globex", "batch", by="ops")
    tenants.pause(queue="gpu")
    admissions = Admissions(settings)
    assert admissions.needs_keys()
    admission = admissions.build([("acme", "future", "u1"), ("acme", "future", None), ("globex", "future", None)])
    assert admission.version == settings.version
    assert admission.pair_caps == {} and admission.org_caps == {"acme": 6} and admission.key_caps == {("acme", "u1"): 2}
    assert set(admission.rates) == {("acme", "org", "")}
    assert admission.paused == frozenset({("kind", "globex", "batch"), ("queue", "gpu")})


def test_peek_set_takes_kind_limits_and_pauses_only() -> None:
    store, settings = MemoryStorage(), QueueSettings("peek_set")
    tenants = Tenants(lambda: store, settings)
    tenants.set_limits("acme", "future", cap=3)
    core = Dispatcher(policy="peek_set", slots=4)
    CoreSettings(core, settings).apply()
    assert core.limits("acme", "future")["cap"] == 3
    assert Admissions(settings).build([("acme", "future", None)]).pair_caps == {("acme", "future"): 3}


def test_peek_set_refuses_the_fair_share_settings_at_the_edge() -> None:
    store, settings = MemoryStorage(), QueueSettings("peek_set")
    tenants = Tenants(lambda: store, settings)
    with pytest.raises(fq.InvalidArgument, match="rate of a kind is a fair_share feature"):
        tenants.set_limits("acme", "future", rate=fq.RateLimit(5))
    with pytest.raises(fq.InvalidArgument, match="cap, per_key_cap of an org is a fair_share feature"):
        tenants.set_limits("acme", cap=3, per_key_cap=1)
    with pytest.raises(fq.InvalidArgument, match="cap of a key"):
        tenants.set_limits("acme", key="u1", cap=1)
    assert store.settings_version() == 0, "nothing stored"
    tenants.set_limits("acme", daily_limit=10)
    tenants.set_limits("acme", "future", cap=3)
