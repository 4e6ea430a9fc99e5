"""The marts declare their columns once (sql/marts/<name>.toml) and the build enforces them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Thresholds
from pipeline.contracts import (
    Column,
    Contract,
    ContractFileError,
    load_contract,
    load_contracts,
    mismatches,
)
from pipeline.models import BuildError, build_on_connection, discover_models
from tests.models_fixtures import T0, FixtureDB

DECLARED = load_contracts()


def test_every_mart_declares_its_columns_and_every_declaration_is_a_mart():
    marts = {m.name for m in discover_models() if m.layer == "marts"}
    assert set(DECLARED) == marts


@pytest.mark.parametrize("mart", sorted(DECLARED))
def test_money_is_declared_decimal_and_every_mart_states_its_grain(mart):
    for column in DECLARED[mart].columns:
        if column.unit.startswith("money"):
            assert column.type == "DECIMAL(18,6)", (mart, column.name)
        assert column.type == column.type.strip() and column.type, (mart, column.name)
    assert DECLARED[mart].grain, f"{mart} declares no grain"


def _contract(*columns: tuple[str, str]) -> Contract:
    return Contract("m", "", tuple(Column(n, t) for n, t in columns), Path("m.toml"))


def test_matching_columns_have_no_mismatch():
    contract = _contract(("a", "VARCHAR"), ("b", "DECIMAL(18,6)"))
    assert mismatches(contract, [("a", "VARCHAR"), ("b", "DECIMAL(18,6)")]) == []


def test_each_way_a_mart_drifts_from_its_declaration_is_named():
    contract = _contract(("a", "VARCHAR"), ("b", "DECIMAL(18,6)"), ("c", "DATE"))
    problems = mismatches(contract, [("a", "VARCHAR"), ("b", "DOUBLE"), ("d", "BIGINT")])
    assert problems == [
        "column `b` is built as DOUBLE, declared DECIMAL(18,6)",
        "column `c` is declared but not built",
        "column `d` (BIGINT) is built but not declared",
    ]
    assert mismatches(contract, [("b", "DECIMAL(18,6)"), ("a", "VARCHAR"), ("c", "DATE")]) == [
        "columns are built in the order ['b', 'a', 'c'], declared ['a', 'b', 'c']"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[columns]]\nname = 'a'\n", "`type` must be a non-empty string"),
        ("grain = 'x'\n", "must list at least one column"),
        ("[[columns]]\nname = 'a'\ntype = 'DATE'\nunits = 'd'\n", "unknown keys \\['units'\\]"),
        (
            "[[columns]]\nname = 'a'\ntype = 'DATE'\n[[columns]]\nname = 'a'\ntype = 'DATE'\n",
            "declared twice",
        ),
        ("[[columns]\n", "not valid TOML"),
    ],
)
def test_a_malformed_declaration_is_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ContractFileError, match=message) as caught:
        load_contract(path)
    assert str(path) in str(caught.value)


def _mart(root: Path, sql: str, declaration: str) -> None:
    (root / "marts").mkdir(parents=True)
    (root / "marts" / "m.sql").write_text(sql, encoding="utf-8")
    (root / "marts" / "m.toml").write_text(declaration, encoding="utf-8")


def test_a_build_whose_mart_drifts_from_its_declaration_fails_naming_mart_and_column(tmp_path):
    _mart(
        tmp_path,
        "select cluster_id, gpu_count from snap.cluster_snapshots",
        "[[columns]]\nname = 'cluster_id'\ntype = 'VARCHAR'\n"
        "[[columns]]\nname = 'gpu_count'\ntype = 'BIGINT'\n",
    )
    db = FixtureDB()
    db.snapshot("c1", T0)
    with pytest.raises(
        BuildError, match="marts.m .*`gpu_count` is built as INTEGER, declared BIGINT"
    ):
        build_on_connection(db.con, Thresholds(), root=tmp_path)
    tables = db.con.execute("select table_name from duckdb_tables() where schema_name = 'marts'")
    assert tables.fetchall() == []  # rolled back: the marts stay as the last good build


def test_a_build_whose_mart_matches_its_declaration_succeeds(tmp_path):
    _mart(
        tmp_path,
        "select cluster_id, gpu_count from snap.cluster_snapshots",
        "[[columns]]\nname = 'cluster_id'\ntype = 'VARCHAR'\n"
        "[[columns]]\nname = 'gpu_count'\ntype = 'INTEGER'\n",
    )
    db = FixtureDB()
    db.snapshot("c1", T0)
    result = build_on_connection(db.con, Thresholds(), root=tmp_path)
    assert result.rows_per_mart == {"m": 1}
