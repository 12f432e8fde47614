"""Many threads hammer one Dispatcher: nothing is lost, duplicated or double-counted.

The binding is built free-threaded ready (``gil_used = false``, state behind one
lock); on a GIL build this still interleaves calls that release the interpreter
(``dispatch``, ``enqueue_many``) with ones that hold it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from fairqueue import Dispatcher

THREADS = 8
SECONDS = 1.5
ORGS = [f"org-{i}" for i in range(5)]
KINDS = ["future", "queueable", "batch"]


def test_eight_threads_enqueue_dispatch_and_ack_without_losing_or_duplicating_work() -> None:
    d = Dispatcher(policy="fair_share", slots=16, cap=3, lease=3_600.0)
    start = threading.Barrier(THREADS)
    deadline = time.monotonic() + SECONDS
    enqueued: list[list[int]] = [[] for _ in range(THREADS)]
    acked: list[list[int]] = [[] for _ in range(THREADS)]
    held_leases: list[list[int]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []

    def hammer(t: int) -> None:
        try:
            start.wait()
            n = 0
            while time.monotonic() < deadline:
                base = (t << 40) + n
                if n % 3 == 0:
                    batch = [(base + k, ORGS[(n + k) % len(ORGS)], KINDS[k % len(KINDS)]) for k in range(4)]
                    assert d.enqueue_many(batch) == 4
                    enqueued[t].extend(r[0] for r in batch)
                    n += 4
                else:
                    d.enqueue(base, ORGS[n % len(ORGS)], KINDS[n % len(KINDS)])
                    enqueued[t].append(base)
                    n += 1
                for g in d.dispatch(2):
                    held_leases[t].append(g.lease)
                # Ack all but the newest lease: some work stays running at the end.
                while len(held_leases[t]) > 1:
                    acked[t].append(d.ack(held_leases[t].pop(0)).id)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not any(th.is_alive() for th in threads)
    assert errors == []

    all_enqueued = [i for ids in enqueued for i in ids]
    all_acked = [i for ids in acked for i in ids]
    assert len(all_enqueued) > 1_000, "the threads did real work"
    assert len(set(all_enqueued)) == len(all_enqueued)
    duplicates = [i for i, n in Counter(all_acked).items() if n > 1]
    assert duplicates == [], "a request was delivered and acked twice"
    assert set(all_acked) <= set(all_enqueued)

    stats = d.stats()
    running = sum(len(leases) for leases in held_leases)
    assert stats["running"] == running
    assert stats["dispatched"] == stats["released"] + stats["running"]
    assert stats["released"] == stats["acked"] == len(all_acked)
    assert stats["enqueued"] == len(all_enqueued)
    assert stats["expired"] == stats["failed"] == stats["retried"] == stats["aborted"] == 0
    assert stats["enqueued"] == stats["acked"] + stats["queued"] + stats["delayed"] + stats["running"]

    # Every request not acked is still held, exactly once, and drains to the end.
    acked_set = set(all_acked)
    pending = [i for i in all_enqueued if i not in acked_set]
    assert all(d.holds(i) for i in pending)
    assert not any(d.holds(i) for i in all_acked)
    for leases in held_leases:
        for lease in leases:
            acked_set.add(d.ack(lease).id)
    while True:
        grants = d.dispatch()
        if not grants:
            break
        for g in grants:
            assert g.id not in acked_set
            assert g.attempt == 1
            acked_set.add(d.ack(g.lease).id)
    assert acked_set == set(all_enqueued)
    final = d.stats()
    assert (final["queued"], final["delayed"], final["running"]) == (0, 0, 0)
    assert final["dispatched"] == final["released"] == final["acked"] == len(all_enqueued)
