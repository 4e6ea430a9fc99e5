"""The report never fails on anything the store holds, writes all of its files or none, never
writes into a folder gpucost did not make unless asked, and shows no control characters.

The database is the hand-computed fixture (tests/report_fixtures.py), to which each test adds
what a hostile provider or a broken night could have left in it."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipeline.config import Config, StoreSettings
from pipeline.report import OUT_MARKER, ReportError, check_out_dir, render_report
from tests.report_fixtures import create_fixture_db


def _config(db: Path) -> Config:
    return Config(store=StoreSettings(db=str(db)))


def _gpucost(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "gpucost"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "pipeline", *args]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}
    return subprocess.run(_gpucost(*args), env=env, capture_output=True, text=True, timeout=240)


def _snapshot_of(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
    }


@pytest.mark.parametrize(
    "instant",
    [
        "9999-12-31 23:00:00+00",
        "9999-12-31 23:59:59.999999+00",
        "0001-01-01 00:00:00+00",
        "1969-06-01 00:00:00+00",
        "10000-01-01 00:00:00+00",  # beyond Python's datetime: DuckDB hands it over as text
        "200000-01-01 00:00:00+00",
    ],
)
def test_absurd_timestamps_in_the_store_never_fail_the_report(tmp_path: Path, instant: str) -> None:
    db = create_fixture_db(tmp_path / "g.duckdb")
    con = duckdb.connect(str(db))
    when = "cast(? as timestamptz)"
    con.execute(
        f"insert into snap.metric_points by name select * replace ({when} as bucket_at)"
        " from snap.metric_points limit 1",
        [instant],
    )
    con.execute(
        f"insert into snap.cluster_snapshots by name select * replace ({when} as snapshot_at)"
        " from snap.cluster_snapshots limit 1",
        [instant],
    )
    # ... and in the marts, as a build from such rows would leave them
    con.execute(
        f"update marts.clusters set last_snapshot_at = {when} where cluster_id = 'cls_a'", [instant]
    )
    for mart in ("fleet_daily", "idle_waste_daily"):
        con.execute(
            f"insert into marts.{mart} by name select * replace ({when}::date as day)"
            f" from marts.{mart} limit 1",
            [instant],
        )
    con.close()
    result = render_report(_config(db), tmp_path / "out")
    html = result.index_html.read_text(encoding="utf-8")
    assert "Fleet" in html or "<html" in html
    # The period is still the fixture's two days, not a month of year 9999.
    assert "2026" in html
    assert {p.name for p in result.files} >= {"index.html", "fleet_daily.csv", "focus.csv"}


def test_a_failed_report_leaves_the_previous_one_whole(tmp_path: Path) -> None:
    db = create_fixture_db(tmp_path / "g.duckdb")
    out = tmp_path / "out"
    render_report(_config(db), out)
    before = _snapshot_of(out)
    # A night later the marts have new rows (new CSVs would differ), and a mart the HTML
    # needs, not the CSVs, fails when read: the failure comes after the CSVs are written.
    con = duckdb.connect(str(db))
    con.execute("update marts.fleet_daily set cost = cost + 1")
    con.execute("alter table marts.utilization_heatmap rename to heatmap_kept")
    con.execute(
        "create view marts.utilization_heatmap as select * from marts.heatmap_kept "
        "where error('the database broke mid-report') is null"
    )
    con.close()
    with pytest.raises(duckdb.Error):
        render_report(_config(db), out)
    assert _snapshot_of(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.duckdb", "out"]


def test_a_report_killed_midway_leaves_no_partial_report(tmp_path: Path) -> None:
    db = create_fixture_db(tmp_path / "g.duckdb")
    out = tmp_path / "out"
    render_report(_config(db), out)
    before = _snapshot_of(out)
    con = duckdb.connect(str(db))
    con.execute("update marts.fleet_daily set cost = cost + 1")  # new CSVs would differ
    con.close()
    # The renderer dies after the CSVs are written, before index.html (a kill, an OOM).
    code = (
        "import os, sys\n"
        "import pipeline.report as r\n"
        "from pipeline.config import Config, StoreSettings\n"
        "r._context = lambda *a, **k: os._exit(9)\n"
        "r.render_report(Config(store=StoreSettings(db=sys.argv[1])), r.Path(sys.argv[2]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(db), str(out)], timeout=240)
    assert proc.returncode == 9
    assert _snapshot_of(out) == before
    # The next report cleans up after the dead one (temporary folders older than an hour).
    for stale in tmp_path.glob(".out.*"):
        os.utime(stale, (0, 0))
    render_report(_config(db), out)
    assert not list(tmp_path.glob(".out.*"))


def test_a_non_empty_folder_gpucost_did_not_make_is_refused_unless_forced(tmp_path: Path) -> None:
    db = create_fixture_db(tmp_path / "g.duckdb")
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n", encoding="utf-8")
    proc = _cli("report", "--db", str(db), "--out", str(foreign))
    assert proc.returncode == 2, proc.stderr
    assert f"report folder {foreign} is not empty and gpucost did not make it" in proc.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    forced = _cli("report", "--db", str(db), "--out", str(foreign), "--force-out")
    assert forced.returncode == 0, forced.stderr
    names = {p.name for p in foreign.iterdir()}
    assert {"notes.txt", "index.html", "focus.csv", OUT_MARKER} <= names
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "mine\n"
    # Marked as gpucost's now: the next report replaces it without being asked.
    again = _cli("report", "--db", str(db), "--out", str(foreign))
    assert again.returncode == 0, again.stderr


def test_the_root_folder_is_refused() -> None:
    with pytest.raises(ReportError, match="gpucost did not make it"):
        check_out_dir(Path("/"))


def test_a_report_folder_from_before_the_marker_is_still_gpucosts(tmp_path: Path) -> None:
    old = tmp_path / "out"
    old.mkdir()
    for name in ("index.html", "fleet_daily.csv", "focus.csv", ".index.html.abc123"):
        (old / name).write_text("x", encoding="utf-8")
    check_out_dir(old)  # no error


def test_an_out_folder_that_cannot_be_made_is_exit_2(tmp_path: Path) -> None:
    db = create_fixture_db(tmp_path / "g.duckdb")
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    for out in (blocker / "out", blocker):
        proc = _cli("report", "--db", str(db), "--out", str(out))
        assert proc.returncode == 2, proc.stderr
        assert str(out) in proc.stderr and "unexpected" not in proc.stderr


def test_control_characters_never_reach_the_html(tmp_path: Path) -> None:
    db = create_fixture_db(tmp_path / "g.duckdb")
    con = duckdb.connect(str(db))
    con.execute(
        "update marts.clusters set name = 'nul\x00name\x07bell\x1bend' where cluster_id = 'cls_a'"
    )
    con.execute("update marts.recommendations set reason = reason || '\x00\x0b'")
    con.close()
    result = render_report(_config(db), tmp_path / "out")
    html = result.index_html.read_text(encoding="utf-8")
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", html)
    assert "nul\ufffdname\ufffdbell\ufffdend" in html


def test_cluster_ids_that_slug_alike_get_distinct_anchors(tmp_path: Path) -> None:
    db = create_fixture_db(tmp_path / "g.duckdb")
    con = duckdb.connect(str(db))
    # every table holding the ids (the views among the marts read them)
    tables = con.execute(
        "select table_schema, table_name from information_schema.columns"
        " join information_schema.tables using (table_schema, table_name)"
        " where column_name = 'cluster_id' and table_type = 'BASE TABLE'"
        " and table_schema in ('snap', 'intermediate', 'marts')"
    ).fetchall()
    for schema, table in tables:
        con.execute(f"update {schema}.{table} set cluster_id = 'a/b' where cluster_id = 'cls_a'")
        con.execute(f"update {schema}.{table} set cluster_id = 'a_b' where cluster_id = 'cls_b'")
    con.close()
    html = render_report(_config(db), tmp_path / "out").index_html.read_text(encoding="utf-8")
    ids = re.findall(r'<article class="cluster" id="([^"]+)"', html)
    assert len(ids) == len(set(ids)) == 4
    links = set(re.findall(r'href="#(cluster-[^"]+)"', html))
    assert links <= set(ids) and len(links) >= 2
