"""The ``fairqueue`` command line.

``fairqueue simulate SCENARIO`` runs a built-in workload through the Rust dispatcher
on a virtual clock (no database, no threads, no waiting) and prints each org's
dequeue waits under each policy, so the two can be compared side by side.
``fairqueue worker module:app`` runs a worker until SIGTERM; ``fairqueue demo`` runs
the real thing: a worker draining a flood and a trickle of quiet orgs from the
embedded SQLite store.
"""

from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import click
from prometheus_client import CollectorRegistry
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fairqueue import _core
from fairqueue.conservation import CGROUP_ROOT, ResourceMonitor, SystemSampler, Thresholds
from fairqueue.control import Control
from fairqueue.errors import FairQueueError
from fairqueue.kinds import KINDS, POLICIES
from fairqueue.limits import RateLimit
from fairqueue.logs import LOG_FORMATS
from fairqueue.logs import configure as configure_logs
from fairqueue.plot import pending_svg
from fairqueue.records import JobRecord, JobStatus, TriggerState
from fairqueue.runtime.metrics import DEFAULT_TOP_ORGS, StoreMetrics
from fairqueue.runtime.metrics import serve as serve_metrics
from fairqueue.settings import QueueSettings
from fairqueue.storage import LIVE_STATUSES, RERUNNABLE, Storage, open_storage
from fairqueue.validate import MAX_ID, check_org, check_policy

__all__ = ["main", "SCENARIOS", "POLICY_CHOICES", "format_seconds"]

SCENARIOS = ("seed", "seed-extended", "noisy", "two-orgs", "weighted", "noisy-user", "rate-limited", "priorities")
"""The simulator's built-in scenarios (defined in the Rust core)."""

POLICY_CHOICES = ("both", *POLICIES)

SUMMARISE_ABOVE = 12
"""Scenarios with more orgs than this print the busiest org and a summary of the rest."""


JOB_ID = click.IntRange(1, MAX_ID)
"""A job id as the stores hold it."""


def _org_option(_ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """An --org (or ORG) value, checked by the rule every entry point uses."""
    if value is None:
        return None
    try:
        return check_org(value)
    except FairQueueError as error:
        raise click.BadParameter(str(error), param=param) from None


def _metrics_orgs(_ctx: click.Context, param: click.Parameter, value: str) -> Optional[int]:
    """A --metrics-orgs value: how many orgs keep their own label, or 'all' (None)."""
    if value == "all":
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise click.BadParameter(f"{value!r}: expected a number of orgs >= 0, or 'all'", param=param)
    return number


metrics_orgs_option = click.option(
    "--metrics-orgs",
    default=str(DEFAULT_TOP_ORGS),
    show_default=True,
    metavar="N|all",
    callback=_metrics_orgs,
    help="The N busiest orgs keep their own org label in the metrics, the rest count as org=\"other\" "
    "('all': every org, for fleets with few tenants).",
)


def format_seconds(value: Optional[float]) -> str:
    """A wait or a time on the simulator's clock, in the unit that reads best."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    if value < 120:
        return f"{value:.1f} s" if value >= 10 else f"{value:.2f} s"
    if value < 7_200:
        return f"{value / 60:.1f} min"
    return f"{value / 3_600:.1f} h"


def _console() -> Console:
    """Rich's console; when output is piped, wide enough that tables are not squeezed to 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=120)


def _run(scenario: str, policy: str, flood: Optional[int]) -> dict[str, Any]:
    try:
        return dict(_core.simulate(scenario, policy, flood=flood))
    except FairQueueError as error:
        raise click.UsageError(str(error)) from error


def _title(report: Mapping[str, Any]) -> str:
    title = (
        f"{report['scenario']} under {report['policy']}: makespan {format_seconds(report['makespan'])}, "
        f"{report['extended_delays']} extended delays"
    )
    if report.get("cut_short"):
        title += " (cut short at the horizon: '—' = not finished)"
    return title


def _org_table(report: Mapping[str, Any]) -> Table:
    # Runs cut short at the horizon also show how many requests were dispatched at all.
    ran = bool(report.get("cut_short")) and all("dispatched" in row for row in report["orgs"])
    caption = "n: requests" + ("; run: dispatched" if ran else "") + "; p50…max: waits to be dequeued"
    table = Table(
        title=_title(report),
        title_justify="left",
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    columns = ["org", "n", *(["run"] if ran else []), "p50", "p95", "p99", "max", "done at", "slot-time"]
    rows = [
        [
            str(row["org"]),
            f"{row['n']:,}",
            *([f"{row['dispatched']:,}"] if ran else []),
            *(format_seconds(row[k]) for k in ("p50", "p95", "p99", "max", "done_at", "slot_time")),
        ]
        for row in report["orgs"]
    ]
    for i, column in enumerate(columns):
        # Figures are never cut: each column is as wide as its widest cell.
        width = max([len(column), *(len(cells[i]) for cells in rows)])
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=True, min_width=width)
    for cells in rows:
        table.add_row(*cells)
    return table


def _split_flood(orgs: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], list[Mapping[str, Any]]]:
    """The org with the most requests, and all the others."""
    flood = max(orgs, key=lambda row: row["n"])
    return flood, [row for row in orgs if row is not flood]


def _summary_table(reports: Sequence[Mapping[str, Any]]) -> Table:
    """Policies side by side: the flooding org, and the quiet orgs' p99 waits as min / median / max."""
    table = Table(
        title=f"{reports[0]['scenario']}: the busiest org and all the others", title_justify="left", box=box.SIMPLE_HEAD
    )
    table.add_column("")
    for report in reports:
        table.add_column(str(report["policy"]), justify="right")
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cells: list[str]) -> None:
        rows.append((label, cells))

    split = [_split_flood(report["orgs"]) for report in reports]
    row("busiest org", [str(flood["org"]) for flood, _ in split])
    row("  requests", [f"{flood['n']:,}" for flood, _ in split])
    for key in ("p50", "p99", "max"):
        row(f"  {key} wait", [format_seconds(flood[key]) for flood, _ in split])
    row("  done at", [format_seconds(flood["done_at"]) for flood, _ in split])
    row("other orgs", [str(len(quiet)) for _, quiet in split])
    row("  requests", [f"{sum(r['n'] for r in quiet):,}" for _, quiet in split])
    p99s = [sorted(r["p99"] for r in quiet) for _, quiet in split]
    row("  p99 wait, best org", [format_seconds(p[0] if p else None) for p in p99s])
    row("  p99 wait, median org", [format_seconds(statistics.median(p) if p else None) for p in p99s])
    row("  p99 wait, worst org", [format_seconds(p[-1] if p else None) for p in p99s])
    row("  max wait", [format_seconds(max((r["max"] for r in quiet), default=None)) for _, quiet in split])
    row("makespan", [format_seconds(report["makespan"]) for report in reports])
    row("requests extended-delayed", [f"{report['extended_delays']:,}" for report in reports])
    for label, cells in rows:
        table.add_row(label, *cells)
    if any(report.get("cut_short") for report in reports):
        table.caption = "'—': not finished when the simulation horizon was reached"
        table.caption_justify = "left"
    return table


def render(reports: Sequence[Mapping[str, Any]], console: Console) -> None:
    """Prints simulation reports as tables: per org, or summarised when there are many orgs."""
    if any(len(report["orgs"]) > SUMMARISE_ABOVE for report in reports):
        console.print(_summary_table(reports))
        return
    for report in reports:
        console.print(_org_table(report))


@click.group(name="fairqueue", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fairqueue")
def main() -> None:
    """fairqueue: a multi-tenant, fair, durable job queue with a Rust dispatcher."""


@main.command()
@click.argument("scenario", type=click.Choice(SCENARIOS), metavar="SCENARIO")
@click.option(
    "--policy",
    type=click.Choice(POLICY_CHOICES),
    default="both",
    show_default=True,
    help="Flow-control policy to simulate; 'both' runs peek_set and fair_share on the same workload.",
)
@click.option(
    "--flood",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="How many requests the flooding org enqueues (default: the scenario's own).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON array with one report per policy instead of tables.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    metavar="FILE.svg",
    help="Also draw pending requests per org over time into an SVG file (one per policy: FILE-POLICY.svg).",
)
def simulate(scenario: str, policy: str, flood: Optional[int], as_json: bool, plot: Optional[Path]) -> None:
    """Run SCENARIO through the dispatcher on a virtual clock and report each org's dequeue waits.

    \b
    Scenarios:
      seed           seed 001's worked example: 13 slots, cap 12, one org ahead of another
      seed-extended  the same with a full peek set, so peek_set applies an extended delay
      noisy          one org floods 100,000 futures while 20 quiet orgs trickle in a few
      two-orgs       two orgs with equal weights, one's jobs 10x longer than the other's
      weighted       the same two orgs, the short-job org with weight 3 against 1
      noisy-user     one user of one org floods; its org-mates and other orgs trickle (concurrency keys)
      rate-limited   an org with a rate limit beside unlimited orgs
      priorities     a high-priority job behind a backlog of its org's normal jobs
    """
    policies = ("peek_set", "fair_share") if policy == "both" else (policy,)
    reports = [_run(scenario, p, flood) for p in policies]
    if plot is not None:
        for report in reports:
            target = plot if len(reports) == 1 else plot.with_name(f"{plot.stem}-{report['policy']}{plot.suffix or '.svg'}")
            target.write_text(pending_svg(report))
            click.echo(f"wrote {target}", err=True)
    if as_json:
        click.echo(json.dumps(reports, indent=2))
        return
    render(reports, _console())


def _load_app(path: str) -> Any:
    """The FairQueue at ``module:attribute``; the current directory is importable, as for ``python -m``."""
    from fairqueue.app import FairQueue

    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{path!r}: expected module:attribute, e.g. myservice.jobs:app", param_hint="APP")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise click.BadParameter(f"cannot import {module_name!r}: {error}", param_hint="APP") from error
    if not hasattr(module, attribute):
        names = sorted(n for n in vars(module) if isinstance(getattr(module, n), FairQueue))
        hint = f"; it has {', '.join(f'{module_name}:{n}' for n in names)}" if names else ""
        raise click.BadParameter(f"module {module_name!r} has no attribute {attribute!r}{hint}", param_hint="APP")
    app = getattr(module, attribute)
    if not isinstance(app, FairQueue):
        raise click.BadParameter(f"{path!r} is a {type(app).__name__}, not a fairqueue.FairQueue", param_hint="APP")
    return app


@main.command()
@click.argument("app_path", metavar="APP")
@click.option("--slots", type=click.IntRange(min=1), default=None, help="Worker slots (default: the app's limits).")
@click.option(
    "--mode",
    type=click.Choice(("thread", "process")),
    default="thread",
    show_default=True,
    help="Run handlers in threads, or in a child process per slot (hard timeouts, crashes stay contained).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds running jobs get to finish after SIGTERM before they are re-queued.",
)
@click.option(
    "--conservation/--no-conservation",
    default=None,
    help="Slow dispatch while CPU or memory runs short. Default: only against this worker's own cgroup limits "
    "(a container's CPU quota and memory limit; off where none is set). --conservation: also the host's figures "
    "where no limit is set. --no-conservation: off.",
)
@click.option(
    "--cpu-high",
    type=click.FloatRange(0, 1),
    default=None,
    metavar="FRACTION",
    help="Throttle above this busy fraction of the CPU limit (default 0.9; implies --conservation).",
)
@click.option(
    "--cpu-low",
    type=click.FloatRange(0, 1),
    default=None,
    metavar="FRACTION",
    help="...until under this one (default: 0.15 below --cpu-high).",
)
@click.option(
    "--memory-high",
    type=click.FloatRange(0, 1),
    default=None,
    metavar="FRACTION",
    help="Throttle above this used fraction of the memory limit (default 0.9; implies --conservation).",
)
@click.option(
    "--memory-low",
    type=click.FloatRange(0, 1),
    default=None,
    metavar="FRACTION",
    help="...until under this one (default: 0.1 below --memory-high).",
)
@click.option(
    "--cgroup-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=CGROUP_ROOT,
    show_default=True,
    help="Where the cgroup filesystem is mounted.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (off unless given; 0: any free port).",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address the metrics endpoint listens on.")
@metrics_orgs_option
@click.option(
    "--metrics-store",
    is_flag=True,
    help="Also export the store's gauges (jobs waiting and running per org): for one worker per store only, "
    "or run `fairqueue exporter` instead.",
)
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve liveness and readiness probes at http://HOST:PORT/livez and /readyz (off unless given).",
)
@click.option("--health-host", default="127.0.0.1", show_default=True, help="Address the health endpoints listen on.")
@click.option(
    "--store-retry-for",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="How long to keep retrying a full or unavailable store before exiting 70 (default: for as long as it takes).",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="Log lines on stderr: text, or one JSON object per line with job_id, org, kind and attempt as fields "
    "(unless the app configures logging itself).",
)
@click.option(
    "--queues",
    default=None,
    metavar="NAME,NAME",
    help="Serve only these named queues, comma-separated (e.g. reports,default); default: every queue.",
)
@click.option(
    "--affinity/--no-affinity",
    default=False,
    show_default=True,
    help="With other workers on the store, serve this worker's home orgs first (a preference: every worker "
    "still serves every org). Off by default: it cost org-mates' waits under a large flood (benches/README).",
)
def worker(
    app_path: str,
    slots: Optional[int],
    mode: str,
    grace: float,
    conservation: Optional[bool],
    cpu_high: Optional[float],
    cpu_low: Optional[float],
    memory_high: Optional[float],
    memory_low: Optional[float],
    cgroup_root: Path,
    metrics_port: Optional[int],
    metrics_host: str,
    metrics_orgs: Optional[int],
    metrics_store: bool,
    health_port: Optional[int],
    health_host: str,
    store_retry_for: Optional[float],
    log_format: str,
    queues: Optional[str],
    affinity: bool,
) -> None:
    """Run a worker for the app at APP (module:attribute) until SIGTERM or SIGINT, then drain.

    Exits 0 after a requested stop that drained, 70 if the worker's loop crashed
    (its error is logged), 2 for bad arguments.
    """
    app = _load_app(app_path)
    configure_logs(log_format)  # after the app's import: logging the app configured itself is left as it is
    thresholds = {"cpu_high": cpu_high, "cpu_low": cpu_low, "memory_high": memory_high, "memory_low": memory_low}
    _worker_conservation(app, conservation, thresholds, cgroup_root)
    if metrics_store and metrics_port is None:
        raise click.UsageError("--metrics-store needs --metrics-port")
    try:
        job_worker = app.worker(
            slots=slots, mode=mode, app_path=app_path, metrics_port=metrics_port, metrics_host=metrics_host,
            health_port=health_port, health_host=health_host, store_retry_for=store_retry_for,
            queues=None if queues is None else [name.strip() for name in queues.split(",")], affinity=affinity,
        )  # fmt: skip
        if job_worker.metrics is not None:
            job_worker.metrics.limit_orgs(metrics_orgs)
            if metrics_store:
                job_worker.metrics.add_store_gauges(metrics_orgs, policy=app.policy)
        code = job_worker.run(grace=grace)
    except FairQueueError as error:
        raise click.UsageError(str(error)) from error
    sys.exit(code)


def _worker_conservation(app: Any, conservation: Optional[bool], given: dict[str, Optional[float]], root: Path) -> None:
    """Sets the worker's resource monitor from its options (see README, "Resource conservation").

    Unless told otherwise, a worker throttles only against limits of its own: a
    container's CPU quota and memory limit are this worker's to stay within, while
    the host's load on a shared machine is other pods' and other users'. Where no
    limit is set, nothing is watched and no monitor runs. ``--conservation`` or a
    threshold also reads the host's figures where no limit is set.
    """
    options = {name: value for name, value in given.items() if value is not None}
    if app.conservation is not None:
        if conservation is not None or options:
            flag = f"--{next(iter(options)).replace('_', '-')}" if options else "--[no-]conservation"
            raise click.UsageError(f"{flag}: the app sets its own conservation monitor (FairQueue(conservation=...)); "
                                   "configure it there")  # fmt: skip
        return
    if conservation is False:
        if options:
            raise click.UsageError(f"--{next(iter(options)).replace('_', '-')} needs conservation on: drop --no-conservation")
        return
    defaults = Thresholds()
    bands: dict[str, tuple[float, float]] = {}
    for resource in ("cpu", "memory"):
        high, low = options.get(f"{resource}_high"), options.get(f"{resource}_low")
        if high is None:
            high = defaults.high(resource)
        if low is None:
            # The default band below the high (0.15 for CPU, 0.10 for memory).
            low = max(0.0, high - (defaults.high(resource) - defaults.low(resource)))
        bands[resource] = (high, low)
    try:
        thresholds = Thresholds(cpu_high=bands["cpu"][0], cpu_low=bands["cpu"][1],
                                memory_high=bands["memory"][0], memory_low=bands["memory"][1])  # fmt: skip
    except FairQueueError as error:
        raise click.UsageError(str(error)) from error
    own_only = conservation is None and not options
    sampler = SystemSampler(root, host_fallback=not own_only)
    if own_only and not any(sampler.limits().values()):
        return  # no limit of its own: nothing to watch
    app.conservation = ResourceMonitor(thresholds, sampler=sampler)


@main.command()
@click.option("--policy", type=click.Choice(POLICIES), default="fair_share", show_default=True)
@click.option(
    "--flood",
    type=click.IntRange(min=1),
    default=4000,
    show_default=True,
    metavar="N",
    help="Jobs the noisy org enqueues.",
)
@click.option(
    "--database",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("fairqueue-demo.db"),
    show_default=True,
    help="SQLite file the demo creates afresh.",
)
def demo(policy: str, flood: int, database: Path) -> None:
    """Drain a real flood and a trickle of quiet orgs with a worker, live, and print the waits."""
    from fairqueue import demo as demo_module  # imported here: it builds an app at import

    console = _console()
    result = demo_module.run(database, policy=policy, flood=flood, console=console)  # type: ignore[arg-type]
    demo_module.render(result, console)


# ----- the store: status, jobs, abort ----------------------------------------------------

store_option = click.option(
    "--store",
    envvar="FAIRQUEUE_STORE",
    default="fairqueue.db",
    show_default=True,
    help="The store: a SQLite file path, or a URL (also $FAIRQUEUE_STORE).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _open_store(store: str, must_exist: bool = True) -> Storage:
    if must_exist and "://" not in store and store != ":memory:" and not Path(store).exists():
        raise click.UsageError(f"no store at {store!r}: pass --store PATH (or set FAIRQUEUE_STORE)")
    try:
        return open_storage(store)
    except FairQueueError as error:
        raise click.UsageError(str(error)) from error


def _record_json(record: JobRecord) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    data["status"] = record.status.value
    return data


def _when(t: Optional[float]) -> str:
    return "—" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


@main.command()
@store_option
@json_option
def status(store: str, as_json: bool) -> None:
    """How many jobs each org and kind has in each status."""
    with _open_store(store) as storage:
        counts = storage.job_counts()
    statuses = [s.value for s in JobStatus]
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for (org, kind, state), n in counts.items():
        rows.setdefault((org, kind), dict.fromkeys(statuses, 0))[state.value] = n
    if as_json:
        click.echo(json.dumps([{"org": o, "kind": k, **c} for (o, k), c in sorted(rows.items())], indent=2))
        return
    table = Table(title=f"Jobs in {store}", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("org")
    table.add_column("kind")
    for name in statuses:
        table.add_column(name, justify="right")
    for (org, kind), by_status in sorted(rows.items()):
        table.add_row(escape(org), kind, *(f"{by_status[s]:,}" if by_status[s] else "·" for s in statuses))
    _console().print(table if rows else "No jobs.")


@main.command()
@store_option
@click.option("--org", default=None, callback=_org_option, help="Only this org's jobs.")
@click.option("--kind", type=click.Choice(KINDS), default=None)
@click.option("--status", "state", type=click.Choice([s.value for s in JobStatus]), default=None)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
def jobs(store: str, org: Optional[str], kind: Optional[str], state: Optional[str], limit: int, as_json: bool) -> None:
    """List job records, newest first."""
    with _open_store(store) as storage:
        records = storage.job_list(org=org, kind=kind, status=JobStatus(state) if state else None, limit=limit)
    if as_json:
        click.echo(json.dumps([_record_json(r) for r in records], indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("id", "org", "kind", "handler", "status", "created", "attempts", "extended status"):
        table.add_column(column, justify="right" if column in ("id", "attempts") else "left")
    for r in records:
        table.add_row(str(r.id), escape(r.org), r.kind, escape(r.handler), r.status.value, _when(r.created_at), str(r.attempts),
                      escape(r.extended_status or ""))  # fmt: skip
    _console().print(table if records else "No jobs match.")


@main.command()
@store_option
@json_option
def workers(store: str, as_json: bool) -> None:
    """The worker registry: each worker, whether it is alive, and the jobs it holds.

    Alive means its proof of life holds (its lock, which the operating system or the
    PostgreSQL server releases the moment its process or session ends); a dead one
    stays listed until a live worker reaps it, queuing its jobs again.
    """
    with _open_store(store) as storage:
        registry = storage.worker_list()
    now = time.time()
    if as_json:
        click.echo(json.dumps([
            {**dataclasses.asdict(w.info), "last_seen": w.last_seen, "last_seen_seconds_ago": round(now - w.last_seen, 3),
             "alive": w.alive, "running": w.running}
            for w in registry
        ], indent=2))  # fmt: skip
        return
    table = Table(title=f"Workers of {store}", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("name", "host", "pid", "mode", "slots", "queues", "started", "last seen", "alive", "running"):
        table.add_column(column, justify="right" if column in ("pid", "slots", "running") else "left")
    for w in registry:
        table.add_row(
            escape(w.info.name), escape(w.info.host), str(w.info.pid), w.info.mode, str(w.info.slots),
            "all" if w.info.queues is None else escape(",".join(w.info.queues)), _when(w.info.started_at),
            f"{format_seconds(max(now - w.last_seen, 0.0))} ago", "yes" if w.alive else "[bold red]dead[/]", str(w.running),
        )  # fmt: skip
    _console().print(table if registry else "No workers registered.")


def _bulk_options(statuses: Sequence[JobStatus], verb: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The filters and safety switches shared by ``abort`` and ``retry`` over many jobs."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed([
            store_option,
            click.argument("job_id", type=JOB_ID, required=False),
            click.option("--org", default=None, callback=_org_option, help=f"Only this org's jobs ({verb} one: only if it is this org's)."),
            click.option("--status", "states", multiple=True, type=click.Choice([s.value for s in statuses]),
                         help=f"With --all: only jobs in this status (repeatable; default: {', '.join(s.value for s in statuses)})."),
            click.option("--kind", type=click.Choice(KINDS), default=None, help="With --all: only jobs of this kind."),
            click.option("--handler", default=None, help="With --all: only jobs of this handler (module:name)."),
            click.option("--all", "every", is_flag=True, help=f"{verb.capitalize()} every job matching the filters."),
            click.option("--yes", is_flag=True, help="Do not ask for confirmation."),
            json_option,
        ]):  # fmt: skip
            command = option(command)
        return command

    return decorate


def _matching(storage: Storage, states: Sequence[str], default: Sequence[JobStatus], org: Optional[str],
              kind: Optional[str], handler: Optional[str]) -> list[int]:  # fmt: skip
    control = Control(lambda: storage, QueueSettings())
    statuses = [JobStatus(s) for s in states] or list(default)
    return sorted(i for page in control.select(statuses, org=org, kind=kind, handler=handler) for i in page)


def _confirm(count: int, verb: str, org: Optional[str], yes: bool) -> None:
    """Asks before touching ``count`` jobs, unless ``--yes``; refuses without a terminal to ask on."""
    if yes or count == 0:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{count:,} jobs match: pass --yes to {verb} them without a confirmation")
    whose = f" of org {org!r}" if org else ""
    click.confirm(f"{verb.capitalize()} {count:,} jobs{whose}?", abort=True)


@main.command()
@_bulk_options(LIVE_STATUSES, "abort")
def abort(store: str, job_id: Optional[int], org: Optional[str], states: tuple[str, ...], kind: Optional[str],
          handler: Optional[str], every: bool, yes: bool, as_json: bool) -> None:  # fmt: skip
    """Abort job JOB_ID, or with --all every job matching the filters: a waiting job
    never runs; a running one is asked to stop.

    Exits 1 if there is no such job (for that org).
    """
    if (job_id is None) == (not every):
        raise click.UsageError("give a JOB_ID, or --all (with filters) to abort every matching job")
    if every:
        with _open_store(store) as storage:
            ids = _matching(storage, states, LIVE_STATUSES, org, kind, handler)
            _confirm(len(ids), "abort", org, yes)
            now = time.time()
            after = {i: storage.job_abort(i, now, org=org) for i in ids}
        counts = {s.value: sum(1 for a in after.values() if a is s) for s in {a for a in after.values() if a}}
        if as_json:
            click.echo(json.dumps({"matched": len(ids), "statuses": counts}))
        else:
            click.echo(f"{len(ids):,} jobs matched: " + (", ".join(f"{n:,} {s}" for s, n in sorted(counts.items())) or "none"))
        return
    assert job_id is not None
    with _open_store(store) as storage:
        result = storage.job_abort(job_id, time.time(), org=org)
    if result is None:
        message = f"no job {job_id}" + (f" for org {org!r}" if org else "")
        if as_json:
            click.echo(json.dumps({"id": job_id, "error": message}))
        else:
            click.echo(message, err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"id": job_id, "status": result.value}))
    elif result is JobStatus.ABORTED:
        click.echo(f"job {job_id} is aborted: it will never run")
    elif result in (JobStatus.PROCESSING, JobStatus.PREPARING):
        click.echo(f"job {job_id} is running: it was asked to stop (ctx.cancelled)")
    else:
        click.echo(f"job {job_id} had already finished ({result.value}); nothing to abort")


@main.command()
@_bulk_options(RERUNNABLE, "retry")
def retry(store: str, job_id: Optional[int], org: Optional[str], states: tuple[str, ...], kind: Optional[str],
          handler: Optional[str], every: bool, yes: bool, as_json: bool) -> None:  # fmt: skip
    """Re-run job JOB_ID, or with --all every failed, discarded or aborted job matching
    the filters: each is queued again with a fresh retry budget.

    Exits 1 if JOB_ID is unknown (for that org) or cannot be re-run.
    """
    if (job_id is None) == (not every):
        raise click.UsageError("give a JOB_ID, or --all (with filters) to re-run every matching job")
    with _open_store(store) as storage:
        ids = [job_id] if job_id is not None else _matching(storage, states, RERUNNABLE, org, kind, handler)
        if every:
            _confirm(len(ids), "re-run", org, yes)
        queued = storage.job_rerun(ids, time.time(), org=org)
        if job_id is not None and not queued:
            record = storage.job_get(job_id)
            known = record is not None and (org is None or record.org == org)
            message = (f"job {job_id} is {record.status.value}: only failed, discarded or aborted jobs can be re-run"
                       if known and record else f"no job {job_id}" + (f" for org {org!r}" if org else ""))  # fmt: skip
            click.echo(json.dumps({"id": job_id, "error": message}) if as_json else message, err=not as_json)
            sys.exit(1)
    if as_json:
        click.echo(json.dumps({"matched": len(ids), "queued": queued}))
    else:
        click.echo(f"{len(queued):,} of {len(ids):,} matching jobs queued again")


@main.command(name="explain")
@store_option
@click.argument("job_id", type=JOB_ID)
@click.option("--app", "app_path", default=None, metavar="MODULE:APP", help="Use this app's store and limits (caps).")
@json_option
def explain_command(store: str, job_id: int, app_path: Optional[str], as_json: bool) -> None:
    """Why job JOB_ID has not started, and when it should; or what delayed it.

    Exits 1 if there is no such job.
    """
    from fairqueue.app import FairQueue

    app = _load_app(app_path) if app_path else FairQueue(_open_store(store))
    try:
        answer = app.explain(job_id)
    except LookupError as e:
        message = str(e).strip("'\"")
        click.echo(json.dumps({"id": job_id, "error": message}) if as_json else message, err=not as_json)
        sys.exit(1)
    finally:
        if not app_path:
            app.storage.close()
    click.echo(json.dumps(answer.to_json(), indent=2) if as_json else answer.render())


@main.command()
@store_option
@click.option("--app", "app_path", default=None, metavar="MODULE:APP", help="Use this app's store and limits.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback unless told otherwise).")
@click.option("--port", type=click.IntRange(0, 65535), default=8700, show_default=True, help="Port (0: any free one).")
@click.option("--token", envvar="FAIRQUEUE_DASHBOARD_TOKEN", default=None,
              help="Require this token (Authorization: Bearer, or the page's sign-in); also $FAIRQUEUE_DASHBOARD_TOKEN.")  # fmt: skip
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="A Host name browsers reach it by (repeatable; default: 127.0.0.1, localhost, ::1).")  # fmt: skip
@click.option("--read-only", is_flag=True, help="Show everything, change nothing (no abort, no reordering).")
def dashboard(
    store: str, app_path: Optional[str], host: str, port: int, token: Optional[str], allowed_hosts: tuple[str, ...], read_only: bool
) -> None:
    """Serve the dashboard (uvicorn): orgs, pending per org over time, jobs, explanations, the flex queue.

    Off loopback it needs --token (anyone who reaches the port could abort jobs)
    and --allowed-host (the Host check that stops DNS rebinding).
    """
    try:
        from fairqueue.dashboard import LOOPBACK_HOSTS
        from fairqueue.dashboard import app as dashboard_app
        from fairqueue.dashboard.server import DashboardServer
    except ImportError as e:
        missing = f" ({e.name} is not installed)" if e.name else ""
        raise click.ClickException(f"the dashboard needs the 'dashboard' extra{missing}: pip install 'fairqueue[dashboard]'") from e
    from fairqueue.app import FairQueue

    loopback = host == "localhost" or _is_loopback_address(host)
    if not loopback and not token:
        raise click.UsageError(f"--host {host} is not loopback: give --token too (anyone who reaches the port could abort jobs)")
    if not loopback and not allowed_hosts:
        raise click.UsageError(f"--host {host} is not loopback: give --allowed-host NAME, the host name browsers will use")
    app = _load_app(app_path) if app_path else FairQueue(_open_store(store))
    try:
        asgi = dashboard_app(app, token=token, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS, read_only=read_only)
        server = DashboardServer(asgi, host=host, port=port)
    except FairQueueError as e:
        raise click.UsageError(str(e)) from e
    except OSError as e:
        raise click.UsageError(f"cannot listen on {host}:{port}: {e.strerror}; pick another --port") from e
    how = " (sign in with the token)" if token else ""
    click.echo(f"fairqueue dashboard on {server.url}{how}{', read-only' if read_only else ''} (Ctrl-C stops it)")

    def requested_stop(signum: int, _frame: Any) -> None:
        # uvicorn shuts down gracefully on the signal, then raises it again for the
        # handler that was in place: a requested stop that drained exits 0.
        raise SystemExit(0)

    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, requested_stop)
    try:
        server.serve_forever()
    finally:
        if not app_path:
            app.storage.close()


def _is_loopback_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command()
@store_option
@click.option("--org", default=None, callback=_org_option, help="Only this org's schedules.")
@click.option("--state", type=click.Choice([s.value for s in TriggerState]), default=None)
@json_option
def schedules(store: str, org: Optional[str], state: Optional[str], as_json: bool) -> None:
    """List schedules (app.schedule) with their next and previous fire times."""
    with _open_store(store) as storage:
        records = storage.trigger_list(org=org, state=TriggerState(state) if state else None)
    if as_json:
        click.echo(json.dumps([{**dataclasses.asdict(t), "state": t.state.value} for t in records], indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("id", "org", "name", "cron", "zone", "state", "next fire", "previous fire", "fired"):
        table.add_column(column, justify="right" if column in ("id", "fired") else "left")
    for t in records:
        table.add_row(str(t.id), escape(t.org), escape(t.name), escape(t.cron), escape(t.timezone), t.state.value, _when(t.next_fire_at),
                      _when(t.previous_fire_at), f"{t.times_fired:,}")  # fmt: skip
    _console().print(table if records else "No schedules match.")


@main.command()
@store_option
@click.argument("org", callback=_org_option)
@click.option("--move", "job_id", type=JOB_ID, default=None, help="A holding batch job to move (with --to, --before or --after).")
@click.option("--to", type=click.Choice(("front", "end")), default=None)
@click.option("--before", type=JOB_ID, default=None, metavar="ID")
@click.option("--after", type=JOB_ID, default=None, metavar="ID")
@json_option
def flex(store: str, org: str, job_id: Optional[int], to: Optional[str], before: Optional[int], after: Optional[int],
         as_json: bool) -> None:  # fmt: skip
    """ORG's flex queue: its holding batch jobs, the next to start first; --move reorders it."""
    moving = [v for v in (to, before, after) if v is not None]
    if (job_id is None) != (not moving) or len(moving) > 1:
        raise click.UsageError("--move ID takes exactly one of --to front|end, --before ID or --after ID")
    with _open_store(store) as storage:
        if job_id is not None:
            try:
                storage.flex_move(job_id, org, before=before, after=after, to=to)
            except FairQueueError as e:
                raise click.UsageError(str(e)) from e
        holding = storage.flex_list(org)
    if as_json:
        click.echo(json.dumps([_record_json(r) for r in holding], indent=2))
        return
    table = Table(title=f"Flex queue of {org}", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("#", "id", "handler", "created"):
        table.add_column(column, justify="right" if column in ("#", "id") else "left")
    for i, r in enumerate(holding, start=1):
        table.add_row(str(i), str(r.id), escape(r.handler), _when(r.created_at))
    _console().print(table if holding else f"No batch jobs holding for {escape(org)}.")


@main.command()
@store_option
@click.option("--port", type=click.IntRange(0, 65535), default=9465, show_default=True, help="Port to serve /metrics on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@metrics_orgs_option
@click.option("--policy", type=click.Choice(list(POLICIES)), default="fair_share", show_default=True,
              help="The queue's flow-control policy: the predicted waits depend on it.")
def exporter(store: str, port: int, host: str, metrics_orgs: Optional[int], policy: str) -> None:
    """Serve the store's gauges for Prometheus until SIGTERM or SIGINT: jobs waiting and
    running per org, kind and status, and each org's predicted wait
    (fairqueue_org_predicted_wait_seconds), read at each scrape.

    Run one per store: every worker would report the same figures, so a worker's
    own endpoint (--metrics-port) leaves them out and sum() over workers stays right.
    """
    storage = _open_store(store)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StoreMetrics(lambda: storage, top_orgs=metrics_orgs, policy=check_policy(policy)))
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        (server, thread), (where, bound) = serve_metrics(registry, port, host)
    except OSError as error:
        raise click.UsageError(f"cannot listen on {host}:{port}: {error}") from error
    click.echo(f"fairqueue exporter: {store}'s gauges at http://{where}:{bound}/metrics", err=True)
    try:
        stop.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        server.shutdown()  # type: ignore[attr-defined]
        server.server_close()  # type: ignore[attr-defined]
        thread.join(5)
        storage.close()


@main.group()
def db() -> None:
    """The store's schema."""


@db.command()
@store_option
@json_option
def upgrade(store: str, as_json: bool) -> None:
    """Create the store's schema or migrate it to this fairqueue's version.

    Idempotent, and safe while workers run or while other hosts upgrade too. A
    store written by a newer fairqueue is refused (exit 2) and left as it is.
    """
    if "://" not in store and store != ":memory:" and not Path(store).parent.exists():
        raise click.UsageError(f"no directory for the store {store!r}: create it, or pass --store PATH")
    with _open_store(store, must_exist=False) as storage:
        version = storage.schema_version
        where = getattr(storage, "schema", None)
    if as_json:
        click.echo(json.dumps({"store": store, "schema_version": version}))
    else:
        click.echo(f"{store}{f' (schema {where})' if where else ''} is at schema version {version}, this fairqueue's")



@db.command()
@store_option
@click.option("--app", "app_path", default=None, metavar="MODULE:APP", help="Prune by this app's retention and store.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@json_option
def prune(store: str, app_path: Optional[str], dry_run: bool, as_json: bool) -> None:
    """Delete what the retention no longer keeps: finished jobs, old history, usage
    counters past the daily window, old batch error events (what every worker's
    pruner does every 30 s), in batches of 1,000 rows, each its own short transaction.

    Uses the app's fq.Retention with --app, else the defaults (completed jobs 1 day;
    failed, discarded and aborted 7 days; history 30 days, thinned to a point a minute
    after 1 day). A SQLite store in incremental auto-vacuum mode hands the freed
    pages back to the file system.
    """
    from fairqueue.retention import Retention
    from fairqueue.runtime.duties.pruning import prune as prune_store

    app = _load_app(app_path) if app_path else None
    storage = app.storage if app is not None else _open_store(store)
    retention = app.retention if app is not None else Retention()
    started = time.monotonic()
    try:
        pruned = prune_store(storage, retention, time.time(), dry_run=dry_run)
        # Freed pages are handed back once the deletes have committed, all of them.
        while not dry_run and (freed := storage.space_reclaim(10_000)):
            pruned.reclaimed_pages += freed
    except FairQueueError as error:
        raise click.ClickException(str(error)) from error
    finally:
        storage.close()
    counts = {"jobs": pruned.jobs, "history": pruned.history, "usage": pruned.usage, "batch_errors": pruned.batch_errors,
              "rate_states": pruned.rate_states}  # fmt: skip
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, **counts, **({"jobs_by_status": pruned.by_status} if dry_run else {}),
                               "reclaimed_pages": pruned.reclaimed_pages,
                               "seconds": round(time.monotonic() - started, 3)}))  # fmt: skip
        return
    verb = "would delete" if dry_run else "deleted"
    by_status = f" ({', '.join(f'{n:,} {s}' for s, n in pruned.by_status.items() if n)})" if dry_run and pruned.jobs else ""
    click.echo(f"{verb} {pruned.jobs:,} finished jobs{by_status}, {pruned.history:,} history entries, "
               f"{pruned.usage:,} usage counters, {pruned.batch_errors:,} batch error events, "
               f"{pruned.rate_states:,} idle rate-limit states"
               + (f"; {pruned.reclaimed_pages:,} free pages handed back to the file system" if pruned.reclaimed_pages else ""))  # fmt: skip


@db.command()
@store_option
@json_option
def vacuum(store: str, as_json: bool) -> None:
    """Rewrite a SQLite store compactly and switch it to incremental auto-vacuum, so its
    workers' pruner hands freed space back from then on. Needed once for a store
    created by a fairqueue older than retention (newer ones are created so); it blocks
    writers while it copies the file and needs as much free disk: stop the workers
    first. A PostgreSQL store needs none of this (its autovacuum reuses the space).
    """
    from fairqueue.storage.sqlite import SQLiteStorage

    with _open_store(store) as storage:
        if not isinstance(storage, SQLiteStorage):
            message = f"{store}: nothing to do: only a SQLite store is vacuumed (PostgreSQL's autovacuum reuses the space)"
            click.echo(json.dumps({"store": store, "vacuumed": False}) if as_json else message)
            return
        try:
            before, after = storage.vacuum()
        except FairQueueError as error:
            raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps({"store": store, "vacuumed": True, "bytes_before": before, "bytes_after": after}))
    else:
        click.echo(f"{store}: {before:,} bytes before, {after:,} after; incremental auto-vacuum is on")


# ----- tenant settings ---------------------------------------------------------------------------


def _tenants_of(store: str, app_path: Optional[str]) -> tuple[Any, Callable[[], None]]:
    """The tenant settings of the store (of the app's, with its code defaults, if given)."""
    from fairqueue.app import FairQueue

    app = _load_app(app_path) if app_path else FairQueue(_open_store(store))
    return app.tenants, (lambda: None) if app_path else app.storage.close


_tenant_app_option = click.option("--app", "app_path", default=None, metavar="MODULE:APP",
                                  help="Use this app's store, and its code-level Limits as the defaults shown.")  # fmt: skip


@main.group()
def tenants() -> None:
    """Tenant settings stored in the store: every running worker applies a change within a second."""


def _limit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--cap", default=None, help="Most slots at once (org and key: an integer or 'none')."),
        click.option("--min", "min_", type=click.IntRange(min=0), default=None, help="Slots reserved (org, kind)."),
        click.option("--weight", type=float, default=None, help="Share weight against its siblings."),
        click.option("--per-key-cap", default=None, help="Org: each named key's cap unless it has its own ('none')."),
        click.option("--per-key-weight", type=float, default=None, help="Org: each named key's weight."),
        click.option("--daily-limit", type=click.IntRange(min=0), default=None, help="Org: executions per rolling 24 h."),
        click.option("--rate", default=None, metavar="N/PERIOD", help="A rate limit such as 10/s, 600/min, 1000/h."),
        click.option("--burst", type=click.IntRange(min=1), default=None, help="The rate limit's burst (default: one period)."),
        click.option("--key-rate", default=None, metavar="N/PERIOD", help="Org: each named key's own rate limit."),
        click.option("--clear", "clear", multiple=True, metavar="FIELD",
                     help="Forget a stored field (cap, min, weight, rate, …): it inherits again. Repeatable."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _limit_values(cap: Optional[str], min_: Optional[int], weight: Optional[float], per_key_cap: Optional[str],
                  per_key_weight: Optional[float], daily_limit: Optional[int], rate: Optional[str],
                  burst: Optional[int], key_rate: Optional[str], clear: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    from fairqueue.tenants import parse_cap, parse_rate

    values: dict[str, Any] = {
        "cap": None if cap is None else parse_cap(cap),
        "min": min_,
        "weight": weight,
        "per_key_cap": None if per_key_cap is None else parse_cap(per_key_cap),
        "per_key_weight": per_key_weight,
        "daily_limit": daily_limit,
        "rate": None if rate is None else parse_rate(rate, burst),
        "key_rate": None if key_rate is None else parse_rate(key_rate, burst),
    }
    given = {name: value for name, value in values.items() if value is not None}
    for name in clear:
        given[name.replace("-", "_")] = None
    return given


@tenants.command(name="set")
@store_option
@_tenant_app_option
@click.argument("org", callback=_org_option)
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Set the limits of this kind of the org.")
@click.option("--key", default=None, help="Set the limits of this concurrency key of the org.")
@click.option("--tier", default=None, help="Assign the org this tier ('default': none).")
@_limit_options
@json_option
def tenants_set(store: str, app_path: Optional[str], org: str, kind: Optional[str], key: Optional[str],
                tier: Optional[str], as_json: bool, **limits: Any) -> None:  # fmt: skip
    """Store ORG's limits (or one --kind's, or one --key's), e.g.
    `fairqueue tenants set acme --cap 12 --per-key-cap 2 --rate 10/s`."""
    store_tenants, close = _tenants_of(store, app_path)
    try:
        values = _limit_values(**limits)
        if tier is not None:
            version = store_tenants.assign_tier(org, None if tier == "default" else tier)
        if values or tier is None:
            version = store_tenants.set_limits(org, kind, key=key, **values)
        shown_settings = store_tenants.describe(org)
    except FairQueueError as error:
        raise click.UsageError(str(error)) from error
    finally:
        close()
    click.echo(json.dumps({"version": version, **shown_settings}, indent=2) if as_json else f"{escape(org)}: settings version {version}")


@tenants.command(name="reset")
@store_option
@_tenant_app_option
@click.argument("org", callback=_org_option)
@click.option("--kind", type=click.Choice(KINDS), default=None)
@click.option("--key", default=None)
def tenants_reset(store: str, app_path: Optional[str], org: str, kind: Optional[str], key: Optional[str]) -> None:
    """Forget ORG's stored limits (or one --kind's or --key's): it inherits its tier's and the code's."""
    store_tenants, close = _tenants_of(store, app_path)
    try:
        version = store_tenants.reset(org, kind, key=key)
    except FairQueueError as error:
        raise click.UsageError(str(error)) from error
    finally:
        close()
    click.echo(f"{escape(org)}: settings version {version}")


@tenants.command(name="tier")
@store_option
@_tenant_app_option
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Set the tier's limits for this kind.")
@_limit_options
def tenants_tier(store: str, app_path: Optional[str], name: str, kind: Optional[str], **limits: Any) -> None:
    """Store tier NAME's limits: every org assigned it (`tenants set ORG --tier NAME`;
    'default': every org assigned none) takes them unless it has its own."""
    store_tenants, close = _tenants_of(store, app_path)
    try:
        version = store_tenants.set_tier(name, kind, **_limit_values(**limits))
    except FairQueueError as error:
        raise click.UsageError(str(error)) from error
    finally:
        close()
    click.echo(f"tier {escape(name)}: settings version {version}")


def _pause_command(verb: str) -> Callable[..., Any]:
    @tenants.command(name=verb)
    @store_option
    @click.argument("org", required=False, callback=_org_option)
    @click.option("--kind", type=click.Choice(KINDS), default=None, help=f"{verb.title()} this kind of the org.")
    @click.option("--key", default=None, help=f"{verb.title()} this concurrency key of the org.")
    @click.option("--queue", default=None, help=f"{verb.title()} this whole named queue (no ORG).")
    @click.option("--by", default=None, help="Who, for `explain` (default: $USER).")
    def command(store: str, org: Optional[str], kind: Optional[str], key: Optional[str], queue: Optional[str],
                by: Optional[str]) -> None:  # fmt: skip
        store_tenants, close = _tenants_of(store, None)
        try:
            act = store_tenants.pause if verb == "pause" else store_tenants.resume
            version = act(org, kind, key=key, queue=queue, by=by or os.environ.get("USER"))
        except FairQueueError as error:
            raise click.UsageError(str(error)) from error
        finally:
            close()
        what = f"queue {queue}" if queue is not None else " ".join(
            filter(None, [org, f"kind {kind}" if kind else None, f"key {key}" if key else None]))  # fmt: skip
        click.echo(f"{escape(what)}: {verb}d (settings version {version})")

    command.__doc__ = (
        "Pause ORG (or one --kind or --key of it, or a whole --queue): its jobs stay queued, none starts; running ones finish."
        if verb == "pause" else "Resume what `tenants pause` paused, given the same arguments."
    )  # fmt: skip
    return command


tenants_pause = _pause_command("pause")
tenants_resume = _pause_command("resume")


@tenants.command(name="list")
@store_option
@_tenant_app_option
@json_option
def tenants_list(store: str, app_path: Optional[str], as_json: bool) -> None:
    """Every org with stored settings, each value with its source (org, kind, key, tier:NAME, code); tiers; paused queues."""
    store_tenants, close = _tenants_of(store, app_path)
    try:
        listed, tiers, queues = store_tenants.list(), store_tenants.tiers(), store_tenants.paused_queues()
    finally:
        close()
    if as_json:
        click.echo(json.dumps({"orgs": listed, "tiers": tiers, "paused_queues": queues}, indent=2))
        return
    table = Table(title=f"Tenant settings of {store}", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("org", "tier", "cap", "per-key cap", "weight", "rate", "daily limit", "paused", "own kinds and keys"):
        table.add_column(column)

    def cell(resolved: Mapping[str, Any]) -> str:
        value = resolved["value"]
        text = "none" if value is None else (str(RateLimit.from_dict(value)) if isinstance(value, dict) else f"{value:g}"
                                             if isinstance(value, float) else str(value))  # fmt: skip
        return escape(text) + ("" if resolved["source"] in ("org", "code") else f" [dim]({escape(resolved['source'])})[/]")

    for entry in listed:
        own = entry["settings"]
        paused = entry["paused"]
        parts = [f"kind {k}" for k, v in entry["kinds"].items() if any(x["source"] == "kind" for x in v.values())]
        parts += [f"key {k}" for k in entry["keys"]]
        parts += [f"{k} paused" for k in [*entry["paused_kinds"], *entry["paused_keys"]]]
        table.add_row(
            escape(entry["org"]), escape(own["tier"]["value"]), cell(own["cap"]), cell(own["per_key_cap"]),
            cell(own["weight"]), cell(own["rate"]), cell(own["daily_limit"]),
            "" if paused is None else f"since {_when(paused['since'])} by {escape(str(paused['by'] or 'someone unnamed'))}",
            escape(", ".join(parts)),
        )  # fmt: skip
    console = _console()
    console.print(table if listed else "No org has stored settings.")
    for name, tier in tiers.items():
        console.print(f"tier {escape(name)}: {escape(json.dumps(tier))}")
    for name, pause in queues.items():
        by = escape(str(pause["by"] or "someone unnamed"))
        console.print(f"queue {escape(name)} paused since {_when(pause['since'])} by {by}")

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
