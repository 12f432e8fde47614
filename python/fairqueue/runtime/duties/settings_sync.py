"""Tenant settings sync: the worker's core follows the settings stored in the store
(changed by ``app.tenants``, the CLI or the dashboard) within a second."""

from __future__ import annotations

from collections.abc import Callable

from fairqueue.runtime.core import CoreSettings
from fairqueue.tenants import REFRESH_EVERY, Tenants

__all__ = ["SettingsSync"]


class SettingsSync:
    """Loads a new settings version and applies it to the core.

    Args:
        tenants: reads the store's settings into the queue settings.
        core_settings: applies them to the worker's core.
        on_resume: called when a pause ended (its jobs, left out of the core while
            paused, must be read again).
    """

    every = REFRESH_EVERY

    def __init__(self, tenants: Tenants, core_settings: CoreSettings, on_resume: Callable[[], None]) -> None:
        self.tenants = tenants
        self.core_settings = core_settings
        self.on_resume = on_resume
        self.changes = 0
        """Settings versions this worker has applied after its first."""

    def run(self, now: float, force: bool = False) -> None:
        """Loads and applies the stored settings if they changed (``force``: look now)."""
        before = {where for where, _ in self.tenants.settings.pauses()}
        if not self.tenants.refresh(force=force) and self.core_settings.version is not None:
            return
        first = self.core_settings.version is None
        self.core_settings.apply()
        if not first:
            self.changes += 1
        if before - {where for where, _ in self.tenants.settings.pauses()}:
            self.on_resume()
