"""`gpucost query`: read-only SQL over the database, as a table, CSV or JSON lines."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from decimal import Decimal

import duckdb
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.query import run_query


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "q.duckdb"
    con = duckdb.connect(str(path))
    con.execute("create schema marts")
    con.execute(
        "create table marts.recommendations (rec_id varchar, kind varchar, "
        "monthly_savings decimal(18, 6), currency varchar, first_seen_at timestamptz)"
    )
    con.execute(
        "insert into marts.recommendations values "
        "('r1', 'stop_idle', 8928.123456, 'USD', '2026-11-20 03:00:00+00'), "
        "('r2', '[bold red]=cmd|calc', 0.000001, 'EUR', null)"
    )
    con.close()
    return path


def _query(db, *args):
    return CliRunner().invoke(cli, ["query", "--db", str(db), *args])


def test_query_prints_a_table_with_every_digit_of_money(db):
    result = _query(db, "select rec_id, monthly_savings from marts.recommendations order by 1")
    assert result.exit_code == 0, result.output
    assert "8928.123456" in result.output and "0.000001" in result.output
    assert result.output.rstrip().endswith("2 rows")


def test_query_table_shows_hostile_text_as_text_not_markup(db):
    result = _query(db, "select kind from marts.recommendations where rec_id = 'r2'")
    assert result.exit_code == 0, result.output
    assert "[bold red]=cmd|calc" in result.output


def test_query_table_says_how_many_rows_it_did_not_show(db):
    result = _query(db, "select * from range(120)", "--max-rows", "10")
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(
        "120 rows (110 more not shown; --max-rows or --format csv)"
    )


def test_query_csv_and_json_carry_every_row_exactly(db):
    sql = "select rec_id, monthly_savings, first_seen_at from marts.recommendations order by 1"
    as_csv = _query(db, sql, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert [r["monthly_savings"] for r in rows] == ["8928.123456", "0.000001"]
    assert rows[0]["first_seen_at"] == "2026-11-20T03:00:00Z" and rows[1]["first_seen_at"] == ""
    as_json = _query(db, sql, "--format", "json")
    records = [json.loads(line) for line in as_json.output.splitlines()]
    assert [Decimal(r["monthly_savings"]) for r in records] == [
        Decimal("8928.123456"),
        Decimal("0.000001"),
    ]
    assert records[1]["first_seen_at"] is None


def test_query_cannot_change_the_database(db):
    result = _query(db, "delete from marts.recommendations")
    assert result.exit_code == 2
    assert "read-only" in result.output
    assert run_query(db, "select count(*) from marts.recommendations").rows == [(2,)]


def test_query_names_a_missing_database_and_a_wrong_query(tmp_path, db):
    missing = _query(tmp_path / "none.duckdb", "select 1")
    assert missing.exit_code == 2 and "does not exist" in missing.output
    wrong = _query(db, "select * from marts.nope")
    assert wrong.exit_code == 2 and "query failed" in wrong.output
    assert len(wrong.output.strip().splitlines()) == 1


def test_query_while_a_run_holds_the_database_is_the_lock_exit(db):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, duckdb
                con = duckdb.connect({str(db)!r})
                print("held", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = _query(db, "select 1")
        assert result.exit_code == 5, result.output
    finally:
        holder.communicate("", timeout=30)
