"""Org affinity: workers sharing a store choose differently.

Every worker's core holds every queued job and shares its slots fairly among all
orgs, so without a preference every worker takes each org's next job at the same
moment: their claims collide on the same rows, and the losers pay for stand-ins.
With affinity each org has a *home* worker, the live worker that ranks first for it
by rendezvous hashing over the registry (every worker computes the same homes, and
when a worker joins or leaves only the orgs it gains or loses move), and its home
worker gives it a larger share than the others do — a larger weight in its core —
while the fleet's total for every org stays its fair share. A preference, not a
partition: every worker holds every org's jobs and keeps serving every org.

The weights. The fleet has S slots (worker w has S_w) and N orgs with work, F =
S / N each. Worker w is home to h_w of them. Think of each org being given r slots
at its home and an equal part of every worker's other slots: org o, at home on w,
gets r + sum over workers v of (S_v - r h_v) / N = r + (S - r N) / N = F, whatever
the h_v — fair across hosts however unevenly the homes fall. On worker w that is
q_w = (S_w - r h_w) / N for each org and r + q_w for each home org, which a
fair-share core with home weight a_w (others 1) gives when
a_w = (S_w / q_w - N + h_w) / h_w. r is the same on every worker (all read the same
registry and counts): at most F, and at most half of S_w / h_w on every worker, so
that every worker keeps at least half its slot-time for orgs not at home there —
an org that just became busy finds a share on every worker at once. A home
worker that dies leaves the registry within a sweep, and its orgs' homes move; in
the meantime the other workers serve them as before (weights order slot-time,
they never hold a job back). The weights multiply the orgs' own (stored or code)
weights; with unequal weights the shares are those weights' shares approximately.
"""

from __future__ import annotations

import collections
import hashlib

from fairqueue.records import JobStatus
from fairqueue.runtime.core import CoreSettings
from fairqueue.storage import Storage

__all__ = ["Affinity", "home_of"]


def _rank(org: str, worker: str) -> bytes:
    # A hash every process computes alike (Python's hash() is salted per process).
    return hashlib.blake2b(f"{org}\0{worker}".encode(), digest_size=8).digest()


def home_of(org: str, workers: list[str]) -> str:
    """The home worker of ``org`` among ``workers`` (rendezvous hashing)."""
    return max(workers, key=lambda w: _rank(org, w))


class Affinity:
    """Weights this worker's home orgs up (see the module docstring).

    Args:
        store: the store the workers share (its registry and live counts).
        worker: this worker's name.
        core_settings: applies the weights to the worker's core.
    """

    every = 5.0
    """Seconds between recomputations: the live counts it reads cost the store about
    60 ms at 100,000 queued jobs (PostgreSQL), and a stale weight only shifts a
    preference for a few seconds."""

    def __init__(self, store: Storage, worker: str, core_settings: CoreSettings) -> None:
        self.store = store
        self.worker = worker
        self.core_settings = core_settings

    @property
    def home(self) -> dict[str, float]:
        """This worker's home orgs with work, and the factor on each one's weight."""
        return dict(self.core_settings.preferred)

    def run(self, now: float) -> None:
        self.core_settings.prefer(self._factors())

    def _factors(self) -> dict[str, float]:
        live = {w.info.name: w.info.slots for w in self.store.worker_list() if w.alive}
        if len(live) < 2 or self.worker not in live:
            return {}  # alone: every org's jobs are this worker's anyway
        busy = (JobStatus.QUEUED, JobStatus.PROCESSING)
        active = sorted({org for (org, _, status), n in self.store.job_counts(live=True).items() if n and status in busy})
        names = sorted(live)
        homes = {org: home_of(org, names) for org in active}
        count = collections.Counter(homes.values())
        mine = count.get(self.worker, 0)
        if not mine:
            return {}
        n = len(active)
        given = min([sum(live.values()) / n] + [live[name] / 2 / h for name, h in count.items()])
        share = (live[self.worker] - given * mine) / n  # q_w: every org's part of this worker
        factor = (live[self.worker] / share - n + mine) / mine
        return {org: factor for org, name in homes.items() if name == self.worker}
