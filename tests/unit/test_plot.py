"""The pending-per-org chart: valid SVG, one line per org (busiest ones, the rest summed)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from fairqueue import _core
from fairqueue.cli import main
from fairqueue.plot import MAX_LINES, pending_svg

SVG = "{http://www.w3.org/2000/svg}"


def lines(svg: str) -> dict[str, list[tuple[float, float]]]:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    out = {}
    for polyline in root.iter(f"{SVG}polyline"):
        name = polyline.find(f"{SVG}title").text  # type: ignore[union-attr]
        out[name] = [tuple(map(float, p.split(","))) for p in polyline.attrib["points"].split()]
    return out  # type: ignore[return-value]


def test_one_line_per_org_inside_the_plot_area() -> None:
    report = _core.simulate("seed-extended", "peek_set")
    drawn = lines(pending_svg(report))
    assert set(drawn) == {"org-1", "org-2"}
    points = [p for line in drawn.values() for p in line]
    assert len(drawn["org-1"]) == len(report["series"])
    assert all(0 <= x <= 900 and 0 <= y <= 420 for x, y in points)
    # org-1 starts with the most pending requests: the highest point (smallest y) is its.
    assert min(y for _, y in drawn["org-1"]) < min(y for _, y in drawn["org-2"])


def test_many_orgs_keep_the_busiest_and_sum_the_rest() -> None:
    report = _core.simulate("noisy", "fair_share", flood=2_000)
    drawn = lines(pending_svg(report))
    assert len(drawn) == MAX_LINES
    assert "flood" in drawn and "14 other orgs (sum)" in drawn


def test_simulate_writes_one_plot_per_policy(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["simulate", "seed", "--plot", str(tmp_path / "pending.svg")])
    assert result.exit_code == 0, result.output
    for policy in ("peek_set", "fair_share"):
        assert lines((tmp_path / f"pending-{policy}.svg").read_text())
