"""`gpucost demo`: the whole product in one command, against the in-process simulator."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import duckdb
from click.testing import CliRunner

from pipeline.cli import cli


def _demo(tmp_path, *args):
    db = tmp_path / "demo.duckdb"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["demo", "--db", str(db), "--out", str(out), "--nights", "3", "--clusters", "8", *args],
    )
    return result, db, out


def test_demo_ends_with_the_report_path_and_a_query_hint_that_works(tmp_path):
    result, db, out = _demo(tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == str((out / "index.html").resolve())
    assert (out / "index.html").is_file()
    for name in ["fleet_daily.csv", "recommendations.csv", "focus.csv"]:
        assert any(line.strip() == str((out / name).resolve()) for line in lines)
    con = duckdb.connect(str(db), read_only=True)
    runs = con.execute("select status, count(*) from meta.runs group by all").fetchall()
    clusters = con.execute("select count(*) from marts.clusters").fetchone()[0]
    expected = con.execute("select count(*) from marts.recommendations").fetchone()[0]
    con.close()
    assert runs == [("complete", 3)]
    assert 0 < clusters <= 8
    # The hint is a command a user can paste: run it exactly as printed, from another folder.
    (hint,) = [line for line in lines if line.startswith("explore the data with: ")]
    command = shlex.split(hint.removeprefix("explore the data with: "))
    assert Path(command[0]).name == "gpucost"
    ran = subprocess.run(
        [*command, "--format", "csv"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    header, *rows = ran.stdout.splitlines()
    assert header == "kind,cluster_id,monthly_savings,currency"
    assert len(rows) == expected


def test_demo_rerun_replaces_its_own_database(tmp_path):
    assert _demo(tmp_path)[0].exit_code == 0
    result, db, _ = _demo(tmp_path)
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("select count(*) from meta.runs").fetchone()[0] == 3
    con.close()


def test_demo_refuses_to_replace_a_database_that_read_a_real_provider(tmp_path):
    db = tmp_path / "demo.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create schema meta")
    con.execute("create table meta.runs (api_base_url varchar)")
    con.execute("insert into meta.runs values ('https://api.example-gpu.cloud/v1')")
    con.close()
    result, _, _ = _demo(tmp_path)
    assert result.exit_code == 2
    assert "not a demo database" in result.output
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("select count(*) from meta.runs").fetchone()[0] == 1
    con.close()
