"""The marts' declared columns: one TOML file beside each model, as dbt's `contract: enforced`.

`sql/marts/<name>.toml` lists the mart's columns in order, each with its DuckDB type (as
`information_schema.columns.data_type` spells it: `DECIMAL(18,6)`, `VARCHAR`,
`TIMESTAMP WITH TIME ZONE`), unit and description, and the mart's grain:

    grain = "one row per UTC day and currency"

    [[columns]]
    name = "day"
    type = "DATE"
    unit = "UTC date"
    description = "the day the buckets start in"

The build checks every mart against its declaration (`mismatches`, called by
`pipeline.models.build_on_connection`); docs/marts.md's column tables are generated from them
(`pipeline.docgen`); the tests read them instead of keeping their own lists.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import duckdb

from pipeline.resources import sql_dir

SUFFIX = ".toml"


class ContractFileError(ValueError):
    """A declaration file is malformed (the message names the file and the key)."""


@dataclass(frozen=True)
class Column:
    """One declared column: name, DuckDB type, unit ("" when none) and description."""

    name: str
    type: str
    unit: str = ""
    description: str = ""


@dataclass(frozen=True)
class Contract:
    """The declared columns of one mart, in order, and the grain of its rows."""

    mart: str
    grain: str
    columns: tuple[Column, ...]
    path: Path

    @property
    def names(self) -> list[str]:
        """The column names, in order."""
        return [c.name for c in self.columns]


def contract_path(model_path: Path) -> Path:
    """The declaration file beside a model file (`fleet_daily.sql` -> `fleet_daily.toml`)."""
    return model_path.with_suffix(SUFFIX)


def _text(entry: dict[str, object], key: str, where: str, *, required: bool) -> str:
    value = entry.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise ContractFileError(f"{where}: `{key}` must be a non-empty string, got {value!r}")
    return value


def load_contract(path: Path) -> Contract:
    """Read one declaration file; `ContractFileError` names the file and key when malformed."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ContractFileError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"grain", "columns"}
    if unknown:
        raise ContractFileError(f"{path}: unknown keys {sorted(unknown)}")
    entries = data.get("columns")
    if not isinstance(entries, list) or not entries:
        raise ContractFileError(f"{path}: `[[columns]]` must list at least one column")
    columns = []
    for index, entry in enumerate(entries):
        where = f"{path}: columns[{index}]"
        extra = set(entry) - {"name", "type", "unit", "description"}
        if extra:
            raise ContractFileError(f"{where}: unknown keys {sorted(extra)}")
        columns.append(
            Column(
                name=_text(entry, "name", where, required=True),
                type=_text(entry, "type", where, required=True).upper(),
                unit=_text(entry, "unit", where, required=False),
                description=_text(entry, "description", where, required=False),
            )
        )
    names = [c.name for c in columns]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ContractFileError(f"{path}: columns declared twice: {duplicates}")
    grain = data.get("grain", "")
    if not isinstance(grain, str):
        raise ContractFileError(f"{path}: `grain` must be a string, got {grain!r}")
    return Contract(mart=path.stem, grain=grain, columns=tuple(columns), path=path)


def load_contracts(root: Path | None = None) -> dict[str, Contract]:
    """Every declaration under `root/marts` (default: the project's `sql/`), by mart name."""
    root = sql_dir() if root is None else root
    return {p.stem: load_contract(p) for p in sorted((root / "marts").glob(f"*{SUFFIX}"))}


def actual_columns(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> list[tuple[str, str]]:
    """`(name, DuckDB type)` of a table's or view's columns, in order."""
    return [
        (str(n), str(t))
        for n, t in con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = ? order by ordinal_position",
            [schema, name],
        ).fetchall()
    ]


def mismatches(contract: Contract, actual: list[tuple[str, str]]) -> list[str]:
    """How the built columns differ from the declaration, one line each (none: they match)."""
    problems = []
    declared = {c.name: c for c in contract.columns}
    built = dict(actual)
    for column in contract.columns:
        if column.name not in built:
            problems.append(f"column `{column.name}` is declared but not built")
        elif built[column.name].upper() != column.type:
            problems.append(
                f"column `{column.name}` is built as {built[column.name]}, declared {column.type}"
            )
    for name, type_ in actual:
        if name not in declared:
            problems.append(f"column `{name}` ({type_}) is built but not declared")
    if not problems and [n for n, _ in actual] != contract.names:
        problems.append(
            f"columns are built in the order {[n for n, _ in actual]}, declared {contract.names}"
        )
    return problems
