"""A queue's settings: its policy, its code-level limits, and the tenant settings
stored in its store (per org, (org, kind), (org, key), tier and queue).

One :class:`QueueSettings` belongs to an app; the layers below it (enqueue,
explain, alerts, the worker, test mode) receive it rather than the app, and read
it when they act. The stored settings arrive as a snapshot (:meth:`QueueSettings.load`)
of the rows :mod:`fairqueue.tenants` writes; each value resolves, most specific
first: the scope's own row, its org's tier (or the tier named ``default`` for orgs
without one), then the code's :class:`~fairqueue.limits.Limits`. A project with no
stored settings behaves exactly as its code says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from fairqueue.errors import InvalidArgument
from fairqueue.kinds import Policy
from fairqueue.limits import REFERENCE_CAP, Limits, RateLimit
from fairqueue.records import SettingRow
from fairqueue.validate import MAX_ID, U32_MAX, check_number, check_policy, shown

__all__ = [
    "QueueSettings",
    "Resolved",
    "Pause",
    "DEFAULT_TIER",
    "NO_CAP",
    "SCOPE_FIELDS",
    "check_setting",
    "core_pair_limits",
    "CORE_NO_CAP",
    "describe",
    "rate_of",
]

DEFAULT_TIER = "default"
"""The tier of every org that was assigned none."""

NO_CAP = "none"
"""The stored value of an org or key cap that is explicitly no cap."""

SCOPE_FIELDS: Mapping[str, frozenset[str]] = {
    "org": frozenset({"cap", "min", "weight", "per_key_cap", "per_key_weight", "daily_limit", "rate", "key_rate",
                      "paused", "tier"}),
    "kind": frozenset({"cap", "min", "weight", "rate", "paused"}),
    "key": frozenset({"cap", "weight", "rate", "paused"}),
    "tier": frozenset({"cap", "min", "weight", "per_key_cap", "per_key_weight", "daily_limit", "rate", "key_rate"}),
    "tier_kind": frozenset({"cap", "min", "weight", "rate"}),
    "queue": frozenset({"paused"}),
}  # fmt: skip
"""The settings each scope of row holds (``tier_kind``: a tier's row for one kind)."""


def check_setting(scope: str, field: str, value: Any, where: str = "") -> Any:
    """``value`` as stored for ``field`` of a ``scope`` row, or InvalidArgument saying
    what is allowed (``where`` names the scope in the message, e.g. ``org 'acme'``).
    None (remove the field) passes as None."""
    try:
        return stored_value(scope, field, value)
    except InvalidArgument as e:
        if not where:
            raise
        raise InvalidArgument(str(e).replace(": expected", f" for {where}: expected", 1)) from None


def stored_value(scope: str, field: str, value: Any) -> Any:
    """See :func:`check_setting`."""
    allowed = SCOPE_FIELDS[scope]
    if field not in allowed:
        raise InvalidArgument(f"invalid setting {field!r} for a {scope} scope: expected one of {', '.join(sorted(allowed))}")
    if value is None:
        return None
    if field in ("cap", "per_key_cap"):
        if value == NO_CAP:
            return NO_CAP
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= U32_MAX:
            raise InvalidArgument(
                f"invalid {field} {shown(value)}: expected an integer from 1 to {U32_MAX:,}, or {NO_CAP!r} for no cap"
            )
        return value
    if field == "min":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U32_MAX:
            raise InvalidArgument(f"invalid min {shown(value)}: expected an integer from 0 to {U32_MAX:,}")
        return value
    if field in ("weight", "per_key_weight"):
        return float(check_number(field, value, above=True, most=1e9))
    if field == "daily_limit":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
            raise InvalidArgument(f"invalid daily limit {shown(value)}: expected an integer from 0 to {MAX_ID:,}")
        return value
    if field in ("rate", "key_rate"):
        if isinstance(value, Mapping):
            value = RateLimit.from_dict(value)
        if not isinstance(value, RateLimit):
            raise InvalidArgument(f"invalid {field} {shown(value)}: expected a fairqueue.RateLimit")
        return value.to_dict()
    if field == "paused":
        if not isinstance(value, Mapping) or not isinstance(value.get("at"), (int, float)):
            raise InvalidArgument(f"invalid paused {shown(value)}: expected {{'at': seconds, 'by': text or None}}")
        return {"at": float(value["at"]), "by": value.get("by")}
    if field == "tier":
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"invalid tier {shown(value)}: expected a tier's name")
        return value
    raise AssertionError(field)  # every field of SCOPE_FIELDS is checked above


@dataclass(frozen=True)
class Pause:
    """A paused scope: since when (UNIX seconds), by whom, and what it is."""

    at: float
    by: Optional[str]
    scope: str
    """``"org 'acme'"``, ``"kind 'batch' of org 'acme'"``, ``"key 'user-42' of org 'acme'"`` or ``"queue 'gpu'"``."""


@dataclass(frozen=True)
class Resolved:
    """One setting's value and where it came from: ``"org"``, ``"kind"``, ``"key"``,
    ``"tier:<name>"`` or ``"code"``."""

    value: Any
    source: str


Scope = tuple[str, str, str, str]  # (scope, name, kind, key) of a settings row


class QueueSettings:
    """The policy, the code-level limits and the stored tenant settings of one queue.

    Args:
        policy: ``"fair_share"`` or ``"peek_set"``.
        limits: the queue's code-level limits; the reference defaults if omitted.
    """

    def __init__(self, policy: Policy = "fair_share", limits: Optional[Limits] = None) -> None:
        self.policy: Policy = check_policy(policy)
        self.limits = limits or Limits()
        self.version: Optional[int] = None
        """The stored settings version loaded (None: none loaded yet)."""
        self._rows: dict[Scope, Mapping[str, Any]] = {}
        self._by_org: dict[str, list[Scope]] = {}
        self._paused: list[tuple[Scope, Pause]] = []
        self._refresh: Optional[Callable[[], object]] = None

    # ----- the stored snapshot -------------------------------------------------------------

    def load(self, version: int, rows: Iterable[SettingRow]) -> None:
        """Takes a snapshot of the stored settings (``Storage.settings_read``)."""
        stored: dict[Scope, Mapping[str, Any]] = {}
        by_org: dict[str, list[Scope]] = {}
        paused: list[tuple[Scope, Pause]] = []
        for row in rows:
            where = (row.scope, row.name, row.kind, row.key)
            stored[where] = row.values
            if row.scope in ("org", "kind", "key"):
                by_org.setdefault(row.name, []).append(where)
            if "paused" in row.values:
                p = row.values["paused"]
                paused.append((where, Pause(float(p["at"]), p.get("by"), describe(where))))
        self._rows, self._by_org, self._paused, self.version = stored, by_org, paused, version

    def forget(self) -> None:
        """Drops the loaded snapshot (the app's store changed): the next read loads afresh."""
        self._rows, self._by_org, self._paused, self.version = {}, {}, [], None

    def follow(self, refresh: Callable[[], object]) -> None:
        """Has :meth:`fresh` call ``refresh`` (the app's ``tenants.refresh``, which loads
        a new stored version at most every quarter second)."""
        self._refresh = refresh

    def fresh(self) -> QueueSettings:
        """These settings, after loading the stored ones if they changed (enqueues and
        explanations read through it; a worker loads them each turn itself)."""
        if self._refresh is not None:
            self._refresh()
        return self

    def orgs(self) -> list[str]:
        """The orgs with stored settings of their own (any scope)."""
        return sorted(self._by_org)

    def row(self, scope: str, name: str, kind: str = "", key: str = "") -> Mapping[str, Any]:
        """One stored row's values (empty if it has none)."""
        return self._rows.get((scope, name, kind, key), {})

    def rows(self) -> dict[Scope, Mapping[str, Any]]:
        """Every stored row by (scope, name, kind, key)."""
        return dict(self._rows)

    def tier_of(self, org: str) -> str:
        """The tier ``org`` is assigned (:data:`DEFAULT_TIER` if none)."""
        tier = self._rows.get(("org", org, "", ""), {}).get("tier")
        return str(tier) if tier else DEFAULT_TIER

    def _chain(self, org: str, kind: str = "", key: str = "") -> list[tuple[Mapping[str, Any], str]]:
        """The rows a value of this scope resolves through, most specific first."""
        tier = self.tier_of(org)
        chain: list[tuple[Mapping[str, Any], str]] = []
        if key:
            chain.append((self._rows.get(("key", org, "", key), {}), "key"))
        elif kind:
            chain.append((self._rows.get(("kind", org, kind, ""), {}), "kind"))
            chain.append((self._rows.get(("tier", tier, kind, ""), {}), f"tier:{tier}"))
        else:
            chain.append((self._rows.get(("org", org, "", ""), {}), "org"))
            chain.append((self._rows.get(("tier", tier, "", ""), {}), f"tier:{tier}"))
        return chain

    def _resolve(self, chain: list[tuple[Mapping[str, Any], str]], field: str, default: Any) -> Resolved:
        for values, source in chain:
            if field in values:
                return Resolved(values[field], source)
        return Resolved(default, "code")

    # ----- what each scope resolves to --------------------------------------------------

    def pair(self, org: str, kind: str) -> dict[str, Resolved]:
        """``cap``, ``min``, ``weight`` and ``rate`` of one (org, kind) pair, with their sources."""
        chain = self._chain(org, kind=kind)
        limits = self.limits
        cap = self._resolve(chain, "cap", self.default_cap)
        return {
            "cap": Resolved(None, cap.source) if cap.value == NO_CAP else cap,
            "min": self._resolve(chain, "min", limits.min),
            "weight": self._resolve(chain, "weight", limits.weight),
            "rate": self._resolve(chain, "rate", None),
        }

    @property
    def default_cap(self) -> Optional[int]:
        """The code's cap per (org, kind): ``limits.cap``, else the policy's — the
        reference's 12 under ``peek_set``, none under ``fair_share``."""
        if self.limits.cap is not None:
            return self.limits.cap
        return REFERENCE_CAP if self.policy == "peek_set" else None

    def default_pair_limits(self, kind: str) -> dict[str, Any]:
        """The core's ``{"cap", "min", "weight"}`` of ``kind`` for an org with no settings of its own."""
        chain = [(self._rows.get(("tier", DEFAULT_TIER, kind, ""), {}), f"tier:{DEFAULT_TIER}")]
        cap = self._resolve(chain, "cap", self.default_cap).value
        return core_pair_limits(None if cap == NO_CAP else cap, self._resolve(chain, "min", self.limits.min).value,
                                self._resolve(chain, "weight", self.limits.weight).value)  # fmt: skip

    def default_org_settings(self) -> bool:
        """True if the default tier stores org-level settings (every org seen takes them)."""
        return bool(self._rows.get(("tier", DEFAULT_TIER, "", "")))

    def pair_limits(self, org: str, kind: str) -> dict[str, Any]:
        """The core's ``{"cap", "min", "weight"}`` of one (org, kind) pair."""
        resolved = self.pair(org, kind)
        return core_pair_limits(resolved["cap"].value, resolved["min"].value, resolved["weight"].value)

    def cap(self, org: str, kind: str) -> Optional[int]:
        """The most ``kind`` slots ``org`` may hold at once, across every worker (None: no cap)."""
        cap = self.pair(org, kind)["cap"].value
        return None if cap is None else int(cap)

    def org(self, org: str) -> dict[str, Resolved]:
        """An org's own settings with their sources: ``cap`` (None: no org cap), ``min``,
        ``weight``, ``per_key_cap``, ``per_key_weight``, ``daily_limit``, ``rate``,
        ``key_rate`` (each key's own), ``tier``."""
        chain = self._chain(org)
        resolved = {
            "cap": self._resolve(chain, "cap", None),
            "min": self._resolve(chain, "min", 0),
            "weight": self._resolve(chain, "weight", 1.0),
            "per_key_cap": self._resolve(chain, "per_key_cap", None),
            "per_key_weight": self._resolve(chain, "per_key_weight", 1.0),
            "daily_limit": self._resolve(chain, "daily_limit", self.limits.daily_executions),
            "rate": self._resolve(chain, "rate", None),
            "key_rate": self._resolve(chain, "key_rate", None),
        }
        for name in ("cap", "per_key_cap"):
            if resolved[name].value == NO_CAP:
                resolved[name] = Resolved(None, resolved[name].source)
        own_tier = self._rows.get(("org", org, "", ""), {}).get("tier")
        resolved["tier"] = Resolved(self.tier_of(org), "org" if own_tier else "code")
        return resolved

    def org_limits(self, org: str) -> dict[str, Any]:
        """What the core's ``set_org_limits`` takes for ``org``."""
        resolved = self.org(org)
        cap = resolved["cap"].value
        return {
            "cap": cap,
            "min": resolved["min"].value if cap is None else min(resolved["min"].value, cap),
            "weight": resolved["weight"].value,
            "per_key_cap": resolved["per_key_cap"].value,
            "per_key_weight": resolved["per_key_weight"].value,
        }

    def key(self, org: str, key: str) -> dict[str, Resolved]:
        """A named key's ``cap`` (None: none), ``weight`` and ``rate``: its own row, else
        its org's per-key settings."""
        own = self._rows.get(("key", org, "", key), {})
        org_settings = self.org(org)
        cap = Resolved(own["cap"], "key") if "cap" in own else org_settings["per_key_cap"]
        if cap.value == NO_CAP:
            cap = Resolved(None, cap.source)
        weight = Resolved(own["weight"], "key") if "weight" in own else org_settings["per_key_weight"]
        rate = Resolved(own["rate"], "key") if "rate" in own else org_settings["key_rate"]
        return {"cap": cap, "weight": weight, "rate": rate}

    def own_keys(self, org: str) -> list[str]:
        """The keys of ``org`` with a stored row of their own."""
        return sorted(w[3] for w in self._by_org.get(org, []) if w[0] == "key")

    def daily_limit(self, org: str) -> int:
        """The most async executions ``org`` may have in any rolling 24 hours."""
        return int(self.org(org)["daily_limit"].value)

    def daily_limits(self, orgs: Iterable[str]) -> dict[str, int]:
        """The daily limit of each of ``orgs`` (what the store checks an enqueue against)."""
        return {org: self.daily_limit(org) for org in set(orgs)}

    # ----- pauses ---------------------------------------------------------------------------

    def paused(self, org: str, kind: str, key: Optional[str], queue: str) -> Optional[Pause]:
        """The pause that holds a job of this scope back, if any (the earliest)."""
        if not self._paused:
            return None
        found = [
            pause for (scope, name, k, key_name), pause in self._paused
            if (scope == "org" and name == org)
            or (scope == "kind" and name == org and k == kind)
            or (scope == "key" and name == org and key is not None and key_name == key)
            or (scope == "queue" and name == queue)
        ]  # fmt: skip
        return min(found, key=lambda p: p.at) if found else None

    def pauses(self) -> list[tuple[Scope, Pause]]:
        """Every stored pause with its row's scope."""
        return list(self._paused)


CORE_NO_CAP = U32_MAX
"""The cap the core is given for "no cap": more slots than any worker has."""


def core_pair_limits(cap: Optional[int], min: int, weight: float) -> dict[str, Any]:
    """A pair's limits as the core takes them: no cap as :data:`CORE_NO_CAP`, and a
    minimum above the cap (each from a different row) held to the cap."""
    core_cap = CORE_NO_CAP if cap is None else cap
    return {"cap": core_cap, "min": min if min <= core_cap else core_cap, "weight": weight}


def describe(where: Sequence[str]) -> str:
    """A settings row's scope as users read it."""
    scope, name, kind, key = where
    if scope == "org":
        return f"org {name!r}"
    if scope == "kind":
        return f"kind {kind!r} of org {name!r}"
    if scope == "key":
        return f"key {key!r} of org {name!r}"
    if scope == "tier":
        return f"tier {name!r}" + (f" (kind {kind!r})" if kind else "")
    return f"queue {name!r}"


def rate_of(value: Union[None, Mapping[str, Any]]) -> Optional[RateLimit]:
    """A stored rate limit as a :class:`~fairqueue.limits.RateLimit` (None: none)."""
    return None if value is None else RateLimit.from_dict(value)


