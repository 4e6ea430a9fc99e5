"""The snapshot tables' declarations (pipeline/tables.py) are what the migrations create."""

from __future__ import annotations

import duckdb
import pytest

from pipeline.store import migrations
from pipeline.tables import TABLES, insert_rows


@pytest.fixture(scope="module")
def fresh() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    for _version, _name, sql in migrations():
        con.execute(sql)
    return con


def _created(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str, bool]]:
    return [
        (name, type_, nullable == "YES")
        for name, type_, nullable in con.execute(
            "select column_name, data_type, is_nullable from information_schema.columns"
            " where table_schema = 'snap' and table_name = ? order by ordinal_position",
            [table],
        ).fetchall()
    ]


@pytest.mark.parametrize("table", list(TABLES))
def test_the_migrations_create_exactly_the_declared_columns_and_types(fresh, table) -> None:
    declared = [(c.name, c.type, not c.not_null) for c in TABLES[table].columns]
    assert _created(fresh, table) == declared


def test_every_snap_table_of_the_migrations_is_declared(fresh) -> None:
    created = {
        r[0]
        for r in fresh.execute(
            "select table_name from information_schema.tables where table_schema = 'snap'"
        ).fetchall()
    }
    assert created == set(TABLES)


def test_the_declared_keys_are_the_primary_keys_of_the_snapshot_tables(fresh) -> None:
    keys = {
        table: sorted(cols)
        for table, cols in fresh.execute(
            "select table_name, constraint_column_names from duckdb_constraints()"
            " where schema_name = 'snap' and constraint_type = 'PRIMARY KEY'"
        ).fetchall()
    }
    declared = {t.name: sorted(t.key) for t in TABLES.values() if t.name in keys}
    assert keys == declared
    assert set(keys) == {
        "cluster_snapshots",
        "cost_components",
        "projections",
        "alerts",
        "gpu_current",
    }


def test_insert_rows_fills_what_is_not_given_with_null_and_refuses_unknown_columns(
    fresh,
) -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 11, 20, 3, tzinfo=UTC)
    row = {
        "run_id": "r",
        "cluster_id": "c",
        "snapshot_at": at,
        "component": "gpu",
        "cost_per_hour": 1,
    }
    assert insert_rows(fresh, "cost_components", [row]) == 1
    assert fresh.execute("select currency from snap.cost_components").fetchall() == [(None,)]
    with pytest.raises(KeyError, match="no column 'colour'"):
        insert_rows(fresh, "cost_components", [{**row, "colour": "red"}])
