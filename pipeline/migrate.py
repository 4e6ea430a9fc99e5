"""The database's schema: the migrations shipped (`pipeline/migrations/NNNN_*.sql`), applied in
order, each in its own transaction, and recorded in `meta.schema_version`.

A database newer than this code is refused (an older gpucost must not write tables it does not
know); a read-only open of an older one is refused too (a reader never migrates).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import duckdb

from pipeline.connection import StoreError, rollback_quietly
from pipeline.log import get_logger

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")

_log = get_logger("store")


class Migration(NamedTuple):
    """One migration file: its version (the file's number), file name and SQL."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations shipped with this code: (version, file name, SQL), in order."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match:
            found.append(
                Migration(int(match.group(1)), path.name, path.read_text(encoding="utf-8"))
            )
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):  # pragma: no cover - a packaging mistake
        raise StoreError(f"two migrations share a version number in {MIGRATIONS_DIR}")
    return found


def code_schema_version() -> int:
    """The schema version this code writes (the highest migration shipped)."""
    found = migrations()
    return found[-1].version if found else 0


def schema_version(con: duckdb.DuckDBPyConnection, *, path: Path, read_only: bool) -> int:
    """The last migration applied to the database on `con` (0 for a new one).

    A writer creates `meta.schema_version` when missing; a reader of a file without it gets a
    `StoreError` saying it is not a gpucost database.
    """
    if not read_only:
        con.execute("create schema if not exists meta")
        con.execute(
            "create table if not exists meta.schema_version ("
            " version integer primary key, name varchar not null,"
            " applied_at timestamptz not null)"
        )
    # Asked of the catalog first: a missing table would make DuckDB look for a Python object
    # named `schema_version` in the caller's scope (a replacement scan) and find this function.
    found = con.execute(
        "select count(*) from duckdb_tables() where database_name = current_database()"
        " and schema_name = 'meta' and table_name = 'schema_version'"
    ).fetchall()
    if not found[0][0]:
        raise StoreError(f"{path} is not a gpucost database")
    rows = con.execute("select max(version) from meta.schema_version").fetchall()
    return rows[0][0] or 0


def migrate(con: duckdb.DuckDBPyConnection, *, path: Path, read_only: bool) -> None:
    """Apply the migrations the database on `con` lacks, each in its own transaction.

    Raises `StoreError` for a database newer than this code, an older one opened read-only, or a
    migration that fails (rolled back: the database stays at the previous version).
    """
    current = schema_version(con, path=path, read_only=read_only)
    latest = code_schema_version()
    if current > latest:
        raise StoreError(
            f"database {path} has schema version {current}, newer than this gpucost "
            f"understands ({latest}); upgrade gpucost"
        )
    if current == latest:
        return
    if read_only:
        raise StoreError(
            f"database {path} has schema version {current}, older than {latest}; "
            "open it once for writing (e.g. gpucost snapshot) to migrate it"
        )
    for version, name, sql in migrations():
        if version <= current:
            continue
        con.begin()
        try:
            con.execute(sql)
            con.execute(
                "insert into meta.schema_version values (?, ?, ?)",
                [version, name, datetime.now(UTC)],
            )
            con.commit()
        except duckdb.Error as exc:
            rollback_quietly(con)
            raise StoreError(f"migration {name} failed: {exc}") from None
        _log.debug("applied migration %s", name)
