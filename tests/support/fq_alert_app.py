"""The app of the fleet alert tests (tests/integration/test_alert_fleet.py): its store,
webhook URL and secret come from the environment, so the test and its worker
processes configure the same alerts."""

from __future__ import annotations

import os

import fairqueue as fq

app = fq.FairQueue(os.environ.get("FQ_STORE", ":memory:"), limits=fq.Limits(retry=fq.NO_RETRY))
# Observed waits over 1 s start an episode; it ends once no job started in the last 3 s.
app.alerts.configure(wait_threshold=1.0, window=3.0)
if os.environ.get("FQ_WEBHOOK"):
    # The receiver is a test's own server on 127.0.0.1: loopback is allowed explicitly.
    app.alerts.add_webhook(os.environ["FQ_WEBHOOK"], secret=os.environ["FQ_WEBHOOK_SECRET"],
                           allow_destinations=["127.0.0.1"])  # fmt: skip


@app.future
def quick(n: int) -> int:
    """Returns at once: the tests care about when jobs start, not what they do."""
    return n
