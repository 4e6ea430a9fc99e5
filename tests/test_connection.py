"""The database file: lock, private modes held by a counted umask, transactions, reconnect."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from pipeline import duck
from pipeline.connection import (
    Database,
    StoreWriteError,
    lock_path,
    private_umask,
    transaction,
    write_error,
)
from pipeline.errors import ConfigError, LockedError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual umask of a shell (0022) around the test, restored after it."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_duckdb_refuses_a_database_file_created_beforehand_so_it_must_create_it_itself(tmp_path):
    # Why the store cannot create its file 0600 with os.open and hand it to DuckDB: DuckDB
    # takes only a file it wrote. If this ever passes, a local mode could replace the umask.
    path = tmp_path / "pre.duckdb"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    with pytest.raises(ConfigError, match="not a valid DuckDB database"):
        duck.connect(path).close()


def test_a_wal_deleted_at_a_checkpoint_is_born_private_again(tmp_path, open_umask):
    # DuckDB deletes its WAL at a checkpoint and creates a new one at the next write, with the
    # process's umask: a mode set on the first WAL alone would be lost after the first
    # checkpoint of the night.
    db = Database.open(tmp_path / "g.duckdb")
    wal = tmp_path / "g.duckdb.wal"
    try:
        db.con.execute("create table t as select range as i from range(1000)")
        assert wal.exists() and _mode(wal) == 0o600
        db.con.execute("checkpoint")
        assert not wal.exists(), "DuckDB kept its WAL across a checkpoint: revisit the umask"
        db.con.execute("insert into t select range from range(10)")
        assert wal.exists() and _mode(wal) == 0o600
    finally:
        db.close()
    assert _mode(tmp_path / "g.duckdb") == 0o600
    assert _mode(lock_path(tmp_path / "g.duckdb")) == 0o600


def test_the_private_umask_is_held_until_the_last_open_database_closes(tmp_path, open_umask):
    first = Database.open(tmp_path / "a.duckdb")
    second = Database.open(tmp_path / "b.duckdb")
    assert _umask() == 0o077
    first.close()
    assert _umask() == 0o077, "closing one database made the other's new files readable"
    (tmp_path / "b.duckdb.note").touch()
    second.close()
    assert _umask() == 0o022
    assert private_umask.holders == 0
    # a file created while a database was open is private too: the cost of a process umask
    assert _mode(tmp_path / "b.duckdb.note") == 0o600


def test_databases_opened_and_closed_by_threads_at_once_leave_the_umask_as_it_was(
    tmp_path, open_umask
):
    threads = 4
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            start.wait()
            for night in range(5):
                db = Database.open(tmp_path / f"t{k}.duckdb")
                db.con.execute(f"create table n{night} as select {night} as night")
                db.close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []
    assert private_umask.holders == 0
    assert _umask() == 0o022
    assert {_mode(tmp_path / f"t{k}.duckdb") for k in range(threads)} == {0o600}


def test_a_failed_open_gives_back_the_umask_and_the_lock(tmp_path, open_umask):
    sqlite = tmp_path / "g.duckdb"
    sqlite.write_bytes(b"SQLite format 3\x00" + bytes(100))
    with pytest.raises(ConfigError, match="SQLite"):
        Database.open(sqlite)
    assert _umask() == 0o022 and private_umask.holders == 0
    with pytest.raises(ConfigError):  # the lock was released: the same error, not exit 5
        Database.open(sqlite)


def test_a_reader_takes_no_lock_and_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no gpucost database"):
        Database.open(tmp_path / "missing.duckdb", read_only=True)
    Database.open(tmp_path / "g.duckdb").close()
    lock_path(tmp_path / "g.duckdb").unlink()
    reader = Database.open(tmp_path / "g.duckdb", read_only=True)
    try:
        assert not lock_path(tmp_path / "g.duckdb").exists()
        assert reader.con.execute("select current_setting('TimeZone')").fetchall() == [("UTC",)]
    finally:
        reader.close()


def test_reconnect_keeps_the_lock_and_gives_a_working_connection(tmp_path):
    db = Database.open(tmp_path / "g.duckdb")
    try:
        old = db.con
        db.reconnect()
        assert db.con is not old
        assert db.con.execute("select current_setting('TimeZone')").fetchall() == [("UTC",)]
        with pytest.raises(LockedError):
            Database.open(tmp_path / "g.duckdb")
    finally:
        db.close()
    db.close()  # a second close is harmless
    Database.open(tmp_path / "g.duckdb").close()


def test_a_transaction_commits_at_its_end_and_rolls_back_on_any_error(tmp_path):
    db = Database.open(tmp_path / "g.duckdb")
    try:
        db.con.execute("create table t (i integer)")
        with transaction(db.con, db.path):
            db.con.execute("insert into t values (1)")
        with (
            pytest.raises(ValueError, match="not the database's"),
            transaction(db.con, db.path),
        ):
            db.con.execute("insert into t values (2)")
            raise ValueError("not the database's fault")
        with (
            pytest.raises(StoreWriteError, match=r"g\.duckdb: cannot write") as exc,
            transaction(db.con, db.path),
        ):
            db.con.execute("insert into t values (3)")
            db.con.execute("insert into missing values (4)")
        assert isinstance(exc.value.__cause__, duckdb.Error)
        assert db.con.execute("select i from t").fetchall() == [(1,)]
    finally:
        db.close()


@pytest.mark.parametrize(
    "exc",
    [
        # a commit that DuckDB's memory limit made fail (3,000 clusters at 64 MB, measured)
        duckdb.TransactionException(
            "TransactionContext Error: Failed to commit: failed to pin block of size 256.0 KiB"
            " (60.8 MiB/61.0 MiB used)\n\nPossible solutions:\n* Increasing the memory limit"
            " (SET memory_limit='...GB')"
        ),
        duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block\n\nhints"),
    ],
)
def test_duckdb_out_of_memory_is_said_in_one_line_with_the_setting(tmp_path: Path, exc) -> None:
    message = str(write_error(tmp_path / "g.duckdb", exc))
    assert message.startswith(f"database {tmp_path / 'g.duckdb'}: out of memory: ")
    assert "store.snapshot_memory_mb" in message
    assert "\n" not in message and "SET memory_limit" not in message


def test_a_write_error_of_another_kind_keeps_duckdb_s_whole_message(tmp_path: Path) -> None:
    exc = duckdb.IOException("IO Error: could not write file\nsecond line")
    message = str(write_error(tmp_path / "g.duckdb", exc))
    assert message == f"database {tmp_path / 'g.duckdb'}: cannot write: {exc}"
