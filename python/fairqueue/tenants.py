"""Tenant settings that live in the store: limits per org, (org, kind) and key,
tiers, pauses — written here, read by every worker on every host within a second.

Every change is one transaction that bumps the store's settings version. Workers
load the new version (PostgreSQL announces it; the other stores are asked for their
version every quarter second) and apply it to their cores; every claim carries the
version its limits were computed from and the store refuses a claim built from an
older one, so a lowered cap is never exceeded by a job that starts after the change
commits (jobs already running finish: the count drains down).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional

from fairqueue.errors import InvalidArgument
from fairqueue.kinds import KINDS
from fairqueue.limits import RateLimit
from fairqueue.records import HistoryEntry, SettingChange
from fairqueue.settings import DEFAULT_TIER, NO_CAP, QueueSettings, Resolved, check_setting, describe
from fairqueue.storage import Storage
from fairqueue.validate import check_key, check_kind, check_name, check_org, check_queue, shown

__all__ = ["Tenants", "REFRESH_EVERY", "parse_cap", "parse_rate"]

REFRESH_EVERY = 0.25
"""Seconds between two looks at a store's settings version, where it announces no change."""


class Tenants:
    """Reads and writes the tenant settings of one store (``app.tenants``).

    Args:
        store: returns the store to use (the app's, which test mode may swap).
        settings: the queue settings the stored ones are loaded into.
    """

    def __init__(self, store: Callable[[], Storage], settings: QueueSettings) -> None:
        self._store = store
        self.settings = settings
        self._looked_at = 0.0

    # ----- reading ----------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> bool:
        """Loads the stored settings if their version moved (at most every
        :data:`REFRESH_EVERY` seconds unless ``force``); True if it loaded a new one."""
        now = time.monotonic()
        if not force and self.settings.version is not None and now - self._looked_at < REFRESH_EVERY:
            return False
        self._looked_at = now
        store = self._store()
        if not force and self.settings.version is not None and store.settings_version() == self.settings.version:
            return False
        version, rows = store.settings_read()
        changed = version != self.settings.version
        self.settings.load(version, rows)
        return changed

    def describe(self, org: str) -> dict[str, Any]:
        """``org``'s settings as they apply now, each ``{"value", "source"}`` (source:
        ``org``, ``kind``, ``key``, ``tier:<name>`` or ``code``), with its kinds and keys."""
        self.refresh()
        settings = self.settings

        def shown_values(resolved: Mapping[str, Resolved]) -> dict[str, Any]:
            return {name: {"value": r.value, "source": r.source} for name, r in resolved.items()}

        pauses = {(scope, kind, key): {"since": p.at, "by": p.by}
                  for (scope, name, kind, key), p in settings.pauses() if scope != "queue" and name == org}  # fmt: skip
        return {
            "org": org,
            "settings": shown_values(settings.org(org)),
            "kinds": {kind: shown_values(settings.pair(org, kind)) for kind in KINDS},
            "keys": {key: shown_values(settings.key(org, key)) for key in settings.own_keys(org)},
            "paused": pauses.get(("org", "", "")),
            "paused_kinds": {kind: pause for (scope, kind, _), pause in pauses.items() if scope == "kind"},
            "paused_keys": {key: pause for (scope, _, key), pause in pauses.items() if scope == "key"},
        }

    def list(self) -> list[dict[str, Any]]:
        """:meth:`describe` of every org with stored settings of its own."""
        self.refresh()
        return [self.describe(org) for org in self.settings.orgs()]

    def tiers(self) -> dict[str, dict[str, Any]]:
        """Every stored tier: its settings, and per kind its kind settings."""
        self.refresh()
        tiers: dict[str, dict[str, Any]] = {}
        for (scope, name, kind, _), values in sorted(self.settings.rows().items()):
            if scope == "tier":
                tier = tiers.setdefault(name, {"settings": {}, "kinds": {}})
                if kind:
                    tier["kinds"][kind] = dict(values)
                else:
                    tier["settings"] = dict(values)
        return tiers

    def paused_queues(self) -> dict[str, dict[str, Any]]:
        """Every paused named queue: since when and by whom."""
        self.refresh()
        return {
            name: {"since": values["paused"]["at"], "by": values["paused"].get("by")}
            for (scope, name, _, _), values in self.settings.rows().items()
            if scope == "queue" and "paused" in values
        }

    # ----- writing ----------------------------------------------------------------------------

    def set_limits(
        self,
        org: str,
        kind: Optional[str] = None,
        *,
        key: Optional[str] = None,
        by: Optional[str] = None,
        **values: Any,
    ) -> int:
        """Stores settings of ``org`` (``kind`` given: of that kind of it; ``key`` given:
        of that concurrency key of it) and returns the new settings version. Fields
        left out keep their value; a field given as None goes back to what it inherits.

        Org fields: ``cap`` (most slots over all its kinds; ``"none"``), ``min``,
        ``weight``, ``per_key_cap`` (each named key's cap unless the key has its own;
        ``"none"``), ``per_key_weight``, ``daily_limit``, ``rate`` and ``key_rate``
        (:class:`~fairqueue.limits.RateLimit`: the org's, and each key's own), ``tier``.
        Kind fields: ``cap``, ``min``, ``weight``, ``rate``. Key fields: ``cap``
        (``"none"``), ``weight``, ``rate``.
        """
        check_org(org)
        if kind is not None and key is not None:
            raise InvalidArgument("set_limits takes a kind or a key, not both: a key's limits hold over all its kinds")
        if kind is not None:
            scope, change = "kind", SettingChange("kind", org, check_kind(kind), "", {})
        elif key is not None:
            scope, change = "key", SettingChange("key", org, "", check_key(key), {})
        else:
            scope, change = "org", SettingChange("org", org, "", "", {})
        if not values:
            raise InvalidArgument(f"set_limits({org!r}) was given no setting: name at least one (cap=, weight=, rate=, …)")
        self._check_policy(scope, values)
        where = describe((change.scope, change.name, change.kind, change.key))
        checked = {field: check_setting(scope, field, value, where) for field, value in values.items()}
        if checked.get("tier") is not None:
            self._check_tier_exists(str(checked["tier"]))
        return self._write([SettingChange(change.scope, change.name, change.kind, change.key, checked)], by)

    def set_tier(self, name: str, kind: Optional[str] = None, *, by: Optional[str] = None, **values: Any) -> int:
        """Stores a tier's settings (``kind`` given: for that kind of each of its orgs):
        the org fields of :meth:`set_limits` but ``tier``. Orgs assigned the tier
        (:meth:`assign_tier`), or every org assigned none if ``name`` is ``"default"``,
        take them unless they have their own."""
        check_name(name, "tier")
        if not values:
            raise InvalidArgument(f"set_tier({name!r}) was given no setting: name at least one (cap=, weight=, rate=, …)")
        scope = "tier" if kind is None else "tier_kind"
        self._check_policy(scope, values)
        where = describe(("tier", name, kind or "", ""))
        checked = {field: check_setting(scope, field, value, where) for field, value in values.items()}
        return self._write([SettingChange("tier", name, "" if kind is None else check_kind(kind), "", checked)], by)

    def assign_tier(self, org: str, tier: Optional[str], *, by: Optional[str] = None) -> int:
        """Puts ``org`` in ``tier`` (None: back to the default tier)."""
        check_org(org)
        if tier is not None:
            check_name(tier, "tier")
            self._check_tier_exists(tier)
        return self._write([SettingChange("org", org, "", "", {"tier": tier})], by)

    def reset(self, org: str, kind: Optional[str] = None, *, key: Optional[str] = None, by: Optional[str] = None) -> int:
        """Forgets every stored limit of the scope (its pause and tier stay): it
        inherits its tier's and the code's again."""
        check_org(org)
        if kind is not None:
            change = SettingChange("kind", org, check_kind(kind), "", {})
            fields: tuple[str, ...] = ("cap", "min", "weight", "rate")
        elif key is not None:
            change = SettingChange("key", org, "", check_key(key), {})
            fields = ("cap", "weight", "rate")
        else:
            change = SettingChange("org", org, "", "", {})
            fields = ("cap", "min", "weight", "per_key_cap", "per_key_weight", "daily_limit", "rate", "key_rate")
        return self._write([SettingChange(change.scope, change.name, change.kind, change.key, dict.fromkeys(fields))], by)

    def pause(
        self,
        org: Optional[str] = None,
        kind: Optional[str] = None,
        *,
        key: Optional[str] = None,
        queue: Optional[str] = None,
        by: Optional[str] = None,
    ) -> int:
        """Pauses an org, a kind of an org, a key of an org, or (``queue=``) a whole
        named queue: its queued jobs stay queued, none starts until :meth:`resume`
        (running ones finish). ``by`` says who, for ``explain``."""
        at = time.time()
        change = self._pause_change(org, kind, key, queue, {"paused": {"at": at, "by": by}})
        version = self._write([change], by)
        self._record_pause("pause_start", at, change, by, None)
        return version

    def resume(
        self,
        org: Optional[str] = None,
        kind: Optional[str] = None,
        *,
        key: Optional[str] = None,
        queue: Optional[str] = None,
        by: Optional[str] = None,
    ) -> int:
        """Ends a pause made by :meth:`pause` with the same arguments."""
        change = self._pause_change(org, kind, key, queue, {"paused": None})
        self.refresh(force=True)
        paused = self.settings.row(change.scope, change.name, change.kind, change.key).get("paused")
        version = self._write([change], by)
        if paused is not None:  # resuming what was not paused ends no period
            self._record_pause("pause_end", time.time(), change, by, float(paused["at"]))
        return version

    # ----- internals ---------------------------------------------------------------------------

    @staticmethod
    def _pause_change(
        org: Optional[str], kind: Optional[str], key: Optional[str], queue: Optional[str], values: dict[str, Any]
    ) -> SettingChange:
        if queue is not None:
            if org is not None or kind is not None or key is not None:
                raise InvalidArgument("a queue is paused as a whole: give queue= alone, without org, kind or key")
            return SettingChange("queue", check_queue(queue), "", "", values)
        if org is None:
            raise InvalidArgument("pause and resume need an org (optionally with a kind or a key) or a queue=")
        check_org(org)
        if kind is not None and key is not None:
            raise InvalidArgument("pause a kind or a key of an org, not both")
        if kind is not None:
            return SettingChange("kind", org, check_kind(kind), "", values)
        if key is not None:
            return SettingChange("key", org, "", check_key(key), values)
        return SettingChange("org", org, "", "", values)

    def _record_pause(self, kind: str, at: float, change: SettingChange, by: Optional[str], since: Optional[float]) -> None:
        """Appends a pause's start or end to the history, so charts can shade paused
        periods (``figures``: the scope as users read it, who, and an end's start)."""
        figures: dict[str, Any] = {"scope": describe((change.scope, change.name, change.kind, change.key)), "by": by}
        if since is not None:
            figures["since"] = since
        org = None if change.scope == "queue" else change.name
        self._store().history_append([HistoryEntry(at, kind, org, 0.0, figures)])

    def _check_policy(self, scope: str, values: Mapping[str, Any]) -> None:
        """Under ``peek_set`` (the reference platform's semantics) only kind limits, daily
        limits, tiers and pauses apply: refuse the rest rather than ignore it."""
        if self.settings.policy != "peek_set":
            return
        refused = sorted(f for f in values if scope == "key" or f in ("rate", "key_rate", "per_key_cap", "per_key_weight")
                         or (scope in ("org", "tier") and f in ("cap", "min", "weight")))  # fmt: skip
        if refused:
            whose = "a key" if scope == "key" else "an org" if scope in ("org", "tier") else "a kind"
            raise InvalidArgument(
                f"{', '.join(refused)} of {whose} is a fair_share feature: under peek_set (the reference platform's "
                "exact semantics) only a kind's cap, min and weight, daily limits, tiers and pauses apply"
            )

    def _check_tier_exists(self, tier: str) -> None:
        self.refresh(force=True)
        if tier != DEFAULT_TIER and not any(w[0] == "tier" and w[1] == tier for w in self.settings.rows()):
            raise InvalidArgument(f"unknown tier {tier!r}: create it first with set_tier({tier!r}, cap=…, …)")

    def _write(self, changes: Iterable[SettingChange], by: Optional[str]) -> int:
        version = self._store().settings_write(list(changes), time.time(), by)
        self.refresh(force=True)
        return version


def parse_cap(text: str) -> Any:
    """A cap as the CLI takes it: an integer, or ``none``."""
    if text.strip().lower() == NO_CAP:
        return NO_CAP
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"invalid cap {shown(text)}: expected an integer or 'none'") from None


def parse_rate(text: str, burst: Optional[int] = None) -> RateLimit:
    """A rate limit as the CLI takes it (see :meth:`RateLimit.parse`)."""
    return RateLimit.parse(text, burst)
