"""The store-side rate limit (``storage.interface.admit``) against its definition:
over every window of start times, at most ``rate × t / per + burst`` jobs start.

Claims arrive at UNIX times (where a float's last place is a quarter of a
microsecond), each carrying the rate-limit state the previous ones stored, as the
SQL stores do across hosts.
"""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from fairqueue.records import Admission, Candidate, Rate
from fairqueue.storage.interface import Held, admit

SCOPE = ("acme", "org", "")


def first_window_over(starts: list[float], rate: Rate) -> str | None:
    """The first window holding more starts than the limit allows, described; None if none.

    Exact arithmetic on the floats. The slack is the store's rounding: each admitted
    job's arrival time rounds by up to half a last place, so a window of n starts
    may open (n + 2) last places early, and no more."""
    per_second = Fraction(rate.rate) / Fraction(rate.per)
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            n, t = j - i + 1, Fraction(starts[j]) - Fraction(first)
            slack = (n + 2) * Fraction(math.ulp(starts[j]))
            if n > per_second * (t + slack) + rate.burst:
                return f"{n} starts in {float(t):.9f} s from the {i + 1}th, above {float(per_second)}/s × t + {rate.burst}"
    return None


@settings(max_examples=60, deadline=None)
@given(
    start=st.floats(1.6e9, 2.0e9),
    per_second=st.sampled_from([3.0, 7.0, 20.0, 33.0, 1000.0]),
    burst=st.integers(1, 6),
    claims=st.lists(st.tuples(st.floats(0.0, 0.08), st.integers(1, 8)), min_size=50, max_size=250),
)
def test_admitted_starts_keep_to_the_rate_over_every_window_within_float_rounding(
    start: float, per_second: float, burst: int, claims: list[tuple[float, int]]
) -> None:
    rate = Rate(per_second, 1.0, burst)
    admission = Admission(rates={SCOPE: rate})
    tats: dict[tuple[str, str, str], float] = {}
    starts: list[float] = []
    now, next_id = start, 0
    for gap, asked in claims:
        # The claims come faster than the limit allows, so it decides most of them.
        now += gap * 10 / per_second
        candidates = [Candidate(next_id + n, "acme", "work") for n in range(asked)]
        next_id += asked
        admitted = admit(candidates, Held(), tats, admission, now)
        starts += [now] * len(admitted.ids)
        tats.update(admitted.tats)
        assert all(at > now for at in admitted.rate_limited.values())
    assert starts, "the first claim always has room"
    assert first_window_over(starts, rate) is None, first_window_over(starts, rate)
