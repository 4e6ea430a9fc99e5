"""The Parquet lake: every snapshot table by UTC day, exported run by run over nights of the
simulator (real HTTP), read back equal to the store; reruns change nothing; a killed export
never leaves a run that looks exported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.lake import (
    MANIFEST,
    STATE_TABLES,
    TABLES,
    attach_lake,
    export_lake,
    read_manifest,
)
from pipeline.simulator import Fleet, FleetSpec, Simulator
from pipeline.snapshot import run_snapshot
from tests.snapshot_helpers import API_KEY, START, make_config

NIGHTS = 9


def _store_rows(db: Path, table: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        columns = [
            c
            for (c,) in con.execute(
                "select column_name from information_schema.columns "
                "where table_schema = ? and table_name = ? and column_name <> 'raw_body' "
                "order by ordinal_position",
                table.split("."),
            ).fetchall()
        ]
        names = ", ".join(columns)
        return con.execute(f"select {names} from {table} order by all").fetchall()
    finally:
        con.close()


def _lake_rows(lake: Path, table: str) -> list[tuple]:
    con = duckdb.connect()
    try:
        attach_lake(con, lake)
        return con.execute(f"select * from {table} order by all").fetchall()
    finally:
        con.close()


def _files(lake: Path) -> dict[str, float]:
    return {
        str(p.relative_to(lake)): p.stat().st_mtime_ns
        for p in lake.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def nightly(tmp_path_factory):
    """Nine nights of a 6-cluster fleet, the lake exported after every night (so that buckets
    revised by a later night are in the lake twice, as they were when first exported)."""
    root = tmp_path_factory.mktemp("lake")
    db, lake = root / "gpucost.duckdb", root / "lake"
    fleet = Fleet(FleetSpec(seed=7, clusters=6, start=START))
    exports = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPUCOST_API_KEY", API_KEY)
        with Simulator(fleet, api_key=API_KEY).run_in_thread(port=0) as url:
            config = make_config(db, url)
            for night in range(NIGHTS):
                fleet.set_clock(START + timedelta(days=night))
                assert run_snapshot(config).status == "complete"
                exports.append(export_lake(db, lake))
    return {"db": db, "lake": lake, "exports": exports}


def test_each_night_exports_only_its_new_run(nightly):
    assert [len(e.runs_exported) for e in nightly["exports"]] == [1] * NIGHTS
    assert [e.runs_already for e in nightly["exports"]] == list(range(NIGHTS))
    manifest = read_manifest(nightly["lake"])
    runs = [
        r
        for (r,) in duckdb.connect(str(nightly["db"]), read_only=True)
        .execute("select run_id from meta.runs order by run_id")
        .fetchall()
    ]
    assert sorted(manifest["runs"]) == runs


@pytest.mark.parametrize("table", list(TABLES))
def test_the_lake_reads_back_equal_to_the_store(nightly, table):
    """Every table, every row and column; the buckets revised by later nights come back as
    the store holds them (the newest snapshot's value, its GPUs as a set)."""
    store = _store_rows(nightly["db"], table)
    assert _lake_rows(nightly["lake"], table) == store
    if table in ("snap.cluster_snapshots", "snap.metric_points", "meta.runs"):
        assert store, f"{table} is empty: the comparison proves nothing"


def test_revised_buckets_are_in_the_lake_more_than_once_and_read_once(nightly):
    lake = nightly["lake"]
    manifest = read_manifest(lake)
    files = [str(lake / p) for p in manifest["files"]["snap.metric_points"]]
    con = duckdb.connect()
    stored = con.execute(
        "select count(*), count(distinct (cluster_id, bucket_at)) from read_parquet(?)", [files]
    ).fetchone()
    assert stored[0] > stored[1], "the nightly windows overlap: later nights revise buckets"
    assert len(_lake_rows(lake, "snap.metric_points")) == stored[1]


def test_files_are_partitioned_by_the_utc_day_of_their_rows(nightly):
    lake = nightly["lake"]
    manifest = read_manifest(lake)
    for table, (day_column, _) in TABLES.items():
        for relative in manifest["files"].get(table, []):
            folder = Path(relative).parent.name
            assert folder.startswith("day="), relative
            values = pq.read_table(lake / relative, columns=[day_column])[day_column]
            # aware UTC datetimes: their date is the UTC day
            days = {value.date() for value in values.to_pylist()}
            assert {str(d) for d in days} == {folder.removeprefix("day=")}, relative
    assert (lake / "snap" / "metric_points").is_dir()
    assert (lake / "meta" / "runs").is_dir()


def test_rerun_exports_nothing_and_changes_no_file(nightly):
    lake = nightly["lake"]
    before = _files(lake)
    again = export_lake(nightly["db"], lake)
    assert again.runs_exported == [] and again.files_written == 0
    assert again.runs_already == NIGHTS
    assert _files(lake) == before


def test_a_killed_export_leaves_no_run_that_looks_exported(tmp_path, nightly):
    """An export killed (-9) after its Parquet files are in place but before the manifest: the
    lake reads as before; the next export removes the leftovers and writes the run once."""
    db = tmp_path / "gpucost.duckdb"
    lake = tmp_path / "lake"
    con = duckdb.connect(str(nightly["db"]), read_only=True)
    last = con.execute("select max(run_id) from meta.runs").fetchone()[0]
    con.close()
    # the store without its last run, exported; then the whole store, killed
    subprocess.run(["cp", str(nightly["db"]), str(db)], check=True)
    with duckdb.connect(str(db)) as writable:
        writable.execute("update meta.runs set status = 'running' where run_id = ?", [last])
    export_lake(db, lake)
    with duckdb.connect(str(db)) as writable:
        writable.execute("update meta.runs set status = 'complete' where run_id = ?", [last])
    before = {t: _lake_rows(lake, t) for t in TABLES}
    script = textwrap.dedent(
        f"""
        import os, pipeline.lake as lake
        lake._write_manifest = lambda *args: os.kill(os.getpid(), 9)
        lake.export_lake({str(db)!r}, {str(lake)!r})
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], check=False, cwd=os.getcwd())
    assert killed.returncode == -9
    assert last not in read_manifest(lake)["runs"]
    leftovers = set(_files(lake)) - {
        p for files in read_manifest(lake)["files"].values() for p in files
    }
    assert any(p.endswith(".parquet") for p in leftovers), "the kill came after the files"
    assert {t: _lake_rows(lake, t) for t in TABLES} == before
    resumed = export_lake(db, lake)
    assert resumed.runs_exported == [last]
    for table in TABLES:
        assert _lake_rows(lake, table) == _store_rows(db, table), table
    manifest = read_manifest(lake)
    listed = {p for files in manifest["files"].values() for p in files}
    listed |= {entry["file"] for entry in manifest["state"].values()}
    assert {p for p in _files(lake) if p.endswith(".parquet")} == listed


def test_a_run_still_running_is_not_exported_until_it_finishes(tmp_path, nightly):
    db = tmp_path / "gpucost.duckdb"
    subprocess.run(["cp", str(nightly["db"]), str(db)], check=True)
    with duckdb.connect(str(db)) as con:
        first = con.execute("select min(run_id) from meta.runs").fetchone()[0]
        con.execute("update meta.runs set status = 'running' where run_id = ?", [first])
    result = export_lake(db, tmp_path / "lake")
    assert first not in result.runs_exported
    assert len(result.runs_exported) == NIGHTS - 1


def test_lake_export_command_prints_what_it_wrote(nightly, tmp_path):
    result = CliRunner().invoke(
        cli, ["lake", "export", "--db", str(nightly["db"]), "--lake", str(tmp_path / "l")]
    )
    assert result.exit_code == 0, result.output
    assert f"{NIGHTS} new runs" in result.output
    manifest = json.loads((tmp_path / "l" / MANIFEST).read_text())
    assert len(manifest["runs"]) == NIGHTS


def test_an_object_store_url_is_a_usage_error(nightly):
    result = CliRunner().invoke(
        cli, ["lake", "export", "--db", str(nightly["db"]), "--lake", "s3://bucket/lake"]
    )
    assert result.exit_code == 2
    assert "object store" in result.output


def test_a_missing_database_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(
        cli, ["lake", "export", "--db", str(tmp_path / "no.duckdb"), "--lake", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_state_tables_follow_the_store_and_only_a_changed_one_is_rewritten(tmp_path, nightly):
    """Budgets, closes and decisions (`STATE_TABLES`) are exported whole when they change: the
    lake then reads them back as the store holds them, the replaced file is gone, and the
    unchanged tables keep their files."""
    db = tmp_path / "copy.duckdb"
    db.write_bytes(nightly["db"].read_bytes())
    lake = tmp_path / "lake"
    export_lake(db, lake)
    before = read_manifest(lake)["state"]
    assert set(before) == set(STATE_TABLES)
    con = duckdb.connect(str(db))
    con.execute(
        "insert into meta.budgets values ('fleet', 'fleet', null, 1234.500000, 'USD'), "
        "('team', 'project', 'proj_a', 99.990000, 'EUR')"
    )
    con.close()
    again = export_lake(db, lake)
    assert again.files_written == 1 and again.runs_exported == []
    after = read_manifest(lake)["state"]
    assert {t for t in STATE_TABLES if after[t] != before[t]} == {"meta.budgets"}
    assert not (lake / before["meta.budgets"]["file"]).exists()
    for table in STATE_TABLES:
        assert (lake / after[table]["file"]).exists()
        assert _lake_rows(lake, table) == _store_rows(db, table), table
    assert [r[:2] for r in _lake_rows(lake, "meta.budgets")] == [
        ("fleet", "fleet"),
        ("team", "project"),
    ]
