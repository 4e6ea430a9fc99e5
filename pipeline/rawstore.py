"""The raw response store: `raw.responses`, every detail response as received.

Bodies arrive already redacted and gzip-compressed by the client (`pipeline/rawbody.py`), one row
per (run, cluster), with the time they were fetched and the snapshot instant they carry. They are
kept `store.raw_retention_days` days (`RawStore.prune`, run by `Store.finish_run` in the run's
last transaction) and read back oldest first, a chunk at a time, by `gpucost snapshot
--from-raw` (`RawStore.iter`), which rebuilds the `snap.*` rows from them.

The writer stores the bodies of a batch in the batch's transaction (`write_bodies`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple

import duckdb
import pyarrow as pa

from pipeline.connection import Database, StoreError, rollback_quietly
from pipeline.rawbody import RAW_COMPRESSLEVEL as RAW_COMPRESSLEVEL
from pipeline.rawbody import RAW_ENCODING as RAW_ENCODING
from pipeline.rawbody import compress as compress
from pipeline.rawbody import decompress

DEFAULT_CHUNK: Final = 100

_TS = pa.timestamp("us", tz="UTC")


class RawResponse(NamedTuple):
    """One stored response, decompressed: the run that fetched it, the cluster, when, the body."""

    run_id: str
    cluster_id: str
    fetched_at: datetime
    body: bytes


class RawRow(NamedTuple):
    """One response to store: `body` already compressed (`compress`)."""

    run_id: str
    cluster_id: str
    fetched_at: datetime
    snapshot_at: datetime | None
    body: bytes


def write_bodies(con: duckdb.DuckDBPyConnection, rows: Sequence[RawRow]) -> None:
    """Insert compressed bodies into `raw.responses`, inside the caller's transaction."""
    if not rows:
        return
    # executemany prepares per row: an Arrow table is one insert
    table = pa.table(
        {
            "run_id": pa.array([r.run_id for r in rows], pa.string()),
            "cluster_id": pa.array([r.cluster_id for r in rows], pa.string()),
            "fetched_at": pa.array([r.fetched_at for r in rows], _TS),
            "snapshot_at": pa.array([r.snapshot_at for r in rows], _TS),
            "body": pa.array([r.body for r in rows], pa.binary()),
        }
    )
    con.register("_in_raw", table)
    try:
        con.execute(
            "insert into raw.responses (run_id, cluster_id, fetched_at, snapshot_at, encoding,"
            f" body) select run_id, cluster_id, fetched_at, snapshot_at, '{RAW_ENCODING}', body"
            " from _in_raw"
        )
    finally:
        with contextlib.suppress(duckdb.Error):
            con.unregister("_in_raw")


class RawStore:
    """`raw.responses` on the database's current connection: prune, list, read back."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def delete_older_than(self, *, days: int) -> int:
        """Delete responses fetched more than `days` days ago, inside the caller's transaction;
        returns how many."""
        cutoff = datetime.now(UTC) - timedelta(days=days)
        rows = self._db.con.execute(
            "delete from raw.responses where fetched_at < ? returning 1", [cutoff]
        ).fetchall()
        return len(rows)

    def prune(self, *, days: int) -> int:
        """Delete responses fetched more than `days` days ago, in its own transaction; returns
        how many."""
        con = self._db.con
        con.begin()
        try:
            pruned = self.delete_older_than(days=days)
            con.commit()
        except BaseException:
            rollback_quietly(con)
            raise
        return pruned

    def run_ids(self) -> list[str]:
        """Runs that still have responses here, oldest first."""
        rows = self._db.con.execute(
            "select run_id from raw.responses group by run_id order by min(fetched_at), run_id"
        ).fetchall()
        return [r[0] for r in rows]

    def iter(self, *, chunk: int = DEFAULT_CHUNK) -> Iterator[RawResponse]:
        """Every response, oldest first (then by run and cluster), decompressed, `chunk` rows
        in memory at a time."""
        # A separate cursor, so the caller can write on the connection while this iterates.
        cur = self._db.con.cursor()
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
                    yield RawResponse(run_id, cluster_id, fetched_at, decompress(body))
        finally:
            cur.close()
