"""The request kinds and the flow-control policies, named once."""

from __future__ import annotations

from typing import Literal

__all__ = ["KINDS", "POLICIES", "Policy"]

KINDS = ("future", "queueable", "batch", "scheduled")
"""The request kinds; limits are kept per org and per kind."""

Policy = Literal["fair_share", "peek_set"]
POLICIES: tuple[Policy, ...] = ("fair_share", "peek_set")
"""The flow-control policies; ``fair_share`` is the default."""
