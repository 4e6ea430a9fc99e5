"""Ad-hoc, read-only SQL over a gpucost database, printed as a table, CSV or JSON lines.

`make install` brings no `duckdb` program, so `gpucost query` is how a user explores the marts
(`marts.*`), the snapshot tables (`snap.*`) and the run ledger (`meta.runs`) with what is already
installed. The connection is read-only: a query cannot change the database, and a nightly run
that holds the database is reported as the lock (exit 5), not as a crash.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import duckdb
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline.duck import connect
from pipeline.errors import ConfigError

OutputFormat = Literal["table", "csv", "json"]

DEFAULT_MAX_ROWS = 50
"""Rows a table shows before it says how many more there are (CSV and JSON print every row)."""


@dataclass(frozen=True)
class QueryResult:
    """The columns and rows of one query; `rows` holds Python values (money as Decimal)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


def run_query(db: str | Path, sql: str) -> QueryResult:
    """Run `sql` on the database `db` opened read-only and return every row.

    Raises ConfigError (exit 2) when the file is missing or the SQL is wrong or tries to write,
    `LockedError` (exit 5) when a nightly run holds the database.
    """
    path = Path(db)
    if not path.is_file():
        raise ConfigError(f"database {path} does not exist (pass --db or set GPUCOST_DB)")
    try:
        # duck.connect: never an extension download; a run holding the file is exit 5.
        con = connect(path, read_only=True)
    except duckdb.Error as exc:
        raise ConfigError(f"cannot open {path} as a DuckDB database: {exc}") from None
    try:
        con.execute("set TimeZone = 'UTC'")
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchall() if columns else []
    except duckdb.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"query failed: {first_line}") from None
    finally:
        con.close()
    return QueryResult(columns=columns, rows=rows)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")  # money keeps every digit; a float would round it
    if isinstance(value, datetime | date):
        return _text(value)
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def format_result(
    result: QueryResult,
    output: OutputFormat = "table",
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    width: int | None = None,
) -> str:
    """The result as text: a table for people, CSV or JSON lines (one object per row) for tools."""
    if output == "json":
        return "".join(
            json.dumps({c: _json_value(v) for c, v in zip(result.columns, row, strict=True)}) + "\n"
            for row in result.rows
        )
    if output == "csv":
        import csv

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([_text(v) for v in row] for row in result.rows)
        return buffer.getvalue()
    table = Table(show_lines=False, header_style="bold")
    for i, name in enumerate(result.columns):
        numeric = any(
            isinstance(row[i], int | float | Decimal) and not isinstance(row[i], bool)
            for row in result.rows[:max_rows]
        )
        table.add_column(name, overflow="fold", justify="right" if numeric else "left")
    for row in result.rows[:max_rows]:
        # Text, not str: a cluster named `[bold]x` is data, never rich markup.
        table.add_row(*(Text(_text(v)) for v in row))
    console = Console(file=io.StringIO(), width=width or 160, color_system=None, highlight=False)
    console.print(table)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    shown = min(len(result.rows), max_rows)
    more = len(result.rows) - shown
    text += f"{len(result.rows)} row{'s' if len(result.rows) != 1 else ''}"
    text += f" ({more} more not shown; --max-rows or --format csv)\n" if more else "\n"
    return text
