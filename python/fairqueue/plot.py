"""Plots a person would rather look at than read: pending requests per org over time
(the graph seed 001's team drew), as a self-contained SVG file.

Hand-written SVG keeps the package free of a plotting stack: a few polylines, axes
and a legend are all the chart needs, and any browser shows the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

__all__ = ["pending_svg"]

WIDTH, HEIGHT = 900, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 190, 40, 50
COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
MAX_LINES = 8


def _lines(report: Mapping[str, Any]) -> list[tuple[str, list[float]]]:
    """One series per org; past MAX_LINES, the busiest orgs and one line summing the rest."""
    names = [str(row["org"]) for row in report["orgs"]]
    columns = list(zip(*(pending for _, pending in report["series"]))) or [() for _ in names]
    series = [(name, [float(v) for v in column]) for name, column in zip(names, columns)]
    if len(series) <= MAX_LINES:
        return series
    series.sort(key=lambda s: -max(s[1], default=0))
    keep, rest = series[: MAX_LINES - 1], series[MAX_LINES - 1 :]
    summed = [sum(values) for values in zip(*(s[1] for s in rest))]
    return [*keep, (f"{len(rest)} other orgs (sum)", summed)]


def _ticks(top: float, count: int = 5) -> list[float]:
    if top <= 0:
        return [0.0]
    step = top / count
    magnitude = 10 ** len(str(int(step))) / 10 if step >= 1 else 1
    step = max(1.0, round(step / magnitude) * magnitude)
    return [i * step for i in range(int(top // step) + 1)]


def pending_svg(report: Mapping[str, Any], *, title: str = "") -> str:
    """An SVG line chart of pending (arrived, not yet dispatched) requests per org over
    time, from a ``fairqueue._core.simulate`` report."""
    times = [float(at) for at, _ in report["series"]]
    lines = _lines(report)
    t_end = max(times, default=0.0) or 1.0
    y_top = max((max(values, default=0) for _, values in lines), default=0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + plot_w * t / t_end

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / y_top)

    title = title or f"Pending requests per org — {report['scenario']} under {report['policy']}"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="22" font-size="15">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="black"/>',
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 12}" text-anchor="middle">time (s)</text>',
        f'<text transform="translate(16 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">pending requests</text>',
    ]
    for v in _ticks(y_top):
        out.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
        out.append(f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{LEFT + plot_w}" y2="{y(v):.1f}" stroke="#eee"/>')
    for t in _ticks(t_end):
        out.append(f'<text x="{x(t):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{t:,.0f}</text>')
    for i, (name, values) in enumerate(lines):
        colour = COLOURS[i % len(COLOURS)]
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(times, values))
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"><title>{escape(name)}</title></polyline>')
        legend_y = TOP + 16 * i
        out.append(f'<rect x="{WIDTH - RIGHT + 14}" y="{legend_y}" width="12" height="3" fill="{colour}"/>')
        out.append(f'<text x="{WIDTH - RIGHT + 32}" y="{legend_y + 5}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)
