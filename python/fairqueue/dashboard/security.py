"""What keeps the dashboard safe by default: the Host allow-list, the security
headers, who the viewer is (token, cookie, org scope) and the checks every
state-changing request passes.

A browser is the attack surface: any page it opens can send requests to the
dashboard (forms, ``fetch`` in ``no-cors`` mode), and a rebound DNS name can
point another site's name at loopback. So:

- the Host header must name an allowed host (DNS rebinding reads nothing);
- a write must come from the dashboard's own origin (``Sec-Fetch-Site`` and
  ``Origin``), carry ``X-Fairqueue-Request: 1`` (a header no form can send and
  no cross-origin ``fetch`` may send without a preflight we never grant) and a
  JSON body typed ``application/json`` (a form can only send ``text/plain``,
  urlencoded or multipart);
- a token travels in ``Authorization: Bearer`` or an HttpOnly, SameSite=Strict
  cookie set by a login POST, never in a URL (URLs end up in logs, history and
  ``Referer``);
- every response forbids framing, sniffing, inline script and referrers.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Optional, Union
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fairqueue.errors import InvalidArgument
from fairqueue.validate import check_org, shown

__all__ = [
    "LOOPBACK_HOSTS",
    "COOKIE",
    "REQUEST_HEADER",
    "CSP",
    "OrgScope",
    "ScopeCallback",
    "Viewer",
    "Refused",
    "Access",
    "HostCheck",
    "SecurityHeaders",
    "host_name",
    "host_patterns",
]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""The Host names a dashboard answers by default: loopback only."""
COOKIE = "fairqueue_dashboard"
"""The login cookie's name."""
REQUEST_HEADER = "x-fairqueue-request"
"""The header every state-changing request must carry (value ``1``)."""
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""No inline script or style, nothing from elsewhere, never framed."""
_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Another origin may not even embed a response (an <img> or <script> of the API).
    "cross-origin-resource-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}

ScopeCallback = Callable[[Request], Union[Optional[str], Awaitable[Optional[str]]]]
OrgScope = Union[Mapping[str, str], ScopeCallback]
"""Who sees which org: a mapping of token to org (a viewer signed in with such a
token sees only that org), or a callback given each request that returns the one
org the viewer may see, or None for every org (it may be ``async``, and may raise
``starlette.exceptions.HTTPException(403)`` to refuse the request)."""


@dataclass(frozen=True)
class Viewer:
    """Who is asking: the one org they may see (None: every org), whether they may act,
    and whether they may change tenant settings (limits, pauses, tiers)."""

    org: Optional[str]
    read_only: bool
    settings_edits: bool = False


class Refused(Exception):
    """A request the dashboard will not serve: its HTTP status and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> JSONResponse:
        """The refusal as the API answers it."""
        return JSONResponse({"error": self.message}, status_code=self.status)


def host_name(header: Optional[str]) -> Optional[str]:
    """The host a Host header names, lower-cased, without port, brackets or a
    trailing dot; None if it is missing or malformed."""
    if not header or any(c in header for c in "@/\\ \t?#"):
        return None
    if header.startswith("["):
        end = header.find("]")
        port = header[end + 1 :] if end >= 0 else ""
        if end < 0 or (port and not (port.startswith(":") and port[1:].isdigit())):
            return None
        name = header[1:end]
    else:
        name, colon, port = header.partition(":")
        if colon and not port.isdigit():
            return None  # a bad port, or an IPv6 address without its brackets
    return name.rstrip(".").lower() or None


def host_patterns(allowed_hosts: Iterable[str]) -> tuple[str, ...]:
    """``allowed_hosts`` checked and normalised as :class:`HostCheck` matches them."""
    patterns = []
    for given in allowed_hosts:
        p = given.lower().strip("[]").rstrip(".") if isinstance(given, str) else ""
        if not p or ("*" in p and p != "*" and not (p.startswith("*.") and "*" not in p[1:])):
            raise InvalidArgument(f"invalid allowed host {shown(given)}: expected a name, '*.example.com' or '*'")
        patterns.append(p)
    return tuple(patterns)


def _host_allowed(name: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


class HostCheck:
    """Refuses (400) a request whose Host header names no allowed host: the
    defence against DNS rebinding. Patterns: a name, ``*.example.com``, or ``*``."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.patterns = host_patterns(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            header = Headers(scope=scope).get("host")
            name = host_name(header)
            if name is None or not _host_allowed(name, self.patterns):
                refused = Refused(400, f"host {shown(header)} is not one this dashboard answers to (allowed_hosts)")
                await refused.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Adds the security headers (CSP, no framing, nosniff, no referrer) to every
    response, and ``Cache-Control: no-store`` to the API's (it shows live data)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers[name] = value
                if "cache-control" not in headers:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Access:
    """Decides who a request comes from and whether it may do what it asks.

    Args:
        token: if given, every API request must carry it (or an ``org_scope`` token).
        org_scope: see :data:`OrgScope`.
        read_only: no viewer may change anything.
        tenant_edits: an org-scoped viewer may change its own org's settings and
            pauses (see :meth:`viewer`); fleet-wide viewers always may, unless read-only.
        trusted_origins: origins besides the dashboard's own whose pages may write
            (e.g. ``https://ops.example.com`` when a proxy changes the Host).
    """

    def __init__(
        self,
        *,
        token: Optional[str],
        org_scope: Optional[OrgScope],
        read_only: bool,
        trusted_origins: Iterable[str] = (),
        tenant_edits: bool = False,
    ) -> None:
        if token is not None and (not isinstance(token, str) or not token):
            raise InvalidArgument("invalid token: expected a non-empty string")
        self.token = token
        self.org_tokens: dict[str, str] = {}
        self.scope_of: Optional[ScopeCallback] = None
        if isinstance(org_scope, Mapping):
            for key, org in org_scope.items():
                if not isinstance(key, str) or not key:
                    raise InvalidArgument("invalid org_scope token: expected non-empty strings")
                self.org_tokens[key] = check_org(org)
        elif callable(org_scope):
            self.scope_of = org_scope
        elif org_scope is not None:
            raise InvalidArgument(f"invalid org_scope {shown(org_scope)}: expected a mapping of token to org or a callable")
        self.read_only = read_only
        self.tenant_edits = tenant_edits
        self.trusted_origins = frozenset(o.rstrip("/").lower() for o in trusted_origins)

    @property
    def needs_token(self) -> bool:
        """True if API requests must carry a token."""
        return self.token is not None or bool(self.org_tokens)

    def org_of_token(self, given: str) -> tuple[bool, Optional[str]]:
        """(known, org): whether ``given`` is a token of this dashboard, and the org it limits to."""
        known, org = False, None
        # Compare with every token, in constant time each: no early exit to time.
        if self.token is not None and hmac.compare_digest(given.encode(), self.token.encode()):
            known = True
        for key, scoped in self.org_tokens.items():
            if hmac.compare_digest(given.encode(), key.encode()):
                known, org = True, scoped
        return known, org

    async def viewer(self, request: Request) -> Viewer:
        """The viewer of an API request; :class:`Refused` if it may not read."""
        if "token" in request.query_params:
            raise Refused(400, "a token is never accepted in the URL: send 'Authorization: Bearer …' or sign in on the page")
        site = request.headers.get("sec-fetch-site")
        if site not in (None, "same-origin", "none"):
            raise Refused(403, f"cross-origin request refused (Sec-Fetch-Site: {site})")
        org: Optional[str] = None
        if self.needs_token:
            given = _bearer(request) or request.cookies.get(COOKIE, "")
            known, org = self.org_of_token(given) if given else (False, None)
            if not known:
                raise Refused(401, "sign in: a token is required (Authorization: Bearer, or the login form)")
        if self.scope_of is not None and org is None:
            scoped = self.scope_of(request)
            if inspect.isawaitable(scoped):
                scoped = await scoped
            org = check_org(scoped) if scoped is not None else None
        # An org-scoped viewer is typically a customer shown why its jobs wait: letting it
        # raise its own cap, rate or daily limit (or lift a pause the operator set) would
        # undo the fairness the limits exist for, so it may only when the app opts in.
        edits = not self.read_only and (org is None or self.tenant_edits)
        return Viewer(org, self.read_only, edits)

    def check_write(self, request: Request) -> None:
        """Refuses a state-changing request that is not a same-origin JSON request
        with the dashboard's header (see the module docstring)."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            raise Refused(403, f"cross-origin request refused (Sec-Fetch-Site: {site})")
        origin = request.headers.get("origin")
        if origin is not None and not self._own_origin(origin, request):
            raise Refused(403, f"cross-origin request refused (Origin: {shown(origin)})")
        if request.headers.get(REQUEST_HEADER) != "1":
            raise Refused(403, "a state-changing request needs the header 'X-Fairqueue-Request: 1'")
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type != "application/json":
            raise Refused(415, f"expected a JSON body with 'Content-Type: application/json', not {shown(content_type or None)}")

    def _own_origin(self, origin: str, request: Request) -> bool:
        if origin.rstrip("/").lower() in self.trusted_origins:
            return True
        parts = urlsplit(origin)
        # The scheme is not compared: behind a TLS proxy the app sees http while the
        # browser says https; one host and port cannot serve two schemes at once.
        return parts.scheme in ("http", "https") and parts.netloc.lower() == request.headers.get("host", "").lower()


def _bearer(request: Request) -> str:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""
