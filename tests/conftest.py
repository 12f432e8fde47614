"""Suite-wide settings: hypothesis profiles and a guard that the installed package is tested.

CI installs the wheel (``pip install ".[test]"``) and runs pytest from the clone
root; the source tree's ``python/`` directory is never on ``sys.path``, so
``import fairqueue`` must resolve to the installed package with its compiled
``_core``. Under ``CI`` the guard below makes a mix-up fail loudly instead of
testing whatever happens to sit in the source tree (``maturin develop`` puts a
build there, which is fine on a developer's machine).
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

import fairqueue

# Two cores and a shared machine: wall-clock deadlines would only add flakiness.
settings.register_profile("default", deadline=None, max_examples=200)
settings.register_profile(
    "ci", deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

_SOURCE_TREE = (Path(__file__).resolve().parent.parent / "python").resolve()
if os.environ.get("CI") and Path(fairqueue.__file__).resolve().is_relative_to(_SOURCE_TREE):
    raise RuntimeError(
        f"CI must test the installed wheel, but fairqueue was imported from the source tree "
        f"({fairqueue.__file__}); install it (pip install .) and keep python/ off sys.path"
    )
