"""The database file opened for gpucost: its lock, its private file modes, its connection.

`Database.open(path)` is how the store gets a DuckDB connection (through `pipeline.duck`, the one
way gpucost opens DuckDB). A writer takes the lock `<db>.lock` first, without waiting, so two runs
never write the same file.

Every file gpucost writes is readable by its owner only (DESIGN.md's security rules): the lock
file is created with mode 0600, and the database with its WAL are born 0600 under the umask
0077, held while a database is open. That umask is process-wide, which is a cost (a file another
thread creates meanwhile is private too), and it cannot be replaced by creating the files
ourselves: DuckDB refuses a pre-created empty database file, and it deletes its WAL at every
checkpoint (the nightly load crosses the 16 MB auto-checkpoint many times) and creates it anew
with the process's umask (`tests/test_connection.py` checks both, so a DuckDB that changes
either is noticed). The umask is counted: it is set by the first open database and restored
when the last one closes, under a lock so that threads opening databases at once agree.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
from filelock import FileLock, Timeout

from pipeline import duck
from pipeline.errors import ConfigError, GpucostError, LockedError
from pipeline.log import get_logger

FILE_MODE = 0o600
DIR_MODE = 0o700
PRIVATE_UMASK = 0o077

_log = get_logger("store")


class StoreError(GpucostError):
    """The database cannot be used: newer than this code, or a migration failed."""


class StoreWriteError(StoreError):
    """The database refused a write for a reason outside the data: the disk is full, the file
    cannot be written. The message names the cause (not a failed rollback's own error)."""


def rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back after an error without hiding it: DuckDB ends a transaction whose commit
    failed (a full disk), and a rollback then raises "no transaction is active"."""
    try:
        con.rollback()
    except duckdb.Error as exc:
        _log.debug("rollback after a failed write: %s", exc)


# How DuckDB says that its memory limit was reached: an `OutOfMemoryException`, or a commit that
# failed for it ("TransactionContext Error: Failed to commit: failed to pin block ...").
_OUT_OF_MEMORY = ("out of memory", "failed to pin block", "could not allocate block")


def write_error(path: Path, exc: BaseException) -> StoreWriteError:
    """A `StoreWriteError` naming the cause of `exc` (a DuckDB I/O error or an OSError).

    DuckDB's memory limit reached is said in one line, with the setting that raises it: DuckDB's
    own message goes on with advice in SQL (`SET memory_limit=...`) that an operator cannot
    follow here."""
    text = str(exc)
    lowered = text.lower()
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or (
        "no space left on device" in lowered
    ):
        return StoreWriteError(f"database {path}: no space left on device: {text}")
    if isinstance(exc, duckdb.OutOfMemoryException) or any(w in lowered for w in _OUT_OF_MEMORY):
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return StoreWriteError(
            f"database {path}: out of memory: {first}; DuckDB's memory limit during the "
            'snapshot is store.snapshot_memory_mb (docs/operations.md, "Memory and CPU")'
        )
    return StoreWriteError(f"database {path}: cannot write: {text}")


def lock_path(db_path: str | os.PathLike[str]) -> Path:
    """The lock file of a database: `<db>.lock`."""
    return Path(f"{os.fspath(db_path)}.lock")


class _PrivateUmask:
    """The umask 0077 held while any database is open, counted, restored by the last release."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._users = 0
        self._saved: int | None = None

    def hold(self) -> None:
        """Set the private umask (the first holder saves the one in force)."""
        with self._guard:
            if self._users == 0:
                self._saved = os.umask(PRIVATE_UMASK)
            self._users += 1

    def release(self) -> None:
        """Give back one hold; the last one restores the saved umask."""
        with self._guard:
            if self._users == 0:  # pragma: no cover - a release without a hold is a bug
                raise RuntimeError("private umask released more often than held")
            self._users -= 1
            if self._users == 0 and self._saved is not None:
                os.umask(self._saved)
                self._saved = None

    @property
    def holders(self) -> int:
        """How many open databases hold the umask now (for tests and diagnosis)."""
        with self._guard:
            return self._users


private_umask = _PrivateUmask()
"""The process's one counted private umask (see the module's docstring for why it is needed)."""


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection, path: Path) -> Iterator[None]:
    """One write transaction: committed at the end, rolled back on any error; a DuckDB or OS
    error (a full disk) comes out as a `StoreWriteError` naming its cause."""
    con.begin()
    try:
        yield
        con.commit()
    except BaseException as exc:
        rollback_quietly(con)
        if isinstance(exc, OSError | duckdb.Error):
            raise write_error(path, exc) from exc
        raise


class Database:
    """An open database file: `con` (replaced by `reconnect`), its path, its lock if a writer.

    Use `Database.open(path)`; `close()` releases the connection, the lock and the umask.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        path: Path,
        *,
        read_only: bool,
        lock: FileLock | None,
    ) -> None:
        self.con = con
        self.path = path
        self.read_only = read_only
        self._lock = lock
        self._closed = False

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, read_only: bool = False, lock: bool = True
    ) -> Database:
        """Open (creating on first use, mode 0600) the DuckDB file at `path`, in UTC.

        A writer takes the lock `<db>.lock` first, without waiting: if another run holds it,
        `LockedError` (exit 5) is raised and nothing is touched. A read-only open of a missing
        file is a `ConfigError`; a file DuckDB cannot open, a `StoreError`.
        """
        db = Path(path)
        if read_only and not db.exists():
            raise ConfigError(f"no gpucost database at {db}")
        file_lock = None
        if not read_only and lock:
            if not db.parent.exists():
                db.parent.mkdir(parents=True, mode=DIR_MODE)
            file_lock = FileLock(str(lock_path(db)), timeout=0, mode=FILE_MODE)
            try:
                file_lock.acquire(timeout=0, blocking=False)
            except Timeout:
                raise LockedError(
                    f"another gpucost run holds the lock {lock_path(db)}; try again later"
                ) from None
        private_umask.hold()
        try:
            created = not db.exists()
            try:
                con = duck.connect(db, read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" in str(exc).lower():
                    raise LockedError(f"database {db} is in use by another process") from None
                raise StoreError(f"cannot open database {db}: {exc}") from None
            if created:
                os.chmod(db, FILE_MODE)  # the umask made it so already; said again here
            database = cls(con, db, read_only=read_only, lock=file_lock)
        except BaseException:
            private_umask.release()
            if file_lock is not None:
                file_lock.release()
            raise
        try:
            con.execute("set TimeZone = 'UTC'")
        except BaseException:
            database.close()
            raise
        return database

    def reconnect(self) -> None:
        """A fresh connection to the same file, the lock kept: after a fatal write error
        DuckDB refuses everything on the old one (the ledger must still be written)."""
        with contextlib.suppress(duckdb.Error):
            self.con.close()
        self.con = duck.connect(self.path, read_only=self.read_only)
        self.con.execute("set TimeZone = 'UTC'")

    def close(self) -> None:
        """Close the connection, release the umask and the lock; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self.con.close()
        finally:
            private_umask.release()
            if self._lock is not None:
                self._lock.release()
