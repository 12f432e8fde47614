"""The dispatcher core built from a queue's settings, and kept in step with the
stored tenant settings — one place, shared by workers and test mode."""

from __future__ import annotations

from typing import Any, Optional

from fairqueue._core import Dispatcher
from fairqueue.kinds import KINDS
from fairqueue.limits import PRIORITY_AGING
from fairqueue.records import Admission, Rate, RateScope
from fairqueue.settings import DEFAULT_TIER, QueueSettings, core_pair_limits

__all__ = ["build_dispatcher", "CoreSettings", "Admissions"]


def build_dispatcher(settings: QueueSettings, slots: int, *, virtual_time: Optional[float] = None) -> Dispatcher:
    """A :class:`~fairqueue._core.Dispatcher` with ``slots`` slots and the settings'
    policy and code-level limits; on a virtual clock starting at ``virtual_time`` if
    given (test mode), else on the wall clock. :class:`CoreSettings` applies the
    stored settings to it."""
    limits = settings.limits
    defaults = core_pair_limits(settings.default_cap, limits.min, limits.weight)
    return Dispatcher(
        policy=settings.policy,
        slots=slots,
        peek_set=limits.peek_set,
        cap=defaults["cap"],
        min=defaults["min"],
        weight=defaults["weight"],
        extended_delay=dict(limits.extended_delay),
        kind_slots=dict(limits.kind_slots),
        lease=limits.lease,
        virtual_time=virtual_time,
        aging=PRIORITY_AGING,
        # An org's share is its own, however many kinds and keys it uses (the core's
        # "per_pair" gave each (org, kind) a share: three kinds, three shares).
        shares="per_org",
    )


class CoreSettings:
    """Applies the loaded tenant settings to a dispatcher core, live.

    Each new settings version is applied whole: the defaults of every kind (the
    default tier's, else the code's), then every org with settings of its own and
    every org configured before (so an org whose row was deleted goes back to the
    defaults). When the default tier holds org-level settings, each org is also
    configured the first time the worker sees it (:meth:`see`): there is no core-wide
    default for those.
    """

    def __init__(self, core: Dispatcher, settings: QueueSettings) -> None:
        self.core = core
        self.settings = settings
        self.version: Optional[int] = None
        self.configured: set[str] = set()
        self._defaults: set[str] = set()  # kinds whose defaults the default tier set
        self._keys: dict[str, set[str]] = {}  # org -> keys given limits of their own
        self._rates: dict[str, set[tuple[str, str]]] = {}  # org -> rate scopes set in the core
        self.preferred: dict[str, float] = {}
        """This worker's home orgs and the factor on each one's weight (:mod:`~fairqueue.runtime.duties.affinity`)."""

    def prefer(self, preferred: dict[str, float]) -> None:
        """Multiplies the weight of each of this worker's home orgs by its factor;
        orgs no longer listed go back to their settings' weight."""
        if self.settings.policy == "peek_set":
            return  # weights are a fair_share feature; peek_set keeps the reference's order
        changed = sorted(org for org in preferred.keys() | self.preferred.keys()
                         if preferred.get(org) != self.preferred.get(org))  # fmt: skip
        self.preferred = dict(preferred)
        for org in changed:
            self.core.set_org_limits(org, **self._org_limits(org))
            self.configured.add(org)

    def _org_limits(self, org: str) -> dict[str, Any]:
        limits = self.settings.org_limits(org)
        limits["weight"] *= self.preferred.get(org, 1.0)
        return limits

    def apply(self) -> bool:
        """Applies the settings if their version is new; True if it did."""
        if self.settings.version == self.version:
            return False
        # A kind's defaults come from the code, which built the core (or the caller, who
        # gave the worker its own core), until the default tier stores some of its own.
        for kind in KINDS:
            stored = bool(self.settings.row("tier", DEFAULT_TIER, kind))
            if stored or kind in self._defaults:
                self.core.set_default_limits(kind, **self.settings.default_pair_limits(kind))
            self._defaults.discard(kind)
            if stored:
                self._defaults.add(kind)
        for org in sorted(set(self.settings.orgs()) | self.configured):
            self.configure(org)
        self.version = self.settings.version
        return True

    def see(self, org: str) -> None:
        """Configures ``org`` if the default tier has org-level settings it has not had."""
        if org not in self.configured and self.settings.default_org_settings():
            self.configure(org)

    def configure(self, org: str) -> None:
        """Gives ``org`` its resolved settings in the core."""
        settings, core = self.settings, self.core
        self.configured.add(org)
        for kind in KINDS:
            core.set_limits(org, kind, **settings.pair_limits(org, kind))
        if settings.policy == "peek_set":
            return  # org, key and rate limits are fair_share features (refused at the edge)
        core.set_org_limits(org, **self._org_limits(org))
        keys = set(settings.own_keys(org))
        for key in sorted(keys):
            resolved = settings.key(org, key)
            core.set_key_limits(org, key, cap=resolved["cap"].value, weight=resolved["weight"].value)
        for key in sorted(self._keys.get(org, set()) - keys):
            core.set_key_limits(org, key, inherit=True)
        self._keys[org] = keys
        rates: dict[tuple[str, str], Any] = {("org", ""): settings.org(org)["rate"].value}
        rates[("every_key", "")] = settings.org(org)["key_rate"].value
        for kind in KINDS:
            rates[("kind", kind)] = settings.pair(org, kind)["rate"].value
        for key in keys:  # a key's own rate; the org's for every key is its every_key limit
            rates[("key", key)] = settings.row("key", org, key=key).get("rate")
        for scope in self._rates.get(org, set()) - {s for s, v in rates.items() if v is not None}:
            self._set_rate(org, scope, None)
        live: set[tuple[str, str]] = set()
        for scope, value in rates.items():
            if value is not None:
                self._set_rate(org, scope, value)
                live.add(scope)
        self._rates[org] = live

    def _set_rate(self, org: str, scope: tuple[str, str], value: Optional[dict[str, Any]]) -> None:
        level, name = scope
        rate = None if value is None else float(value["rate"])
        per = 1.0 if value is None else float(value["per"])
        burst = None if value is None else int(value["burst"])
        if level == "org":
            self.core.set_rate_limit(org, rate, per=per, burst=burst)
        elif level == "every_key":
            self.core.set_rate_limit(org, rate, per=per, burst=burst, every_key=True)
        elif level == "kind":
            self.core.set_rate_limit(org, rate, per=per, burst=burst, kind=name)
        else:
            self.core.set_rate_limit(org, rate, per=per, burst=burst, key=name)


Line = tuple[str, str, Optional[str]]  # (org, kind, key) of a job


class Admissions:
    """Builds the :class:`~fairqueue.records.Admission` a worker's claim carries: the
    caps and rate limits of its jobs' scopes and every pause, at the loaded settings
    version, which the store checks (so the store, not any worker's copy, decides)."""

    def __init__(self, settings: QueueSettings) -> None:
        self.settings = settings
        self._version: Optional[int] = None
        self._lines: dict[Line, tuple[Any, ...]] = {}
        self._paused: frozenset[tuple[str, ...]] = frozenset()
        self._keyed = False
        self._unlimited: Optional[bool] = None

    @property
    def version(self) -> Optional[int]:
        """The settings version the admissions are built at (a claim under an older one is refused)."""
        self._follow()
        return self._version

    def unlimited(self) -> bool:
        """True if no claim at the loaded settings has a cap, rate limit or pause to
        count: nothing is paused, and neither the code's limits nor any org's stored
        settings give a job of any kind a cap or a rate limit."""
        self._follow()
        if self._unlimited is None:
            orgs = {name for (scope, name, _, _) in self.settings.rows() if scope in ("org", "kind")}
            # "\0" names no org: its lines are an org's without settings of its own.
            lines = (self._line(org, kind, None) for org in [*orgs, "\0"] for kind in KINDS)
            self._unlimited = not self._paused and not self._keyed and not any(
                pair_cap is not None or org_cap is not None or rates for pair_cap, org_cap, _, rates in lines
            )
        return self._unlimited

    def needs_keys(self) -> bool:
        """True if some key has a cap or a rate limit (a claim's lines then need their keys)."""
        self._follow()
        return self._keyed

    def build(self, lines: list[Line]) -> Admission:
        """The admission of a claim of jobs of ``lines``."""
        self._follow()
        pair_caps: dict[tuple[str, str], int] = {}
        org_caps: dict[str, int] = {}
        key_caps: dict[tuple[str, Optional[str]], int] = {}
        rates: dict[RateScope, Rate] = {}
        for line in lines:
            found = self._lines.get(line)
            if found is None:
                found = self._lines[line] = self._line(*line)
            pair_cap, org_cap, key_cap, line_rates = found
            org, kind, key = line
            if pair_cap is not None:
                pair_caps[(org, kind)] = pair_cap
            if org_cap is not None:
                org_caps[org] = org_cap
            if key_cap is not None:
                key_caps[(org, key)] = key_cap
            rates.update(line_rates)
        return Admission(self._version, pair_caps, org_caps, key_caps, rates, self._paused)

    def _follow(self) -> None:
        """Drops what was worked out for an older settings version."""
        if self._version == self.settings.version and self._version is not None:
            return
        self._lines.clear()
        self._unlimited = None
        self._paused = frozenset(
            (scope, name) if scope in ("org", "queue") else (scope, name, kind or key)
            for (scope, name, kind, key), _ in self.settings.pauses()
        )
        self._keyed = self.settings.policy == "fair_share" and any(
            scope == "key" or "per_key_cap" in values or "key_rate" in values
            for (scope, _, _, _), values in self.settings.rows().items()
        )
        self._version = self.settings.version

    def _line(self, org: str, kind: str, key: Optional[str]) -> tuple[Any, ...]:
        settings = self.settings
        pair_cap = settings.cap(org, kind)
        if settings.policy == "peek_set":
            return pair_cap, None, None, {}
        resolved = settings.org(org)
        rates: dict[RateScope, Rate] = {}
        for scope, value in (((org, "org", ""), resolved["rate"].value),
                             ((org, "kind", kind), settings.pair(org, kind)["rate"].value)):  # fmt: skip
            if value is not None:
                rates[scope] = Rate(float(value["rate"]), float(value["per"]), int(value["burst"]))
        key_cap = None
        if key is not None:
            own = settings.key(org, key)
            key_cap = own["cap"].value
            if own["rate"].value is not None:
                value = own["rate"].value
                rates[(org, "key", key)] = Rate(float(value["rate"]), float(value["per"]), int(value["burst"]))
        return pair_cap, resolved["cap"].value, key_cap, rates
