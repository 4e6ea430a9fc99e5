"""The report's charts (matplotlib into inline SVG), and what the report does to the database.

Charts are checked for what a reader relies on: titles, axis labels and units, escaped labels
(a hostile cluster name is text, never markup), the heatmap as one raster image inside the SVG.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest

from pipeline import _charts, report
from pipeline.config import Config, StoreSettings
from pipeline.connection import Database
from tests.report_fixtures import build_snapshot_marts, create_fixture_db

START = datetime(2026, 11, 20, 3, tzinfo=UTC)


def _images(svg: str) -> list[bytes]:
    return [
        base64.b64decode(b64) for b64 in re.findall(r'href="data:image/png;base64,([^"]+)"', svg)
    ]


def test_heatmap_is_one_raster_image_with_title_axes_and_colour_bar():
    matrix = np.full((2, 168), 50.0)
    matrix[1, :24] = np.nan  # no data for a day: drawn as the "bad" colour, not as idle
    svg = _charts.utilization_heatmap(
        ["0", "1"], START, 168, matrix, idle_threshold_pct=5, salt="x"
    )
    assert svg.startswith("<svg")
    images = _images(svg)
    assert images and all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in images)
    assert "GPU utilization, per GPU, last 7 days (idle &lt; 5 %)" in svg
    assert "Hour (UTC)" in svg and "Utilization (%)" in svg and ">GPU<" in svg


def test_heatmap_escapes_hostile_labels():
    svg = _charts.utilization_heatmap(
        ['<b x="1">&', "ok"], START, 168, np.zeros((2, 168)), idle_threshold_pct=5, salt="x"
    )
    assert "<b " not in svg
    # text content: < > & escaped (quotes need no escaping outside attributes)
    assert '&lt;b x="1"&gt;&amp;' in svg


def test_cluster_wide_heatmap_has_no_gpu_axis():
    svg = _charts.utilization_heatmap(
        ["all GPUs"],
        START,
        168,
        np.full((1, 168), 30.0),
        idle_threshold_pct=5,
        salt="x",
        cluster_wide=True,
    )
    assert "cluster average" in svg and ">GPU<" not in svg
    assert _images(svg)


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


def test_a_store_opened_during_a_report_keeps_its_private_umask_after_the_report(
    tmp_path, monkeypatch
):
    # One counted umask for the process: the report giving back its own must not open the
    # store's next WAL to other users while the store is still open.
    db = create_fixture_db(tmp_path / "gpucost.duckdb")
    stores: list[Database] = []
    real_connect = report._connect

    def connect_then_open_a_store(path):
        con = real_connect(path)
        stores.append(Database.open(tmp_path / "other.duckdb"))
        return con

    monkeypatch.setattr(report, "_connect", connect_then_open_a_store)
    previous = os.umask(0o022)
    try:
        try:
            report.render_report(Config(store=StoreSettings(db=str(db))), tmp_path / "out")
            assert os.umask(0o077) == 0o077, "the report gave back the umask the store holds"
        finally:
            for store in stores:
                store.close()
        assert stores and os.umask(0o022) == 0o022
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
    build_snapshot_marts(con)  # as the build after that snapshot would
    con.close()
    result = report.render_report(Config(store=StoreSettings(db=str(db))), tmp_path / "out")
    html = result.index_html.read_text(encoding="utf-8")
    note = re.search(r"Partial days \(([^:]*):", html)
    assert note is not None and note.group(1) == "Fri 20 Nov 2026"
    assert "$448.80" in html  # the period is still 18-19 Nov: 224.40 x 2


def test_spend_chart_has_its_title_axes_units_and_both_series():
    days = [date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)]
    svg = _charts.spend_chart(
        days, [224.4, 448.8, 100.0], [132.0, 0.0, 50.0], currency="USD", symbol="$", salt="x"
    )
    assert "Daily spend and idle GPU cost (USD)" in svg
    assert "Day (UTC)" in svg and "USD per day" in svg
    assert "Spend" in svg and "Idle GPU cost" in svg
    assert "$400" in svg  # the money axis is labelled in the currency


def test_idle_bars_escape_hostile_names():
    svg = _charts.idle_by_cluster_chart(
        ["<img src=x onerror=alert(1)>", "b"],
        [300.0, 75.0],
        currency="EUR",
        symbol="€",
        period="30 days",
        salt="x",
    )
    assert "<img" not in svg and "&lt;img src=x onerror=alert(1)&gt;" in svg
    assert "EUR" in svg


def test_projection_chart_shows_projected_and_actual():
    days = [date(2026, 11, 18), date(2026, 11, 19)]
    svg = _charts.projection_chart(
        days, [100.0, 120.0], [90.0, 130.0], currency="USD", symbol="$", salt="x"
    )
    assert "Projected" in svg or "projected" in svg
    assert "Actual" in svg or "actual" in svg or "billed" in svg
