"""The app of the retention soak (benches/soak_retention.py and its CI-sized test,
tests/integration/test_retention_soak.py): a no-op future, so the store and the pruner
are what is measured. The soak points the app at a fresh store and sets its retention."""

from __future__ import annotations

import fairqueue as fq

app = fq.FairQueue(":memory:", limits=fq.Limits(daily_executions=10**12))


@app.future
def noop(n: int) -> None:
    """Does nothing."""
