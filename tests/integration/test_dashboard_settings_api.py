"""The dashboard's tenant-settings API over a real uvicorn server and a real SQLite
store, driven with httpx: each value with its source, typed 400s for bad values,
the same write rules as every other change (same origin, the header, JSON only,
read-only), org scoping with and without ``tenant_edits``, tiers and queues for
fleet-wide viewers only, and pauses recorded in the history for the chart."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import fairqueue as fq
import fairqueue.dashboard as dashboard
from fairqueue.dashboard.server import DashboardServer

JSON_WRITE = {"X-Fairqueue-Request": "1", "Content-Type": "application/json"}

Serve = Callable[..., httpx.Client]


@pytest.fixture
def serve(app: fq.FairQueue) -> Iterator[Serve]:
    """Starts ``dashboard.app(app, **options)`` on a free loopback port; returns an httpx client for it."""
    servers: list[DashboardServer] = []
    clients: list[httpx.Client] = []

    def start(**options: Any) -> httpx.Client:
        server = DashboardServer(dashboard.app(app, **options), port=0).start()
        servers.append(server)
        clients.append(httpx.Client(base_url=server.url.rstrip("/"), timeout=30))
        return clients[-1]

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def write(client: httpx.Client, path: str, body: Any, **headers: str) -> httpx.Response:
    return client.post(path, json=body, headers={**JSON_WRITE, **headers})


def test_settings_are_shown_with_their_sources_and_edited(app: fq.FairQueue, serve: Serve) -> None:
    client = serve()
    app.set_tier("premium", weight=3.0)
    answer = write(client, "/api/orgs/acme/settings", {"values": {"cap": 4, "rate": {"rate": "600/min", "burst": 20}, "tier": "premium"}})
    assert answer.status_code == 200, answer.text
    shown = client.get("/api/orgs/acme/settings").json()
    assert shown["settings"]["cap"] == {"value": 4, "source": "org"}
    assert shown["settings"]["weight"] == {"value": 3.0, "source": "tier:premium"}
    assert shown["settings"]["rate"] == {"value": {"rate": 600.0, "per": 60.0, "burst": 20}, "source": "org"}
    assert shown["kinds"]["future"]["cap"]["source"] == "code" and shown["editable"] and shown["tiers"] == ["premium"]
    assert write(client, "/api/orgs/acme/settings", {"key": "user-1", "values": {"cap": 1}}).status_code == 200
    assert client.get("/api/orgs/acme/settings").json()["keys"]["user-1"]["cap"] == {"value": 1, "source": "key"}
    # null: back to what it inherits
    assert write(client, "/api/orgs/acme/settings", {"values": {"cap": None, "tier": None}}).status_code == 200
    assert app.settings.fresh().org("acme")["cap"].source == "code" and app.settings.tier_of("acme") == "default"
    assert client.get("/api/settings/version").json() == {"version": app.storage.settings_version()}


@pytest.mark.parametrize(("body", "message"), [
    ({"values": {"cap": "lots"}}, "invalid cap 'lots' for org 'acme': expected an integer from 1"),
    ({"values": {"cap": 0}}, "invalid cap 0"),
    ({"values": {"rate": "ten a second"}}, "invalid rate limit 'ten a second'"),
    ({"values": {"rate": {"rate": "10/s", "burst": "many"}}}, "invalid burst 'many'"),
    ({"values": {"rate": {"rate": "10/s", "burst": 0}}}, "invalid burst 0"),
    ({"values": {"weight": -1}}, "invalid weight -1"),
    ({"values": {"colour": 1}}, "invalid setting 'colour' for a org scope"),
    ({"kind": "future", "values": {"per_key_cap": 1}}, "invalid setting 'per_key_cap' for a kind scope"),
    ({"kind": "nope", "values": {"cap": 1}}, "nope"),
    ({"values": {"tier": "gold"}}, "unknown tier 'gold'"),
    ({"values": {"paused": {"at": 1}}}, "pause and resume through"),
    ({"values": {}}, "invalid values {}"),
    ({"values": {"cap": 1}, "extra": 1}, "unexpected field 'extra'"),
])  # fmt: skip
def test_a_bad_value_is_a_400_naming_it(app: fq.FairQueue, serve: Serve, body: Any, message: str) -> None:
    client = serve()
    version = app.storage.settings_version()
    answer = write(client, "/api/orgs/acme/settings", body)
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text
    assert app.storage.settings_version() == version


def test_a_settings_change_follows_the_write_rules(app: fq.FairQueue, serve: Serve) -> None:
    client = serve()
    body = {"values": {"cap": 1}}
    cases = [
        (dict(headers={"Content-Type": "application/json"}), 403),  # no X-Fairqueue-Request
        (dict(headers={**JSON_WRITE, "Content-Type": "text/plain"}), 415),
        (dict(headers={**JSON_WRITE, "Origin": "http://evil.example"}), 403),
        (dict(headers={**JSON_WRITE, "Sec-Fetch-Site": "cross-site"}), 403),
    ]
    for options, status in cases:
        assert client.post("/api/orgs/acme/settings", json=body, **options).status_code == status, options  # type: ignore[arg-type]
        assert client.post("/api/orgs/acme/settings/pause", json={}, **options).status_code == status, options  # type: ignore[arg-type]
        assert client.post("/api/queues/default/pause", json={}, **options).status_code == status, options  # type: ignore[arg-type]
    assert app.storage.settings_version() == 0
    read_only = serve(read_only=True)
    assert write(read_only, "/api/orgs/acme/settings", body).status_code == 403
    assert write(read_only, "/api/tiers/default", body).status_code == 403
    assert read_only.get("/api/orgs/acme/settings").json()["editable"] is False
    assert app.storage.settings_version() == 0


def test_org_scoped_viewers_see_their_settings_and_change_them_only_if_allowed(app: fq.FairQueue, serve: Serve) -> None:
    app.set_limits("globex", cap=9)
    scoped = serve(org_scope={"acme-token": "acme"})
    scoped.headers["Authorization"] = "Bearer acme-token"
    assert scoped.get("/api/orgs/acme/settings").json()["editable"] is False
    assert scoped.get("/api/orgs/acme/settings").json()["tiers"] == []  # the operator's plans are not listed
    assert scoped.get("/api/orgs/globex/settings").status_code == 403
    assert scoped.get("/api/settings").status_code == 403
    for path, body in [("/api/orgs/acme/settings", {"values": {"cap": 50}}), ("/api/orgs/acme/settings/pause", {}),
                       ("/api/tiers/default", {"values": {"cap": 50}}), ("/api/queues/default/pause", {})]:  # fmt: skip
        assert write(scoped, path, body).status_code == 403, path
    allowed = serve(org_scope={"acme-token": "acme"}, tenant_edits=True)
    allowed.headers["Authorization"] = "Bearer acme-token"
    assert write(allowed, "/api/orgs/acme/settings", {"values": {"cap": 3}}).status_code == 200
    assert write(allowed, "/api/orgs/acme/settings/pause", {"kind": "batch"}).status_code == 200
    assert app.tenants.describe("acme")["paused_kinds"]["batch"]["by"] == "dashboard (org acme)"
    assert write(allowed, "/api/orgs/acme/settings", {"values": {"tier": "default"}}).status_code == 403
    assert write(allowed, "/api/orgs/globex/settings", {"values": {"cap": 1}}).status_code == 403
    assert write(allowed, "/api/queues/default/pause", {}).status_code == 403
    assert app.settings.fresh().org_limits("acme")["cap"] == 3 and app.settings.org_limits("globex")["cap"] == 9


def test_pauses_are_recorded_in_the_history_and_shaded(app: fq.FairQueue, serve: Serve) -> None:
    client = serve()
    started = time.time()
    assert write(client, "/api/orgs/a%2Fb/settings/pause", {}).status_code == 200  # an org with a slash
    assert write(client, "/api/queues/gpu/pause", {}).status_code == 200
    assert write(client, "/api/orgs/a%2Fb/settings/resume", {}).status_code == 200
    assert write(client, "/api/orgs/a%2Fb/settings/resume", {}).status_code == 200  # not paused: no second end
    entries = app.storage.history_read(started - 1, ["pause_start", "pause_end"])
    assert [(e.kind, e.org, e.figures["scope"], e.figures["by"]) for e in entries] == [
        ("pause_start", "a/b", "org 'a/b'", "dashboard"), ("pause_start", None, "queue 'gpu'", "dashboard"),
        ("pause_end", "a/b", "org 'a/b'", "dashboard")]  # fmt: skip
    assert entries[2].figures["since"] == entries[0].at  # the pause's own time, as explain says it
    periods = [p for p in client.get("/api/history").json()["periods"] if p["kind"] == "pause"]
    assert [(p["scope"], p["end"] is None) for p in periods] == [("org 'a/b'", False), ("queue 'gpu'", True)]
    # An org-scoped viewer's chart shades its own pauses and the queues', no other org's.
    app.pause("acme", by="ops")
    scoped = serve(org_scope={"t": "a/b"})
    scoped.headers["Authorization"] = "Bearer t"
    shaded = sorted(p["scope"] for p in scoped.get("/api/history").json()["periods"] if p["kind"] == "pause")
    assert shaded == ["org 'a/b'", "queue 'gpu'"]
