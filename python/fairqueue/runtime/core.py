"""The dispatcher core built from a queue's settings — one place, shared by
workers and test mode."""

from __future__ import annotations

from typing import Optional

from fairqueue._core import Dispatcher
from fairqueue.settings import QueueSettings

__all__ = ["build_dispatcher"]


def build_dispatcher(settings: QueueSettings, slots: int, *, virtual_time: Optional[float] = None) -> Dispatcher:
    """A :class:`~fairqueue._core.Dispatcher` with ``slots`` slots, the settings' policy
    and limits, and every per-org override; on a virtual clock starting at
    ``virtual_time`` if given (test mode), else on the wall clock."""
    limits = settings.limits
    core = Dispatcher(
        policy=settings.policy,
        slots=slots,
        peek_set=limits.peek_set,
        cap=limits.cap,
        min=limits.min,
        weight=limits.weight,
        extended_delay=dict(limits.extended_delay),
        kind_slots=dict(limits.kind_slots),
        lease=limits.lease,
        virtual_time=virtual_time,
    )
    for (org, kind), values in settings.pairs():
        core.set_limits(org, kind, **values)
    return core
