"""The ``fairqueue`` command line: ``simulate`` against the real Rust simulator."""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest
from click.testing import CliRunner

from fairqueue import cli
from fairqueue.errors import InvalidArgument


def run(*args: str) -> Any:
    return CliRunner().invoke(cli.main, list(args))


def test_simulate_seed_prints_both_policies() -> None:
    result = run("simulate", "seed")
    assert result.exit_code == 0, result.output
    assert "seed under peek_set" in result.output
    assert "seed under fair_share" in result.output
    assert "org-1" in result.output and "org-2" in result.output


def test_simulate_json_is_one_report_per_policy() -> None:
    result = run("simulate", "seed-extended", "--json")
    assert result.exit_code == 0, result.output
    reports = json.loads(result.output)
    assert [r["policy"] for r in reports] == ["peek_set", "fair_share"]
    by_policy = {r["policy"]: r for r in reports}
    # The seed's extended delay happens under peek_set only.
    assert by_policy["peek_set"]["extended_delays"] > 0
    assert by_policy["fair_share"]["extended_delays"] == 0
    for report in reports:
        assert report["scenario"] == "seed-extended"
        assert {row["org"] for row in report["orgs"]} == {"org-1", "org-2"}
        for row in report["orgs"]:
            assert 0 <= row["p50"] <= row["p95"] <= row["p99"] <= row["max"]


def test_simulate_one_policy_with_a_flood_size() -> None:
    result = run("simulate", "noisy", "--policy", "fair_share", "--flood", "2000", "--json")
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.output)
    assert report["policy"] == "fair_share"
    assert max(row["n"] for row in report["orgs"]) == 2000


def test_noisy_is_summarised_busiest_org_against_the_others() -> None:
    result = run("simulate", "noisy", "--flood", "2000")
    assert result.exit_code == 0, result.output
    for text in ("busiest org", "other orgs", "p99 wait, median org", "peek_set", "fair_share"):
        assert text in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("simulate", "no-such-scenario"), "no-such-scenario"),
        (("simulate", "seed", "--policy", "fifo_lottery"), "fifo_lottery"),
        (("simulate", "seed", "--flood", "0"), "--flood"),
        (("simulate", "seed", "--flood", "many"), "--flood"),
        (("simulate",), "SCENARIO"),
    ],
)
def test_bad_arguments_exit_non_zero_with_a_clear_message(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_an_error_from_the_core_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(scenario: str, policy: str, *, flood: Optional[int] = None) -> dict[str, Any]:
        raise InvalidArgument(f"invalid flood: {flood}")

    monkeypatch.setattr(cli._core, "simulate", refuse)
    result = run("simulate", "noisy", "--flood", "99")
    assert result.exit_code == 2
    assert "invalid flood: 99" in result.output


def test_every_listed_scenario_exists_in_the_core() -> None:
    for scenario in cli.SCENARIOS:
        report = cli._core.simulate(scenario, "fair_share", flood=50)
        assert report["scenario"] == scenario


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0.0, "0"),
        (0.0004, "400 µs"),
        (0.25, "250.0 ms"),
        (1.5, "1.50 s"),
        (42.0, "42.0 s"),
        (300.0, "5.0 min"),
        (9_000.0, "2.5 h"),
    ],
)
def test_format_seconds(seconds: Optional[float], text: str) -> None:
    assert cli.format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("no_colon", "module:attribute"),
        ("no_such_module_xyz:app", "cannot import"),
        ("fairqueue.cli:SCENARIOS", "not a fairqueue.FairQueue"),
    ],
)
def test_worker_refuses_a_bad_app_path(app: str, message: str) -> None:
    result = run("worker", app)
    assert result.exit_code == 2
    assert message in result.output


def test_worker_refuses_zero_slots() -> None:
    result = run("worker", "fq_sample_jobs:app", "--slots", "0")
    assert result.exit_code == 2
    assert "--slots" in result.output


# ----- fairqueue dashboard ---------------------------------------------------------------


def test_dashboard_off_loopback_needs_a_token_and_an_allowed_host() -> None:
    no_token = run("dashboard", "--store", ":memory:", "--host", "0.0.0.0")
    assert no_token.exit_code == 2 and "--host 0.0.0.0 is not loopback: give --token" in no_token.output
    no_host = run("dashboard", "--store", ":memory:", "--host", "0.0.0.0", "--token", "t0ken-t0ken")
    assert no_host.exit_code == 2 and "give --allowed-host NAME" in no_host.output


def test_dashboard_says_how_to_install_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "fairqueue.dashboard.server", raising=False)
    result = run("dashboard", "--store", ":memory:")
    assert result.exit_code == 1
    assert "the dashboard needs the 'dashboard' extra (uvicorn is not installed): pip install 'fairqueue[dashboard]'" in result.output


def test_dashboard_reports_a_port_in_use() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run("dashboard", "--store", ":memory:", "--port", str(taken.getsockname()[1]))
    assert result.exit_code == 2 and "cannot listen on 127.0.0.1:" in result.output and "pick another --port" in result.output
