"""The dashboard's pages and JSON API, each read and action through the app's
public API (:class:`~fairqueue.app.FairQueue`, its ``control`` and
:class:`~fairqueue.app.OrgView`) and limited to the viewer's org when it has one.

Every listing is bounded and paginated on the server: orgs by offset (they are
sorted and searched here, 10,000 of them in a few milliseconds), jobs by a
cursor (the last id shown; the store lists newest first by id, so a page never
shifts when new jobs arrive). Bad input is a 400 naming the value and the limit.
"""

from __future__ import annotations

import dataclasses
import html
import json
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Optional, Union

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from fairqueue.app import FairQueue
from fairqueue.errors import FairQueueError, InvalidArgument, StorageError, StorageUnavailable
from fairqueue.limits import RateLimit
from fairqueue.records import JobRecord, JobStatus
from fairqueue.storage import LIVE_STATUSES, RERUNNABLE
from fairqueue.validate import MAX_ID, check_id, check_int, check_org, shown

from .security import COOKIE, Access, Refused, Viewer
from .sparklines import Sparklines

__all__ = ["Dashboard", "LIMIT_MAX", "BULK_MAX", "BODY_MAX", "WAIT_SAMPLE", "HANDLER_SCAN", "SNAPSHOT_TTL", "ORG_SORTS"]

LIMIT_MAX = 500
"""The most rows one page of orgs or jobs may have."""
BULK_MAX = 500
"""The most jobs one bulk action may name."""
BODY_MAX = 64 * 1024
"""The largest request body accepted (the largest real one, a bulk abort, is ~5 kB)."""
WAIT_SAMPLE = 20_000
"""The newest jobs the wait percentiles are measured over (store-wide)."""
HANDLER_SCAN = 5_000
"""The most jobs one page of a handler-filtered listing reads (the store filters by
org, kind and status; the handler is matched here)."""
SNAPSHOT_TTL = 5.0
"""Seconds the finished counts and wait samples are reused: they read the store's
history, and a paginated overview asks for them on every page turn."""
ORG_SORTS = ("org", "pending", "running", "finished", "wait_p50", "wait_p95", "wait_p99")
BULK_FILTERS = ("status", "org", "kind", "handler", "since", "until")
"""What a bulk action's filter body may name."""
TIME_MAX = 32_503_680_000
"""The latest Unix time a filter may name (the year 3000)."""
HISTORY_MAX = 7 * 86400.0
SERIES_MAX = 50

Handler = Callable[[Request], Awaitable[Response]]


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    at: float
    finished: dict[str, int]
    waits: dict[str, list[float]]


class Dashboard:
    """The dashboard over one app: its data, its endpoints and who may use them.

    Args:
        app: whose store (and limits, for explanations) to show.
        access: who may read and act (see :class:`~fairqueue.dashboard.security.Access`).
    """

    def __init__(self, app: FairQueue, access: Access) -> None:
        self.app = app
        self.access = access
        self._snapshot: Optional[_Snapshot] = None
        self._snapshot_lock = threading.Lock()
        self.sparklines = Sparklines(lambda since, kinds: self.app.storage.history_read(since, kinds))

    # ----- routes ------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """The pages, the static assets and the API, relative to where it is mounted."""
        return [
            Route("/", self.page),
            Route("/jobs", self.page),
            Route("/jobs/{job_id}", self.page),
            Route("/workers", self.page),
            Route("/settings", self.page),
            Route("/orgs/{org:path}", self.page),
            Mount("/static", StaticFiles(packages=[("fairqueue.dashboard", "static")]), name="static"),
            Route("/api/me", self.read(self.me)),
            Route("/api/login", self.login, methods=["POST"]),
            Route("/api/logout", self.logout, methods=["POST"]),
            Route("/api/orgs", self.read(self.orgs)),
            Route("/api/history", self.read(self.history)),
            Route("/api/jobs", self.read(self.jobs)),
            Route("/api/jobs/abort", self.write(self.bulk_abort), methods=["POST"]),
            Route("/api/jobs/retry", self.write(self.bulk_retry), methods=["POST"]),
            Route("/api/jobs/{job_id}", self.read(self.job)),
            Route("/api/jobs/{job_id}/abort", self.write(self.abort), methods=["POST"]),
            Route("/api/jobs/{job_id}/retry", self.write(self.retry), methods=["POST"]),
            Route("/api/workers", self.read(self.workers)),
            Route("/api/settings", self.read(self.fleet_settings)),
            Route("/api/settings/version", self.read(self.settings_version)),
            Route("/api/tiers/{name:path}", self.write(self.set_tier), methods=["POST"]),
            Route("/api/queues/{queue:path}/pause", self.write(self.pause_queue), methods=["POST"]),
            Route("/api/queues/{queue:path}/resume", self.write(self.resume_queue), methods=["POST"]),
            # The org last: {org:path} would swallow a trailing /pause otherwise.
            Route("/api/orgs/{org:path}/settings/pause", self.write(self.pause_org), methods=["POST"]),
            Route("/api/orgs/{org:path}/settings/resume", self.write(self.resume_org), methods=["POST"]),
            Route("/api/orgs/{org:path}/settings", self.read(self.org_settings), methods=["GET"]),
            Route("/api/orgs/{org:path}/settings", self.write(self.set_org_settings), methods=["POST"]),
            # {org:path}: an org may hold a slash (sent as %2F, decoded by the server).
            Route("/api/flex/{org:path}/move", self.write(self.flex_move), methods=["POST"]),
            Route("/api/flex/{org:path}", self.read(self.flex)),
            Route("/api/{rest:path}", self.unknown, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]

    async def page(self, request: Request) -> Response:
        """The page shell (the same for every view: the script reads the URL)."""
        if "token" in request.query_params:
            return Refused(400, "a token is never accepted in the URL: sign in on the page").response()
        root = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
        shell = resources.files("fairqueue.dashboard").joinpath("page.html").read_text("utf-8")
        return HTMLResponse(shell.replace("{{root}}", root))

    async def unknown(self, request: Request) -> Response:
        return Refused(404, f"no such API endpoint: {request.method} {shown(request.url.path)}").response()

    def read(self, fn: Callable[[Request, Viewer], Any]) -> Handler:
        """An endpoint that reads: the viewer is checked, then ``fn`` runs on a thread
        (the stores block) and its result is the JSON answer."""

        async def endpoint(request: Request) -> Response:
            try:
                viewer = await self.viewer(request)
                return JSONResponse(await run_in_threadpool(fn, request, viewer))
            except Exception as error:
                return _refusal(error)

        return endpoint

    def write(self, fn: Callable[[Request, Viewer, dict[str, Any]], Any]) -> Handler:
        """An endpoint that changes state: same-origin JSON with the dashboard's
        header, a viewer who may act, and a JSON object as the body."""

        async def endpoint(request: Request) -> Response:
            try:
                self.access.check_write(request)
                viewer = await self.viewer(request)
                if viewer.read_only:
                    raise Refused(403, "this dashboard is read-only")
                body = await _json_object(request)
                return JSONResponse(await run_in_threadpool(fn, request, viewer, body))
            except Exception as error:
                return _refusal(error)

        return endpoint

    async def viewer(self, request: Request) -> Viewer:
        """Who asks (see :meth:`Access.viewer`)."""
        return await self.access.viewer(request)

    # ----- signing in ----------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        """Checks ``{"token": …}`` and sets the HttpOnly, SameSite=Strict cookie."""
        try:
            self.access.check_write(request)
            body = await _json_object(request)
            _only_keys(body, {"token"})
            token = body.get("token")
            if not self.access.needs_token:
                raise Refused(400, "this dashboard needs no token")
            if not isinstance(token, str) or not token or not self.access.org_of_token(token)[0]:
                raise Refused(401, "wrong token")
            response = JSONResponse({"org": self.access.org_of_token(token)[1]})
            response.set_cookie(COOKIE, token, path=_cookie_path(request), httponly=True, samesite="strict",
                                secure=request.url.scheme == "https")  # fmt: skip
            return response
        except Exception as error:
            return _refusal(error)

    async def logout(self, request: Request) -> Response:
        """Clears the login cookie."""
        try:
            self.access.check_write(request)
            response = JSONResponse({"signed_out": True})
            response.delete_cookie(COOKIE, path=_cookie_path(request), httponly=True, samesite="strict")
            return response
        except Exception as error:
            return _refusal(error)

    def me(self, request: Request, viewer: Viewer) -> dict[str, Any]:
        """Who the viewer is: the org they are limited to and whether they may act."""
        return {"org": viewer.org, "read_only": viewer.read_only, "needs_token": self.access.needs_token,
                "signed_in": COOKIE in request.cookies}  # fmt: skip

    # ----- orgs and history -------------------------------------------------------------------

    def orgs(self, request: Request, viewer: Viewer) -> dict[str, Any]:
        """One page of orgs: pending, running, finished, wait percentiles and a sparkline
        (``spark``: its peak pending jobs per two minutes over the last hour, placed by
        the answer's ``spark``), searched (``search``: a substring, any case), sorted
        (``sort``, ``order``) and paginated (``offset``, ``limit``). Every org with a job
        in any status is a row."""
        query = request.query_params
        sort = _choice(query, "sort", ORG_SORTS, "pending")
        order = _choice(query, "order", ("asc", "desc"), "asc" if sort == "org" else "desc")
        offset = _int_param(query, "offset", 0, 0, MAX_ID)
        limit = _int_param(query, "limit", 50, 1, LIMIT_MAX)
        search = query.get("search", "").strip().casefold()
        rows = [r for r in self._org_rows(viewer) if search in r["org"].casefold()]
        rows.sort(key=lambda r: r["org"])
        present = [r for r in rows if r[sort] is not None]
        present.sort(key=lambda r: r[sort], reverse=order == "desc")
        rows = present + [r for r in rows if r[sort] is None]  # orgs with no figure last, either way
        page = rows[offset : offset + limit]
        where, lines = self.sparklines.series(r["org"] for r in page)
        for r in page:
            r["spark"] = lines[r["org"]]
        return {"total": len(rows), "offset": offset, "limit": limit, "sort": sort, "order": order,
                "orgs": page, "spark": where}  # fmt: skip

    def _org_rows(self, viewer: Viewer) -> list[dict[str, Any]]:
        counts: dict[str, dict[str, Any]] = {}

        def row(org: str) -> dict[str, Any]:
            return counts.setdefault(org, {"org": org, "pending": 0, "running": 0, "finished": 0})

        snapshot = self._fresh_snapshot()
        for (org, _, status), n in self.app.storage.job_counts(live=True).items():
            if viewer.org is None or org == viewer.org:
                if status in (JobStatus.QUEUED, JobStatus.HOLDING):
                    row(org)["pending"] += n
                elif status in (JobStatus.PROCESSING, JobStatus.PREPARING):
                    row(org)["running"] += n
        for org, n in snapshot.finished.items():
            if viewer.org is None or org == viewer.org:
                row(org)["finished"] = n
        for org, r in counts.items():
            waits = sorted(snapshot.waits.get(org, []))
            r.update({f"wait_p{q}": _percentile(waits, q) for q in (50, 95, 99)}, sampled=len(waits))
        return list(counts.values())

    def _fresh_snapshot(self) -> _Snapshot:
        with self._snapshot_lock:
            now = time.monotonic()
            if self._snapshot is None or now - self._snapshot.at > SNAPSHOT_TTL:
                finished: dict[str, int] = {}
                for (org, _, status), n in self.app.storage.job_counts().items():
                    if status.finished:
                        finished[org] = finished.get(org, 0) + n
                waits: dict[str, list[float]] = {}
                for r in self.app.storage.job_list(limit=WAIT_SAMPLE):
                    if r.started_at is not None:
                        waits.setdefault(r.org, []).append(max(r.started_at - max(r.created_at, r.run_at or 0.0), 0.0))
                self._snapshot = _Snapshot(now, finished, waits)
            return self._snapshot

    def history(self, request: Request, viewer: Viewer) -> dict[str, Any]:
        """Pending jobs over the last ``seconds`` for the ``series`` orgs that peaked
        highest, and the throttle, extended-delay and pause periods to shade."""
        seconds = _number_param(request.query_params, "seconds", 3600.0, 60.0, HISTORY_MAX)
        series = _int_param(request.query_params, "series", 10, 1, SERIES_MAX)
        now = time.time()
        pending: dict[str, list[list[float]]] = {}
        periods: list[dict[str, Any]] = []
        open_throttles: dict[str, dict[str, Any]] = {}
        since = now - seconds
        kinds = ["pending", "extended_delay", "throttle_start", "throttle_end", "pause_end"]
        for e in self.app.storage.history_read(since, kinds):
            if e.org is not None and viewer.org is not None and e.org != viewer.org:
                continue
            if e.kind == "pause_end":
                # An end carries its pause's start; a pause still on is read from the settings below.
                start = float(e.figures.get("since", e.at))
                periods.append({"kind": "pause", "org": e.org, "scope": e.figures.get("scope"), "by": e.figures.get("by"),
                                "start": max(start, since), "end": e.at})  # fmt: skip
                continue
            if e.kind == "pending" and e.org is not None:
                pending.setdefault(e.org, []).append([e.at, e.value])
            elif e.kind == "extended_delay":
                periods.append({"kind": "extended_delay", "org": e.org, "start": e.at, "end": e.value})
            elif e.kind == "throttle_start":
                # Throttling is a worker's, not an org's: every viewer sees it (it explains their waits).
                open_throttles[str(e.figures.get("worker"))] = {"kind": "throttle", "start": e.at, "end": None,
                                                                "worker": str(e.figures.get("worker"))}  # fmt: skip
            elif e.kind == "throttle_end":
                period = open_throttles.pop(str(e.figures.get("worker")), None)
                if period is not None:
                    periods.append({**period, "end": e.at})
        # A worker that stopped or died while throttled recorded no end: its period ends
        # when it was last seen (or where its start is, when it left the registry).
        registry = {w.info.name: w for w in self.app.storage.worker_list()}
        for worker, period in open_throttles.items():
            record = registry.get(worker)
            if record is None or not record.alive:
                period["end"] = max(record.last_seen, period["start"]) if record is not None else period["start"]
            periods.append(period)
        for (scope, name, _, _), pause in self.app.tenants.settings.fresh().pauses():
            org = None if scope == "queue" else name
            if viewer.org is None or org is None or org == viewer.org:
                periods.append({"kind": "pause", "org": org, "scope": pause.scope, "by": pause.by,
                                "start": max(pause.at, since), "end": None})  # fmt: skip
        top = sorted(pending, key=lambda o: (-max(v for _, v in pending[o]), o))[:series]
        return {"now": now, "since": since, "orgs": len(pending), "pending": {o: pending[o] for o in top},
                "periods": periods}  # fmt: skip

    # ----- jobs -----------------------------------------------------------------------------

    def jobs(self, request: Request, viewer: Viewer) -> dict[str, Any]:
        """One page of jobs, newest first, filtered by ``org``, ``kind``, ``status`` and
        ``handler``; ``before`` (a job id: the previous page's ``next``) continues."""
        query = request.query_params
        org = query.get("org") or None
        if org is not None:
            _check_scope(viewer, org)
        org = org or viewer.org
        kind = query.get("kind") or None
        status = query.get("status") or None
        handler = query.get("handler") or None
        before = _int_param(query, "before", None, 1, MAX_ID)
        limit = _int_param(query, "limit", 50, 1, LIMIT_MAX)
        found: list[JobRecord] = []
        cursor, scanned, exhausted = before, 0, False
        while len(found) <= limit and scanned < HANDLER_SCAN:
            size = limit + 1 - len(found) if handler is None else min(LIMIT_MAX, HANDLER_SCAN - scanned)
            page = self.app.jobs(org=org, kind=kind, status=status, limit=size, before_id=cursor)
            scanned += len(page)
            for r in page:
                cursor = r.id
                if handler is None or r.handler == handler:
                    found.append(r)
                    if len(found) > limit:
                        break
            if len(page) < size:
                exhausted = True
                break
        if len(found) > limit:
            found, next_before, partial = found[:limit], found[limit - 1].id, False
        else:
            # Out of jobs, or out of the handler scan's budget: then go on from the last one read.
            next_before, partial = (None, False) if exhausted else (cursor, True)
        return {"jobs": [_listed(r) for r in found], "next": next_before, "partial": partial, "limit": limit}

    def job(self, request: Request, viewer: Viewer) -> dict[str, Any]:
        """A job's record, its explanation, its batch errors and its timeline."""
        job_id = _path_id(request)
        view = self.app.org(viewer.org) if viewer.org is not None else None
        record = view.get(job_id) if view is not None else self.app.get(job_id)
        if record is None:
            raise LookupError(f"no job with id {job_id}")
        explanation = (view.explain(job_id) if view is not None else self.app.explain(job_id)).to_json()
        errors = [dataclasses.asdict(e) for e in self.app.batch_errors(job_id)]
        attempts = record.attempt_errors()
        return {"record": _record(record), "explanation": explanation, "batch_errors": errors,
                "attempt_errors": attempts, "rerunnable": _rerunnable(record),
                "timeline": _timeline(record, errors, attempts)}  # fmt: skip

    def abort(self, request: Request, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        """Aborts one job (of the viewer's org)."""
        _only_keys(body, set())
        job_id = _path_id(request)
        return {"id": job_id, "status": self.app.control.abort(job_id, org=viewer.org).value}

    def retry(self, request: Request, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        """Queues one failed, discarded or aborted job (of the viewer's org) again."""
        _only_keys(body, set())
        job_id = _path_id(request)
        return {"id": job_id, "status": self.app.control.retry(job_id, org=viewer.org).value}

    def bulk_abort(self, request: Request, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        """Aborts ``{"ids": [...]}`` (1 to 500 jobs of the viewer's org: each answers its
        status after the call, or why not), or every live job matching a filter (see
        :func:`_bulk_filter`): ``{"matched": n, "results": [...]}``."""
        ids = _bulk_ids(body)
        if ids is None:
            status, filters, dry_run = _bulk_filter(body, viewer, LIVE_STATUSES)
            if dry_run:
                return self._matching(status or LIVE_STATUSES, viewer, filters)
            done = self.app.control.abort_jobs(status, **{"org": viewer.org, **filters})
            return {"matched": len(done), "results": [{"id": i, "status": s.value} for i, s in done.items()]}
        return {"results": _each(ids, lambda job_id: self.app.control.abort(job_id, org=viewer.org))}

    def bulk_retry(self, request: Request, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        """Queues again ``{"ids": [...]}`` (as :meth:`bulk_abort`: a job that cannot be
        re-run answers why), or every failed, discarded and aborted job matching a
        filter (see :func:`_bulk_filter`): ``{"matched": n, "results": [...]}``."""
        ids = _bulk_ids(body)
        if ids is None:
            status, filters, dry_run = _bulk_filter(body, viewer, RERUNNABLE)
            if dry_run:
                return self._matching(status or RERUNNABLE, viewer, filters)
            queued = self.app.control.retry_jobs(status, **{"org": viewer.org, **filters})
            return {"matched": len(queued), "results": [{"id": i, "status": JobStatus.QUEUED.value} for i in queued]}
        return {"results": _each(ids, lambda job_id: self.app.control.retry(job_id, org=viewer.org))}

    def _matching(self, statuses: Union[JobStatus, tuple[JobStatus, ...]], viewer: Viewer, filters: dict[str, Any]) -> dict[str, Any]:
        """A dry run's answer: how many jobs the filter matches (what the page's
        confirmation says), touching none. For a retry it is an upper bound: batches and
        jobs whose duplicate signature a live job holds are matched but left."""
        wanted = (statuses,) if isinstance(statuses, JobStatus) else statuses
        pages = self.app.control.select(wanted, **{"org": viewer.org, **filters})
        return {"matched": sum(len(ids) for ids in pages), "dry_run": True}

    # ----- workers ----------------------------------------------------------------------------

    def workers(self, request: Request, viewer: Viewer) -> list[dict[str, Any]]:
        """The worker registry, by name. Fleet-wide (hosts, pids, every org's jobs): an
        org-scoped viewer is refused."""
        if viewer.org is not None:
            raise Refused(403, "the workers are fleet-wide: an org-scoped viewer does not see them")
        return [{**dataclasses.asdict(w.info), "last_seen": w.last_seen, "alive": w.alive, "running": w.running}
                for w in self.app.storage.worker_list()]  # fmt: skip

    # ----- tenant settings ----------------------------------------------------------------------

    def settings_version(self, request: Request, viewer: Viewer) -> dict[str, Any]:
        """The stored settings version: one cheap read the page polls, to redraw what it
        shows of the settings when (only when) they change."""
        return {"version": self.app.storage.settings_version()}

    def org_settings(self, request: Request, viewer: Viewer) -> dict[str, Any]:
        """An org's settings as they apply now, each value with its source (``org``,
        ``kind``, ``key``, ``tier:<name>`` or ``code``), its pauses, and what the viewer
        may change. The tiers to choose from are listed for fleet-wide viewers only."""
        org = _path_org(request)
        _check_scope(viewer, org)
        described = self.app.tenants.describe(org)
        tiers = sorted(self.app.tenants.tiers()) if viewer.org is None else []
        return {**described, "version": self.app.settings.version, "editable": viewer.settings_edits,
                "tier_editable": viewer.settings_edits and viewer.org is None, "tiers": tiers}  # fmt: skip

    def set_org_settings(self, request: Request, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        """Stores ``{"values": {field: value | null}}`` for the org (``"kind"`` or ``"key"``
        given: for that kind or key of it); null puts a field back to what it inherits.
        Caps are integers or ``"none"``; a rate is ``{"rate": "10/s", "burst": n | null}``;
        ``tier`` (fleet-wide viewers only) names a tier or is null for the default."""
        org = self._settings_target(request, viewer)
        _only_keys(body, {"kind", "key", "values"})
        kind, key = _optional_text(body, "kind"), _optional_text(body, "key")
        values = body.get("values")
        if not isinstance(values, dict) or not values:
            raise InvalidArgument(f'invalid values {shown(values)}: expected an object of at least one setting, e.g. {{"cap": 3}}')
        if "paused" in values:
            raise InvalidArgument("pause and resume through /settings/pause and /settings/resume, not as a value")
        if "tier" in values and viewer.org is not None:
            # Tiers are the plans an operator sells: a customer does not pick its own.
            raise Refused(403, "only a fleet-wide viewer assigns tiers")
        converted = {field: _setting_value(field, value) for field, value in values.items()}
        version = self.app.tenants.set_limits(org, kind, key=key, by=_editor(viewer), **converted)
        return {"version": version, "settings": self.app.tenants.describe(org)}

    def pause_org(self, request: Request, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        """Pauses the org (``"kind"`` or ``"key"`` given: that kind or key of it)."""
        return self._pause_or_resume(request, viewer, body, pause=True)

    def resume_org(self, request: Request, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        """Ends a pause of the org (or of the given kind or key of it)."""
        return self._pause_or_resume(request, viewer, body, pause=False)

    def _pause_or_resume(self, request: Request, viewer: Viewer, body: dict[str, Any], *, pause: bool) -> dict[str, Any]:
        org = self._settings_target(request, viewer)
        _only_keys(body, {"kind", "key"})
        kind, key = _optional_text(body, "kind"), _optional_text(body, "key")
        act = self.app.tenants.pause if pause else self.app.tenants.resume
        version = act(org, kind, key=key, by=_editor(viewer))
        return {"version": version, "settings": self.app.tenants.describe(org)}

    def _settings_target(self, request: Request, viewer: Viewer) -> str:
        """The org a settings change names, if this viewer may change its settings."""
        org = _path_org(request)
        _check_scope(viewer, org)
        if not viewer.settings_edits:
            raise Refused(403, "this viewer may see its org's settings but not change them (the app did not allow tenant_edits)")
        return org

    def fleet_settings(self, request: Request, viewer: Viewer) -> dict[str, Any]:
        """The fleet's settings: every tier, every paused queue and the orgs with stored
        settings of their own. Fleet-wide (other orgs' names): org-scoped viewers are refused."""
        _check_fleet(viewer, "the tiers, queues and other orgs' settings")
        tenants = self.app.tenants
        return {"version": self.app.settings.version, "tiers": tenants.tiers(), "paused_queues": tenants.paused_queues(),
                "orgs": self.app.settings.orgs(), "editable": viewer.settings_edits}  # fmt: skip

    def set_tier(self, request: Request, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        """Stores a tier's ``{"values": {...}}`` (``"kind"`` given: for that kind of its orgs)."""
        _check_fleet(viewer, "tiers")
        name = str(request.path_params["name"])
        _only_keys(body, {"kind", "values"})
        values = body.get("values")
        if not isinstance(values, dict) or not values:
            raise InvalidArgument(f'invalid values {shown(values)}: expected an object of at least one setting, e.g. {{"cap": 3}}')
        converted = {field: _setting_value(field, value) for field, value in values.items()}
        version = self.app.tenants.set_tier(name, _optional_text(body, "kind"), by=_editor(viewer), **converted)
        return {"version": version, "tiers": self.app.tenants.tiers()}

    def pause_queue(self, request: Request, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        """Pauses a named queue as a whole (every org's jobs in it)."""
        _check_fleet(viewer, "queues")
        _only_keys(body, set())
        version = self.app.tenants.pause(queue=str(request.path_params["queue"]), by=_editor(viewer))
        return {"version": version, "paused_queues": self.app.tenants.paused_queues()}

    def resume_queue(self, request: Request, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        """Ends a named queue's pause."""
        _check_fleet(viewer, "queues")
        _only_keys(body, set())
        version = self.app.tenants.resume(queue=str(request.path_params["queue"]), by=_editor(viewer))
        return {"version": version, "paused_queues": self.app.tenants.paused_queues()}

    # ----- the flex queue ---------------------------------------------------------------------

    def flex(self, request: Request, viewer: Viewer) -> list[dict[str, Any]]:
        """An org's holding batch jobs, the next to start first."""
        org = str(request.path_params["org"])
        _check_scope(viewer, org)
        return [_listed(r) for r in self.app.flex_queue(org)]

    def flex_move(self, request: Request, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        """Moves ``{"job_id": …, "before" | "after": id}`` or ``{"job_id": …, "to": "front" | "end"}``."""
        _only_keys(body, {"job_id", "before", "after", "to"})
        org = str(request.path_params["org"])
        _check_scope(viewer, org)
        job_id = check_id("job_id", body.get("job_id"))
        where = {k: body[k] for k in ("before", "after", "to") if body.get(k) is not None}
        if len(where) != 1:
            raise InvalidArgument("give exactly one of before, after or to")
        return {"order": self.app.control.flex_move(job_id, org=org, **where)}


def _bulk_ids(body: dict[str, Any]) -> Optional[list[int]]:
    """The job ids of a bulk action's ``{"ids": [...]}`` body, or None for a filter body."""
    if "ids" not in body:
        return None
    _only_keys(body, {"ids"})
    ids = body["ids"]
    if not isinstance(ids, list) or not 1 <= len(ids) <= BULK_MAX:
        raise InvalidArgument(f"invalid ids {shown(ids)}: expected a list of 1 to {BULK_MAX} job ids")
    for job_id in ids:
        check_id("job id", job_id)
    return ids


def _bulk_filter(body: dict[str, Any], viewer: Viewer, statuses: tuple[JobStatus, ...]) -> tuple[Optional[JobStatus], dict[str, Any], bool]:
    """A bulk action's filter body: ``status`` (one of ``statuses``), ``org``, ``kind``,
    ``handler``, ``since`` and ``until`` (Unix times, on the creation time), and
    ``dry_run`` (count, change nothing). An empty filter must say ``"all": true``, so
    that a stray ``{}`` touches nothing."""
    _only_keys(body, set(BULK_FILTERS) | {"all", "dry_run"})
    every, dry_run = _flag(body, "all"), _flag(body, "dry_run")
    given = {k: body[k] for k in BULK_FILTERS if body.get(k) is not None}
    if not given and not every:
        raise InvalidArgument('give ids, a filter (status, org, kind, handler, since, until) or "all": true')
    status = given.pop("status", None)
    names = [s.value for s in statuses]
    if status is not None and status not in names:
        raise InvalidArgument(f"invalid status {shown(status)}: expected one of {', '.join(names)}")
    if "org" in given:
        if not isinstance(given["org"], str):
            raise InvalidArgument(f"invalid org {shown(given['org'])}: expected a string")
        _check_scope(viewer, given["org"])  # so a given org is the viewer's own, when it has one
    for name in ("since", "until"):
        if name in given:
            at = given[name]
            if isinstance(at, bool) or not isinstance(at, (int, float)) or not 0 <= at <= TIME_MAX:
                raise InvalidArgument(f"invalid {name} {shown(at)}: expected a Unix time from 0 to {TIME_MAX:,}")
            given[name] = datetime.fromtimestamp(at, timezone.utc)
    return (None if status is None else JobStatus(status)), given, dry_run


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"invalid {name} {shown(value)}: expected true or false")
    return value


def _each(ids: list[int], act: Callable[[int], JobStatus]) -> list[dict[str, Any]]:
    """``act`` on every id: its status after, or why not (unknown, or not in a status it applies to)."""
    results: list[dict[str, Any]] = []
    for job_id in ids:
        try:
            results.append({"id": job_id, "status": act(job_id).value})
        except (LookupError, InvalidArgument) as e:
            results.append({"id": job_id, "error": str(e).strip("'\"")})
    return results


def _refusal(error: Exception) -> Response:
    """The API's answer to an error: its status and message as JSON."""
    if isinstance(error, Refused):
        return error.response()
    if isinstance(error, HTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)
    if isinstance(error, StorageError):  # the store's fault, not the request's
        return JSONResponse({"error": str(error)}, status_code=503 if isinstance(error, StorageUnavailable) else 500)
    if isinstance(error, FairQueueError):
        return JSONResponse({"error": str(error)}, status_code=400)
    if type(error) is LookupError:  # the app's "no such job"; a KeyError would be a bug
        return JSONResponse({"error": str(error).strip("'\"")}, status_code=404)
    raise error


async def _json_object(request: Request) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > BODY_MAX:
            raise Refused(413, f"the body is over {BODY_MAX:,} bytes")
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError as e:
        raise Refused(400, f"the body is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise Refused(400, f"expected a JSON object as the body, not {_json_type(body)}")
    return body


def _json_type(value: object) -> str:
    names = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _only_keys(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed)) or "no fields"
        raise InvalidArgument(f"unexpected field {shown(unknown[0])} in the body: expected {expected}")


def _int_param(query: Any, name: str, default: Any, least: int, most: int) -> Any:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(f"invalid {name} {shown(raw)}: expected an integer from {least:,} to {most:,}") from None
    return check_int(name, value, least, most)


def _number_param(query: Any, name: str, default: float, least: float, most: float) -> float:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not least <= value <= most:
        raise InvalidArgument(f"invalid {name} {shown(raw)}: expected a number from {least:g} to {most:g}")
    return value


def _choice(query: Any, name: str, choices: tuple[str, ...], default: str) -> str:
    value = query.get(name) or default
    if value not in choices:
        raise InvalidArgument(f"invalid {name} {shown(value)}: expected one of {', '.join(choices)}")
    return str(value)


def _path_id(request: Request) -> int:
    raw = request.path_params["job_id"]
    try:
        return check_id("job id", int(raw))
    except ValueError:
        raise InvalidArgument(f"invalid job id {shown(raw)}: expected an integer from 1 to {MAX_ID:,}") from None


def _check_scope(viewer: Viewer, org: str) -> None:
    """Refuses an org that is not the viewer's own, when they have one."""
    if viewer.org is not None and org != viewer.org:
        raise Refused(403, f"this viewer sees only org {viewer.org!r}")


def _check_fleet(viewer: Viewer, what: str) -> None:
    """Refuses an org-scoped viewer what is fleet-wide."""
    if viewer.org is not None:
        raise Refused(403, f"{what} are fleet-wide: an org-scoped viewer does not see or change them")


def _path_org(request: Request) -> str:
    return check_org(str(request.path_params["org"]))


def _optional_text(body: dict[str, Any], name: str) -> Optional[str]:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(f"invalid {name} {shown(value)}: expected a string or null")
    return value or None


def _editor(viewer: Viewer) -> str:
    """Who a change is recorded as made by (``explain`` says "paused … by" it)."""
    return "dashboard" if viewer.org is None else f"dashboard (org {viewer.org})"


RATE_FIELDS = ("rate", "key_rate")


def _setting_value(field: str, value: Any) -> Any:
    """A setting as the page sends it, as :meth:`Tenants.set_limits` takes it: a rate
    ``{"rate": "10/s", "burst": n | null}`` (or the text alone) becomes a RateLimit;
    the rest are checked there (:func:`fairqueue.settings.check_setting`)."""
    if field not in RATE_FIELDS or value is None:
        return value
    if isinstance(value, str):
        return RateLimit.parse(value.strip())
    if isinstance(value, dict) and set(value) <= {"rate", "burst"} and isinstance(value.get("rate"), str):
        burst = value.get("burst")
        if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int)):
            raise InvalidArgument(f"invalid burst {shown(burst)}: expected an integer from 1 to 1,000,000,000, or null")
        return RateLimit.parse(value["rate"].strip(), burst)
    raise InvalidArgument(f'invalid {field} {shown(value)}: expected {{"rate": "10/s", "burst": 5}}, "10/s" or null')


def _cookie_path(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/") or "/"


def _record(record: JobRecord) -> dict[str, Any]:
    data = dict(vars(record))
    data["status"] = record.status.value
    return data


def _rerunnable(record: JobRecord) -> bool:
    """Whether a retry may queue it again (a batch's chunks cannot be re-run: see Storage.job_rerun)."""
    return record.status in RERUNNABLE and record.kind != "batch"


def _listed(record: JobRecord) -> dict[str, Any]:
    """A job as a listing shows it: without its attempts' errors and its result (each up to
    tens of kB; a page has up to 500 jobs, and the job's own page reads them)."""
    data = _record(record)
    del data["errors"], data["result"]
    return data


def _timeline(record: JobRecord, errors: list[dict[str, Any]], attempts: list[dict[str, Any]]) -> list[dict[str, Union[float, str]]]:
    """What happened to the job, oldest first."""
    events: list[dict[str, Union[float, str]]] = [{"at": record.created_at, "event": f"enqueued ({record.kind}, org {record.org})"}]
    if record.run_at is not None and record.run_at > record.created_at:
        events.append({"at": record.run_at, "event": "run-at time"})
    if record.started_at is not None:
        events.append({"at": record.started_at, "event": f"started (delivery {record.attempts})"})
    for e in errors:
        chunk = f" chunk {e['chunk']}" if e.get("chunk") is not None else ""
        events.append({"at": e["at"], "event": f"{e['phase']}{chunk} raised {e['exception_type']}: {e['message']}"})
    for a in attempts:
        events.append({"at": a.get("at") or record.created_at,
                       "event": f"attempt {a.get('attempt')} raised {a.get('type')}: {a.get('message')}"})  # fmt: skip
    if record.finished_at is not None:
        note = f": {record.extended_status}" if record.extended_status else ""
        events.append({"at": record.finished_at, "event": f"{record.status.value}{note}"})
    return sorted(events, key=lambda e: float(e["at"]))


def _percentile(values: list[float], q: int) -> Optional[float]:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]
