"""The DuckDB store: `Store.open(path)`, the one object callers use, over the database's parts.

Each part has its own module: `pipeline.connection` (the lock, private file modes, the
connection), `pipeline.migrate` (the schema), `pipeline.ledger` (`meta.runs`) and
`pipeline.rawstore` (`raw.responses`); the rows and batches are written by `pipeline.writer`
from the declared tables of `pipeline.tables`.

One file holds everything (`gpucost.duckdb` by default), created readable by its owner only
(mode 0600, like its lock file) because it holds cost data:

- `meta.*`: `schema_version` (the migrations applied), `runs` (one row per run: status
  running | complete | partial | failed and its counters) and `run_failures` (each cluster that
  failed, was gone or skipped, with the reason).
- `snap.*`: the normalized snapshot tables that `sql/staging` reads (migrations/0001_initial.sql).
- `raw.responses`: every detail response as received (already redacted by the client),
  gzip-compressed, kept `store.raw_retention_days` days; `gpucost snapshot --from-raw` rebuilds
  `snap.*` from them.

Loading is batched: a `LoadBatch` collects the results of N clusters (each already the
snapshot tables' columns, `normalize.NormalizedDetail`), `Store.write_batch` turns them into
Arrow tables and writes them, their raw bodies, their failures
and the ledger's counters in ONE transaction. A `kill -9` therefore loses at most the batch in
flight and never leaves a run that looks complete (only `finish_run` marks that). How keys make
reloads idempotent, and why the bucket tables carry no PRIMARY KEY: `pipeline.writer`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from pipeline import migrate, writer
from pipeline.connection import FILE_MODE as FILE_MODE
from pipeline.connection import Database, transaction
from pipeline.connection import StoreError as StoreError
from pipeline.connection import StoreWriteError as StoreWriteError
from pipeline.connection import lock_path as lock_path
from pipeline.connection import rollback_quietly as rollback_quietly
from pipeline.connection import write_error as write_error
from pipeline.ledger import FailureOutcome, FailureStage, Ledger, RunStatus, check_finished
from pipeline.ledger import new_run_id as new_run_id
from pipeline.log import get_logger
from pipeline.migrate import MIGRATIONS_DIR as MIGRATIONS_DIR
from pipeline.migrate import code_schema_version as code_schema_version
from pipeline.migrate import migrations as migrations
from pipeline.rawstore import DEFAULT_CHUNK, RawResponse, RawStore
from pipeline.rawstore import RAW_COMPRESSLEVEL as RAW_COMPRESSLEVEL
from pipeline.rawstore import RAW_ENCODING as RAW_ENCODING
from pipeline.tables import HORIZON_HOURS as HORIZON_HOURS
from pipeline.tables import TABLES
from pipeline.writer import DEFAULT_BATCH_CLUSTERS as DEFAULT_BATCH_CLUSTERS
from pipeline.writer import MAX_FAILURE_BODY_BYTES as MAX_FAILURE_BODY_BYTES
from pipeline.writer import LoadBatch as LoadBatch
from pipeline.writer import LoadError as LoadError

if TYPE_CHECKING:
    from pipeline.normalize import NormalizedDetail

_log = get_logger("store")


class Store:
    """An open gpucost database. Use `Store.open(path)`; close it (or use `with`).

    The parts: `db` (the connection, its lock and file modes), `ledger` (`meta.runs`), `raw`
    (`raw.responses`); the methods below are what callers use, each handing to its part.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.ledger = Ledger(db)
        self.raw = RawStore(db)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The database's current connection (`reconnect` replaces it)."""
        return self.db.con

    @con.setter
    def con(self, con: duckdb.DuckDBPyConnection) -> None:
        self.db.con = con

    @property
    def path(self) -> Path:
        """The database file."""
        return self.db.path

    @property
    def read_only(self) -> bool:
        """Whether this store was opened read-only (no lock, no migration, no writes)."""
        return self.db.read_only

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
        db = Database.open(path, read_only=read_only, lock=lock)
        try:
            migrate.migrate(db.con, path=db.path, read_only=db.read_only)
        except BaseException:
            db.close()
            raise
        return cls(db)

    def schema_version(self) -> int:
        """The last migration applied to this database (0 for a new one)."""
        return migrate.schema_version(self.con, path=self.path, read_only=self.read_only)

    def reconnect(self) -> None:
        """A fresh connection to the same file, the lock kept: after a fatal write error
        DuckDB refuses everything on the old one (the ledger must still be written)."""
        self.db.reconnect()

    def close(self) -> None:
        """Close the connection, release the lock; safe to call twice."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, read_only={self.read_only})"

    # -- the runs ledger ---------------------------------------------------------------------

    def mark_interrupted_runs(self) -> int:
        """Mark runs still `running` as `failed`/interrupted (call with the lock held)."""
        return self.ledger.mark_interrupted_runs()

    def start_run(self, api_base_url: str | None, *, run_id: str | None = None) -> str:
        """Record a new run as `running` and return its id."""
        return self.ledger.start_run(api_base_url=api_base_url, run_id=run_id)

    def set_listed(self, run_id: str, count: int) -> None:
        """Record how many clusters the list returned."""
        self.ledger.set_listed(run_id, count=count)

    def record_failure(
        self,
        run_id: str,
        *,
        cluster_id: str | None,
        stage: FailureStage,
        outcome: FailureOutcome,
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
        status: RunStatus,
        *,
        message: str | None = None,
        requests_made: int | None = None,
        retries: int | None = None,
        raw_retention_days: int | None = None,
    ) -> None:
        """Mark the run finished with `status` (complete, partial or failed; `ValueError` for
        "running"), pruning old raw responses, in one transaction."""
        finished = check_finished(status)
        with transaction(self.con, self.path):
            if raw_retention_days is not None:
                self.raw.delete_older_than(days=raw_retention_days)
            self.ledger.record_finish(
                run_id,
                status=finished,
                message=message,
                requests_made=requests_made,
                retries=retries,
            )

    def run(self, run_id: str) -> dict[str, Any]:
        """One row of `meta.runs` as a dict."""
        return self.ledger.run(run_id)

    # -- loading -----------------------------------------------------------------------------

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

    def prune_raw(self, days: int) -> int:
        """Delete raw responses fetched more than `days` days ago; returns how many."""
        return self.raw.prune(days=days)

    def raw_run_ids(self) -> list[str]:
        """Runs that still have raw responses in the raw store, oldest first."""
        return self.raw.run_ids()

    def iter_raw(self, *, chunk: int = DEFAULT_CHUNK) -> Iterator[RawResponse]:
        """Every raw response, oldest first: (run_id, cluster_id, fetched_at, body bytes)."""
        return self.raw.iter(chunk=chunk)

    def delete_rows_of_runs(self, run_ids: Iterable[str]) -> None:
        """Delete every snap row written by these runs (before a `--from-raw` rebuild)."""
        ids = list(run_ids)
        if not ids:
            return
        for table in TABLES:
            self.con.execute(f"delete from snap.{table} where run_id in ?", [ids])
