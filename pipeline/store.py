"""The DuckDB store: migrations, the runs ledger, the lock, the raw store; loading delegates to
`pipeline/writer.py`.

One file holds everything (`gpucost.duckdb` by default), created readable by its owner only
(mode 0600, like its lock file) because it holds cost data:

- `meta.*`: `schema_version` (the migrations applied), `runs` (one row per run: status
  running | complete | partial | failed and its counters) and `run_failures` (each cluster that
  failed, was gone or skipped, with the reason).
- `snap.*`: the normalized snapshot tables that `sql/staging` reads, declared in
  `pipeline/tables.py` (created by migrations/0001_initial.sql and later ones).
- `raw.responses`: every detail response as received (already redacted by the client),
  gzip-compressed, kept `store.raw_retention_days` days; `gpucost snapshot --from-raw` rebuilds
  `snap.*` from them.

Loading is batched (`writer.LoadBatch`, `Store.write_batch`): rows, raw bodies, failures and the
ledger's counters of N clusters in ONE transaction; see pipeline/writer.py for the keys that
make reloads idempotent.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from filelock import FileLock, Timeout

from pipeline import duck, writer
from pipeline.errors import ConfigError, GpucostError, LockedError
from pipeline.log import get_logger
from pipeline.redact import redact_text
from pipeline.tables import HORIZON_HOURS, TABLES
from pipeline.writer import (
    DEFAULT_BATCH_CLUSTERS,
    MAX_FAILURE_BODY_BYTES,
    RAW_COMPRESSLEVEL,
    RAW_ENCODING,
    LoadBatch,
    LoadError,
)

if TYPE_CHECKING:
    from pipeline.normalize import NormalizedDetail

__all__ = [
    "DEFAULT_BATCH_CLUSTERS",
    "HORIZON_HOURS",
    "MAX_FAILURE_BODY_BYTES",
    "RAW_COMPRESSLEVEL",
    "RAW_ENCODING",
    "LoadBatch",
    "LoadError",
    "Store",
    "StoreError",
    "StoreWriteError",
    "code_schema_version",
    "lock_path",
    "migrations",
    "new_run_id",
    "rollback_quietly",
    "write_error",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
FILE_MODE = 0o600
_MIGRATION_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")

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


def write_error(path: Path, exc: BaseException) -> StoreWriteError:
    """A `StoreWriteError` naming the cause of `exc` (a DuckDB I/O error or an OSError)."""
    text = str(exc)
    full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or (
        "no space left on device" in text.lower()
    )
    cause = "no space left on device" if full else "cannot write"
    return StoreWriteError(f"database {path}: {cause}: {text}")


def migrations() -> list[tuple[int, str, str]]:
    """The migrations shipped with this code: (version, file name, SQL), in order."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path.name, path.read_text(encoding="utf-8")))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):  # pragma: no cover - a packaging mistake
        raise StoreError(f"two migrations share a version number in {MIGRATIONS_DIR}")
    return found


def code_schema_version() -> int:
    """The schema version this code writes (the highest migration shipped)."""
    found = migrations()
    return found[-1][0] if found else 0


def new_run_id(now: datetime | None = None) -> str:
    """A run id that sorts by start time: `20261120T030000Z-1a2b3c`."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------

_umask_users = 0
_umask_saved: int | None = None


def _hold_private_umask() -> None:
    # DuckDB creates the database and its WAL itself (the WAL again after every checkpoint),
    # so the only way to have them born 0600 is the process umask while a store is open.
    global _umask_users, _umask_saved
    if _umask_users == 0:
        _umask_saved = os.umask(0o077)
    _umask_users += 1


def _release_private_umask() -> None:
    global _umask_users, _umask_saved
    _umask_users -= 1
    if _umask_users == 0 and _umask_saved is not None:
        os.umask(_umask_saved)
        _umask_saved = None


def lock_path(db_path: str | os.PathLike[str]) -> Path:
    """The lock file of a database: `<db>.lock`."""
    return Path(f"{os.fspath(db_path)}.lock")


class Store:
    """An open gpucost database. Use `Store.open(path)`; close it (or use `with`)."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, path: Path, *, read_only: bool, lock: FileLock | None
    ) -> None:
        self.con = con
        self.path = path
        self.read_only = read_only
        self._lock = lock
        self._closed = False

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, read_only: bool = False, lock: bool = True
    ) -> Store:
        """Open (creating on first use, mode 0600) and migrate the database at `path`.

        A writer takes the lock `<db>.lock` first, without waiting: if another run holds it,
        `LockedError` (exit 5) is raised and nothing is touched. A database whose schema is
        newer than this code is refused with `StoreError`.
        """
        db = Path(path)
        if read_only and not db.exists():
            raise ConfigError(f"no gpucost database at {db}")
        file_lock = None
        if not read_only and lock:
            if not db.parent.exists():
                db.parent.mkdir(parents=True, mode=0o700)
            file_lock = FileLock(str(lock_path(db)), timeout=0, mode=FILE_MODE)
            try:
                file_lock.acquire(timeout=0, blocking=False)
            except Timeout:
                raise LockedError(
                    f"another gpucost run holds the lock {lock_path(db)}; try again later"
                ) from None
        _hold_private_umask()
        try:
            created = not db.exists()
            try:
                con = duck.connect(db, read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" in str(exc).lower():
                    raise LockedError(f"database {db} is in use by another process") from None
                raise StoreError(f"cannot open database {db}: {exc}") from None
            if created:
                os.chmod(db, FILE_MODE)
            store = cls(con, db, read_only=read_only, lock=file_lock)
        except BaseException:
            _release_private_umask()
            if file_lock is not None:
                file_lock.release()
            raise
        try:
            con.execute("set TimeZone = 'UTC'")
            store._migrate()
        except BaseException:
            store.close()
            raise
        return store

    def _migrate(self) -> None:
        current = self.schema_version()
        latest = code_schema_version()
        if current > latest:
            raise StoreError(
                f"database {self.path} has schema version {current}, newer than this gpucost "
                f"understands ({latest}); upgrade gpucost"
            )
        if current == latest:
            return
        if self.read_only:
            raise StoreError(
                f"database {self.path} has schema version {current}, older than {latest}; "
                "open it once for writing (e.g. gpucost snapshot) to migrate it"
            )
        for version, name, sql in migrations():
            if version <= current:
                continue
            self.con.begin()
            try:
                self.con.execute(sql)
                self.con.execute(
                    "insert into meta.schema_version values (?, ?, ?)",
                    [version, name, datetime.now(UTC)],
                )
                self.con.commit()
            except duckdb.Error as exc:
                rollback_quietly(self.con)
                raise StoreError(f"migration {name} failed: {exc}") from None
            _log.debug("applied migration %s", name)

    def schema_version(self) -> int:
        """The last migration applied to this database (0 for a new one)."""
        if not self.read_only:
            self.con.execute("create schema if not exists meta")
            self.con.execute(
                "create table if not exists meta.schema_version ("
                " version integer primary key, name varchar not null,"
                " applied_at timestamptz not null)"
            )
        try:
            rows = self.con.execute("select max(version) from meta.schema_version").fetchall()
        except duckdb.CatalogException:
            raise StoreError(f"{self.path} is not a gpucost database") from None
        return rows[0][0] or 0

    def reconnect(self) -> None:
        """A fresh connection to the same file, the lock kept: after a fatal write error
        DuckDB refuses everything on the old one (the ledger must still be written)."""
        with contextlib.suppress(duckdb.Error):
            self.con.close()
        self.con = duck.connect(self.path, read_only=self.read_only)
        self.con.execute("set TimeZone = 'UTC'")

    def close(self) -> None:
        """Close the connection, release the lock; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self.con.close()
        finally:
            _release_private_umask()
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, read_only={self.read_only})"

    # -- the runs ledger ---------------------------------------------------------------------

    def mark_interrupted_runs(self) -> int:
        """Mark runs still `running` as `failed`/interrupted (call with the lock held)."""
        rows = self.con.execute(
            "update meta.runs set status = 'failed',"
            " message = 'interrupted: the process ended before the run finished'"
            " where status = 'running' returning run_id"
        ).fetchall()
        for (run_id,) in rows:
            _log.info("run %s was interrupted; marked failed", run_id)
        return len(rows)

    def start_run(self, api_base_url: str | None, *, run_id: str | None = None) -> str:
        """Record a new run as `running` and return its id."""
        run_id = run_id or new_run_id()
        self.con.execute(
            "insert into meta.runs (run_id, started_at, api_base_url, status, clusters_listed,"
            " clusters_fetched, clusters_failed, clusters_gone, clusters_skipped, requests_made,"
            " retries) values (?, ?, ?, 'running', 0, 0, 0, 0, 0, 0, 0)",
            [run_id, datetime.now(UTC), api_base_url],
        )
        return run_id

    def set_listed(self, run_id: str, count: int) -> None:
        """Record how many clusters the list returned."""
        self.con.execute(
            "update meta.runs set clusters_listed = ? where run_id = ?", [count, run_id]
        )

    def record_failure(
        self,
        run_id: str,
        *,
        cluster_id: str | None,
        stage: str,
        outcome: str,
        reason: str,
        http_status: int | None = None,
        raw_body: bytes | None = None,
    ) -> None:
        """Record one failure now, in its own transaction (e.g. the list stage failed)."""
        batch = LoadBatch(run_id)
        batch.add_failure(
            cluster_id, outcome, reason, stage=stage, http_status=http_status, raw_body=raw_body
        )
        self.write_batch(batch)

    def finish_run(
        self,
        run_id: str,
        status: str,
        *,
        message: str | None = None,
        requests_made: int | None = None,
        retries: int | None = None,
        raw_retention_days: int | None = None,
    ) -> None:
        """Mark the run finished with `status`, pruning old raw responses, in one transaction."""
        if status not in ("complete", "partial", "failed"):
            raise ValueError(f"unknown run status {status!r}")
        message = redact_text(message) if message else message  # it can quote the provider
        self.con.begin()
        try:
            if raw_retention_days is not None:
                self._prune_raw(raw_retention_days)
            self.con.execute(
                "update meta.runs set status = ?, finished_at = ?, message = ?,"
                " requests_made = coalesce(?, requests_made), retries = coalesce(?, retries)"
                " where run_id = ?",
                [status, datetime.now(UTC), message, requests_made, retries, run_id],
            )
            self.con.commit()
        except BaseException as exc:
            rollback_quietly(self.con)
            if isinstance(exc, OSError | duckdb.Error):
                raise write_error(self.path, exc) from exc
            raise

    def run(self, run_id: str) -> dict[str, Any]:
        """One row of `meta.runs` as a dict."""
        cur = self.con.execute("select * from meta.runs where run_id = ?", [run_id])
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
        if not rows:
            raise KeyError(run_id)
        return dict(zip(names, rows[0], strict=True))

    # -- loading (pipeline/writer.py) --------------------------------------------------------

    def load_detail(
        self, run_id: str, detail: NormalizedDetail, *, raw_body: bytes | None = None
    ) -> None:
        """Write one normalized detail (and its raw body) in its own transaction
        (`writer.load_detail`); `LoadError` when it cannot be stored."""
        writer.load_detail(self.con, self.path, run_id, detail, raw_body=raw_body)

    def write_batch(
        self,
        batch: LoadBatch,
        *,
        requests_made: int | None = None,
        retries: int | None = None,
        count: bool = True,
        transaction: bool = True,
    ) -> int:
        """Commit a batch atomically (`writer.write_batch`); returns the details written."""
        return writer.write_batch(
            self.con,
            self.path,
            batch,
            requests_made=requests_made,
            retries=retries,
            count=count,
            transaction=transaction,
        )

    # -- the raw store -----------------------------------------------------------------------

    def _prune_raw(self, days: int) -> int:
        cutoff = datetime.now(UTC) - timedelta(days=days)
        rows = self.con.execute(
            "delete from raw.responses where fetched_at < ? returning 1", [cutoff]
        ).fetchall()
        return len(rows)

    def prune_raw(self, days: int) -> int:
        """Delete raw responses fetched more than `days` days ago; returns how many."""
        self.con.begin()
        try:
            pruned = self._prune_raw(days)
            self.con.commit()
        except BaseException:
            rollback_quietly(self.con)
            raise
        return pruned

    def raw_run_ids(self) -> list[str]:
        """Runs that still have raw responses in the raw store, oldest first."""
        rows = self.con.execute(
            "select run_id from raw.responses group by run_id order by min(fetched_at), run_id"
        ).fetchall()
        return [r[0] for r in rows]

    def iter_raw(self, chunk: int = 100) -> Iterator[tuple[str, str, datetime, bytes]]:
        """Every raw response, oldest first: (run_id, cluster_id, fetched_at, body bytes)."""
        # A separate cursor, so the caller can write on self.con while this iterates.
        cur = self.con.cursor()
        try:
            cur.execute("set TimeZone = 'UTC'")
            cur.execute(
                "select run_id, cluster_id, fetched_at, encoding, body from raw.responses"
                " order by fetched_at, run_id, cluster_id"
            )
            while True:
                rows = cur.fetchmany(chunk)
                if not rows:
                    break
                for run_id, cluster_id, fetched_at, encoding, body in rows:
                    if encoding != RAW_ENCODING:  # pragma: no cover - only gzip is written
                        raise StoreError(f"raw response encoded as {encoding!r}")
                    yield run_id, cluster_id, fetched_at, gzip.decompress(body)
        finally:
            cur.close()

    def delete_rows_of_runs(self, run_ids: Iterable[str]) -> None:
        """Delete every snap row written by these runs (before a `--from-raw` rebuild)."""
        ids = list(run_ids)
        if not ids:
            return
        for table in TABLES:
            self.con.execute(f"delete from snap.{table} where run_id in ?", [ids])
