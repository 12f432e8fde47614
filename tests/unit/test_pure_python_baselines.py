"""The pure-Python baselines of ``benches/pure_python.py`` decide exactly as the Rust core.

The dispatcher benchmarks compare the Rust core with these; the comparison only
means something if both implement the same policy. Hypothesis drives both with the
same random enqueue / dispatch / ack / clock sequences and every grant must match.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from hypothesis import given
from hypothesis import strategies as st

from fairqueue import Dispatcher


def _load_baselines() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benches" / "pure_python.py"
    spec = importlib.util.spec_from_file_location("fairqueue_bench_pure_python", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


pure = _load_baselines()

ops = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), st.integers(0, 3), st.sampled_from(["future", "batch"]), st.integers(1, 5)),
        st.tuples(st.just("dispatch"), st.integers(1, 5)),
        st.tuples(st.just("ack"), st.integers(0, 50)),
        st.tuples(st.just("advance"), st.sampled_from([0.001, 0.01, 0.25, 1.0, 7.5, 300.0])),
    ),
    min_size=30,
    max_size=150,
)


def _drive(rust: Dispatcher, python: object, script: list[tuple]) -> None:  # type: ignore[type-arg]
    leases: list[tuple[int, int]] = []  # (rust lease, python lease)
    next_id = 1
    for op in script:
        if op[0] == "enqueue":
            _, org, kind, count = op
            for _ in range(count):
                rust.enqueue(next_id, f"org-{org}", kind)
                python.enqueue(next_id, f"org-{org}", kind)  # type: ignore[attr-defined]
                next_id += 1
        elif op[0] == "dispatch":
            got = rust.dispatch(op[1])
            expected = python.dispatch(op[1])  # type: ignore[attr-defined]
            assert [(g.id, g.org, g.kind, g.attempt) for g in got] == [
                (g.id, g.org, g.kind, g.attempt) for g in expected
            ]
            leases.extend(zip([g.lease for g in got], [g.lease for g in expected]))
        elif op[0] == "ack" and leases:
            r, p = leases.pop(op[1] % len(leases))
            assert rust.ack(r).id == python.ack(p)  # type: ignore[attr-defined]
        elif op[0] == "advance":
            rust.advance(op[1])
            python.advance(op[1])  # type: ignore[attr-defined]


@given(slots=st.integers(1, 6), cap=st.integers(1, 3), peek_set=st.integers(1, 8), script=ops)
def test_peek_set_baseline_matches_the_core(slots: int, cap: int, peek_set: int, script: list[tuple]) -> None:  # type: ignore[type-arg]
    rust = Dispatcher(policy="peek_set", slots=slots, cap=cap, peek_set=peek_set, lease=1e7, virtual_time=1.0)
    python = pure.PeekSetPy(slots=slots, cap=cap, peek_set=peek_set, virtual_time=1.0)
    _drive(rust, python, script)


@given(slots=st.integers(1, 6), cap=st.integers(1, 4), script=ops)
def test_fair_share_baseline_matches_the_core(slots: int, cap: int, script: list[tuple]) -> None:  # type: ignore[type-arg]
    rust = Dispatcher(policy="fair_share", slots=slots, cap=cap, lease=1e7, virtual_time=1.0)
    python = pure.FairSharePy(slots=slots, cap=cap, virtual_time=1.0)
    _drive(rust, python, script)
