"""The dashboard: an ASGI app (Starlette) over a store, safe by default.

Pages a team would rather look at than query — each org's pending, running and
wait percentiles (sortable, searchable, paginated on the server for tens of
thousands of orgs), pending jobs per org over time with throttle and
extended-delay and pause periods shaded, a jobs view with filters, pagination and bulk
retry and abort, a page per job with its attempts, errors, result, explanation
and timeline, the worker registry (fleet-wide viewers only), each org's flex
queue, and each org's tenant settings (caps, weights, rate limits, daily limit,
tier, pauses) with where each value comes from, editable where the viewer may —
as one static page over a JSON API. The script, styles and chart library
(uPlot, MIT) ship in the package: nothing to build, nothing fetched elsewhere.

Standalone: ``fairqueue dashboard`` serves it with uvicorn on loopback. Inside
your own service, mount it behind your own authentication::

    from fastapi import FastAPI
    import fairqueue.dashboard

    service = FastAPI()
    service.mount("/fairqueue", fairqueue.dashboard.app(
        queue,                                    # your FairQueue (or a store)
        allowed_hosts=["ops.example.com"],
        org_scope=lambda request: request.state.customer_org,   # None: every org
    ))

Safe by default (see :mod:`fairqueue.dashboard.security`): loopback Host names
only, same-origin JSON with ``X-Fairqueue-Request: 1`` for every change, the
token in a header or an HttpOnly SameSite=Strict cookie (never the URL), a CSP
without inline script, no framing, and an org scope every endpoint honours.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Optional, Union

from starlette.applications import Starlette
from starlette.middleware import Middleware

from fairqueue.app import FairQueue
from fairqueue.errors import InvalidArgument
from fairqueue.storage import Storage
from fairqueue.validate import shown

from .api import Dashboard
from .security import LOOPBACK_HOSTS, Access, HostCheck, OrgScope, SecurityHeaders, Viewer, host_patterns

__all__ = ["app", "LOOPBACK_HOSTS", "OrgScope", "Viewer"]


def app(
    store_or_app: Union[FairQueue, Storage, str, Path],
    *,
    token: Optional[str] = None,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    read_only: bool = False,
    org_scope: Optional[OrgScope] = None,
    trusted_origins: Iterable[str] = (),
    tenant_edits: bool = False,
) -> Starlette:
    """The dashboard as an ASGI app, to serve (``uvicorn``) or mount.

    Args:
        store_or_app: a :class:`~fairqueue.FairQueue` (its store, and its limits for
            explanations), a :class:`~fairqueue.storage.Storage`, or a store path/URL.
        token: if given, every API request must carry it: ``Authorization: Bearer …``,
            or the cookie the page's sign-in sets. Never accepted in a URL.
        allowed_hosts: the Host names it answers to (``*.example.com`` and ``*``
            allowed); anything else is a 400. Loopback names by default.
        read_only: refuse every change (abort, retry, reorder) with a 403.
        org_scope: limit viewers to one org — a mapping of token to org, or a
            callback ``(request) -> org | None`` (see :data:`OrgScope`).
        trusted_origins: origins other than its own allowed to send changes (a
            page served by a proxy under another name).
        tenant_edits: let an org-scoped viewer change its own org's limits and pauses
            (never tiers or queues). Off by default: a customer shown its queue must
            not be able to raise its own cap. Fleet-wide viewers may unless read-only.

    Raises:
        InvalidArgument: a bad token, org scope or host pattern.
    """
    if isinstance(store_or_app, FairQueue):
        queue = store_or_app
    elif isinstance(store_or_app, (Storage, str, Path)):
        queue = FairQueue(store_or_app)
    else:
        raise InvalidArgument(f"invalid store_or_app {shown(store_or_app)}: expected a FairQueue, a Storage or a store path")
    if isinstance(allowed_hosts, str):
        raise InvalidArgument(f"invalid allowed_hosts {shown(allowed_hosts)}: expected a list of host names, not one string")
    access = Access(
        token=token, org_scope=org_scope, read_only=bool(read_only), trusted_origins=trusted_origins, tenant_edits=bool(tenant_edits)
    )
    dashboard = Dashboard(queue, access)
    asgi = Starlette(
        routes=dashboard.routes(),
        middleware=[Middleware(SecurityHeaders), Middleware(HostCheck, allowed_hosts=host_patterns(allowed_hosts))],
    )
    asgi.state.dashboard = dashboard
    return asgi
