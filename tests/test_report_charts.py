"""The hand-written utilization heatmap, and what the report does to the database it reads.

The heatmap's cells are one PNG inside the SVG: it is decoded here (zlib, one filter byte per
row) and its pixels compared with the colour map's end colours, so a cell in the wrong row or
hour, or a missing hour drawn as idle, shows up as a wrong colour.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest

from pipeline import _charts, report
from pipeline.config import Config, StoreSettings
from tests.report_fixtures import create_fixture_db

START = datetime(2026, 11, 20, 3, tzinfo=UTC)
PALE = (0xFB, 0xF3, 0xE4)  # 0 %: the colour map's first stop
DARK = (0x1F, 0x3F, 0x73)  # 100 %: its last stop
GREY = (0xD9, 0xD9, 0xD9)  # no data


def _pngs(svg: str) -> list[np.ndarray]:
    """Every embedded PNG of an SVG as a rows x columns x 3 array (8-bit RGB, filter 0)."""
    images = []
    for b64 in re.findall(r'href="data:image/png;base64,([^"]+)"', svg):
        png = base64.b64decode(b64)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        chunks: dict[bytes, bytes] = {}
        at = 8
        while at < len(png):
            (length,) = struct.unpack(">I", png[at : at + 4])
            chunks[png[at + 4 : at + 8]] = png[at + 8 : at + 8 + length]
            at += 12 + length
        width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
        assert (depth, colour) == (8, 2)
        raw = zlib.decompress(chunks[b"IDAT"])
        rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, 1 + width * 3)
        assert (rows[:, 0] == 0).all()
        images.append(rows[:, 1:].reshape(height, width, 3))
    return images


def test_heatmap_cells_have_the_colour_of_their_utilization_and_grey_without_data():
    matrix = np.full((3, 168), 50.0)
    matrix[0, 0] = 0.0
    matrix[1, 5] = 100.0
    matrix[2, 167] = np.nan
    svg = _charts.utilization_heatmap(
        ["0", "1", "2"], START, 168, matrix, idle_threshold_pct=5, salt="x"
    )
    cells, bar = _pngs(svg)
    assert cells.shape == (3, 168, 3)
    assert tuple(cells[0, 0]) == PALE
    assert tuple(cells[1, 5]) == DARK
    assert tuple(cells[2, 167]) == GREY
    assert tuple(cells[0, 1]) not in (PALE, DARK, GREY)  # 50 % is neither end
    # the colour bar runs from 100 % at the top to 0 % at the bottom
    assert tuple(bar[0, 0]) == DARK and tuple(bar[-1, 0]) == PALE
    assert 'aria-label="GPU utilization, per GPU, last 7 days (idle &lt; 5 %)"' in svg
    assert svg.startswith('<svg class="chart" role="img"')


def test_heatmap_labels_one_tick_per_utc_midnight_and_every_gpu():
    svg = _charts.utilization_heatmap(
        [str(i) for i in range(8)], START, 168, np.zeros((8, 168)), idle_threshold_pct=5, salt="x"
    )
    # 03:00 on Fri 20 Nov + 168 h: midnights of Sat 21 to Fri 27 Nov
    days = re.findall(r">((?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d\d Nov)<", svg)
    assert days == [
        "Sat 21 Nov",
        "Sun 22 Nov",
        "Mon 23 Nov",
        "Tue 24 Nov",
        "Wed 25 Nov",
        "Thu 26 Nov",
        "Fri 27 Nov",
    ]
    assert re.findall(r'dominant-baseline="central">(\d)</text>', svg) == list("01234567")
    assert ">Hour (UTC)<" in svg and ">Utilization (%)<" in svg and ">GPU<" in svg


def test_heatmap_escapes_hostile_labels():
    svg = _charts.utilization_heatmap(
        ['<b x="1">&', "ok"], START, 168, np.zeros((2, 168)), idle_threshold_pct=5, salt="x"
    )
    assert "<b " not in svg
    assert "&lt;b x=&quot;1&quot;&gt;&amp;" in svg


def test_cluster_wide_heatmap_has_one_row_and_no_gpu_axis():
    svg = _charts.utilization_heatmap(
        ["all GPUs"],
        START,
        168,
        np.full((1, 168), 30.0),
        idle_threshold_pct=5,
        salt="x",
        cluster_wide=True,
    )
    cells, _bar = _pngs(svg)
    assert cells.shape == (1, 168, 3)
    assert "cluster average" in svg and ">GPU<" not in svg


def _files(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
    }


def test_report_reads_the_database_under_an_owner_only_umask_and_never_writes_it(
    tmp_path, monkeypatch
):
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    db = create_fixture_db(db_dir / "gpucost.duckdb")
    before = _files(db_dir)
    seen: list[int] = []
    real_connect = duckdb.connect

    def spy(*args, **kwargs):
        mask = os.umask(0)
        os.umask(mask)
        seen.append(mask)
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(report.duckdb, "connect", spy)
    previous = os.umask(0o022)
    try:
        report.render_report(Config(store=StoreSettings(db=str(db))), tmp_path / "out")
        after_mask = os.umask(0o022)
    finally:
        os.umask(previous)
    assert seen == [0o077]
    assert after_mask == 0o022  # restored once the connection is closed
    assert _files(db_dir) == before  # same files, same bytes: nothing written, no WAL left


def test_umask_is_restored_when_the_database_cannot_be_opened(tmp_path):
    previous = os.umask(0o022)
    try:
        with pytest.raises(report.MartsMissingError):
            report.render_report(
                Config(store=StoreSettings(db=str(tmp_path / "nope.duckdb"))), tmp_path / "out"
            )
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(previous)


def test_partial_days_noted_are_the_recent_ones_not_a_year_back(tmp_path):
    # The fixture's buckets cover 18 and 19 Nov 2026 whole. Add two hours on 1 Sep (a partial
    # day far before the 30-day period) and three on 20 Nov (the partial day after it).
    db = create_fixture_db(tmp_path / "gpucost.duckdb")
    con = duckdb.connect(str(db))
    for at in (
        "2026-09-01 10:00",
        "2026-09-01 11:00",
        "2026-11-20 00:00",
        "2026-11-20 01:00",
        "2026-11-20 02:00",
    ):
        con.execute(
            "insert into snap.metric_points (run_id, cluster_id, bucket_at, interval_seconds,"
            " snapshot_at, cost, currency) values ('r', 'cls_a', ?, 3600, ?, 0, 'USD')",
            [f"{at}+00", f"{at}+00"],
        )
    con.close()
    result = report.render_report(Config(store=StoreSettings(db=str(db))), tmp_path / "out")
    html = result.index_html.read_text(encoding="utf-8")
    note = re.search(r"Partial days \(([^:]*):", html)
    assert note is not None and note.group(1) == "Fri 20 Nov 2026"
    assert "$448.80" in html  # the period is still 18-19 Nov: 224.40 x 2


def test_nice_ticks_are_round_and_cover_the_range():
    assert _charts.nice_ticks(0, 448.8) == [0, 100, 200, 300, 400, 500]
    assert _charts.nice_ticks(0, 3.2) == [0, 1, 2, 3, 4]
    assert _charts.nice_ticks(0, 0.07) == [0, 0.02, 0.04, 0.06, 0.08]
    assert _charts.nice_ticks(0, 0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]


def _tick_y(svg: str, label: str) -> float:
    match = re.search(
        rf'y="([\d.]+)" text-anchor="end" dominant-baseline="central">'
        rf"{re.escape(label)}<",
        svg,
    )
    assert match, label
    return float(match.group(1))


def test_spend_chart_puts_each_day_at_its_value_on_the_money_axis():
    from datetime import date

    days = [date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)]
    svg = _charts.spend_chart(
        days, [224.4, 448.8, 100.0], [132.0, 0.0, 50.0], currency="USD", symbol="$", salt="x"
    )
    y0, y400, y500 = (_tick_y(svg, f"${v}") for v in (0, 400, 500))
    line = re.search(r'<polyline points="([^"]+)" fill="none" stroke="#2f6db5"', svg)
    assert line
    points = [tuple(map(float, p.split(","))) for p in line.group(1).split()]
    xs = [x for x, _y in points]
    assert xs == sorted(xs) and len(points) == 3
    # 448.8 is 48.8 % of the way from the 400 tick to the 500 tick; 0 -> 100 is linear too
    assert points[1][1] == pytest.approx(y400 + 0.488 * (y500 - y400), abs=0.1)
    assert points[2][1] == pytest.approx(y0 + 0.2 * (y500 - y0), abs=0.1)
    assert ">Day (UTC)<" in svg and ">USD per day<" in svg and ">18 Nov<" in svg


def test_idle_bars_are_proportional_largest_on_top_and_names_escaped():
    svg = _charts.idle_by_cluster_chart(
        ["<img src=x onerror=alert(1)>", "b"],
        [300.0, 75.0],
        currency="EUR",
        symbol="€",
        period="30 days",
        salt="x",
    )
    bars = re.findall(r'<rect x="[\d.]+" y="([\d.]+)" width="([\d.]+)" height="13"/>', svg)
    assert len(bars) == 2
    (y_a, w_a), (y_b, w_b) = ((float(y), float(w)) for y, w in bars)
    assert y_a < y_b  # the first (largest) on top
    assert w_a / w_b == pytest.approx(4.0, rel=1e-3)
    assert "<img" not in svg and "&lt;img src=x onerror=alert(1)&gt;" in svg
    assert ">€0<" in svg and "Idle GPU cost (EUR)" in svg
