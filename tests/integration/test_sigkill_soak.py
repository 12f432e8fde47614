"""The SIGKILL soak of benches/soak_sigkill.py, CI-sized: worker processes SIGKILLed
at random and started again lose no job, and every job whose side effect happened
more than once shows it in its attempts. (The throughput ratio is the script's to
measure, on a quiet machine; here it is not asserted.)"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benches" / "soak_sigkill.py"


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak_sigkill", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak_sigkill"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


soak_sigkill = load_soak()


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("store", "cap"), [("sqlite", 2), ("sqlite", None), ("postgres", 2)],
                         ids=["sqlite", "sqlite-native-turns", "postgres"])  # fmt: skip
def test_sigkilled_workers_lose_nothing_and_every_repeat_is_recorded(
    store: str, cap: Optional[int], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    config = soak_sigkill.Config(store=store, jobs=2000, kills=5, workers=3, seed=13, cap=cap)
    if store == "postgres":
        config.dsn = request.getfixturevalue("pg_dsn")
    phase = soak_sigkill.run_phase("kill", config, tmp_path, random.Random(13))
    assert phase.kills == 5 and phase.enqueued >= 2000
    assert phase.lost == 0, phase
    assert phase.unrecorded == 0, phase
    # Every stop was a requested one that drained.
    assert phase.exit_codes == [0, 0, 0], phase
