"""Migrations: found by their numbered names, applied in order, each in its own transaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import migrate
from pipeline.connection import Database, StoreError


@pytest.fixture
def shipped(tmp_path, monkeypatch) -> Path:
    """A migrations folder of the test's own, in place of the one shipped."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", folder)
    return folder


def _versions(db: Database) -> list[tuple[int, str]]:
    return db.con.execute("select version, name from meta.schema_version order by 1").fetchall()


def test_only_numbered_sql_files_are_migrations_in_their_order(shipped):
    (shipped / "0002_second.sql").write_text("create table b (i integer);")
    (shipped / "0001_first.sql").write_text("create table a (i integer);")
    (shipped / "notes.sql").write_text("this is not SQL")
    (shipped / "0003_third.txt").write_text("not a migration either")
    assert [(m.version, m.name) for m in migrate.migrations()] == [
        (1, "0001_first.sql"),
        (2, "0002_second.sql"),
    ]
    assert migrate.code_schema_version() == 2


def test_a_new_database_gets_every_migration_recorded(shipped, tmp_path):
    (shipped / "0001_first.sql").write_text("create table a (i integer);")
    (shipped / "0002_second.sql").write_text("create table b (i integer);")
    db = Database.open(tmp_path / "g.duckdb")
    try:
        assert migrate.schema_version(db.con, path=db.path, read_only=False) == 0
        migrate.migrate(db.con, path=db.path, read_only=False)
        assert _versions(db) == [(1, "0001_first.sql"), (2, "0002_second.sql")]
        migrate.migrate(db.con, path=db.path, read_only=False)  # up to date: nothing applied
        assert len(_versions(db)) == 2
    finally:
        db.close()


def test_a_failing_migration_is_rolled_back_and_the_version_stays(shipped, tmp_path):
    (shipped / "0001_first.sql").write_text("create table a (i integer);")
    (shipped / "0002_broken.sql").write_text(
        "create table b (i integer); select * from no_such_table;"
    )
    db = Database.open(tmp_path / "g.duckdb")
    try:
        with pytest.raises(StoreError, match="migration 0002_broken.sql failed"):
            migrate.migrate(db.con, path=db.path, read_only=False)
        assert _versions(db) == [(1, "0001_first.sql")]
        tables = db.con.execute("select table_name from duckdb_tables() order by 1").fetchall()
        assert tables == [("a",), ("schema_version",)]
    finally:
        db.close()


def test_a_reader_never_migrates_an_older_database(shipped, tmp_path):
    (shipped / "0001_first.sql").write_text("create table a (i integer);")
    db = Database.open(tmp_path / "g.duckdb")
    migrate.migrate(db.con, path=db.path, read_only=False)
    db.close()
    (shipped / "0002_second.sql").write_text("create table b (i integer);")
    reader = Database.open(tmp_path / "g.duckdb", read_only=True)
    try:
        with pytest.raises(StoreError, match="older than 2; open it once for writing"):
            migrate.migrate(reader.con, path=reader.path, read_only=True)
    finally:
        reader.close()


def test_a_duckdb_file_that_is_not_gpucost_is_named_so_to_a_reader(tmp_path):
    db = Database.open(tmp_path / "other.duckdb")
    db.con.execute("create table something (i integer)")
    db.close()
    reader = Database.open(tmp_path / "other.duckdb", read_only=True)
    try:
        with pytest.raises(StoreError, match="is not a gpucost database"):
            migrate.schema_version(reader.con, path=reader.path, read_only=True)
    finally:
        reader.close()
