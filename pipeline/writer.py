"""The batch writer: normalized details, raw bodies, failures and counters, in one transaction.

A `LoadBatch` collects the results of N clusters (`add_result`, `add_detail`, `add_failure`):
each detail's columns (`normalize.NormalizedDetail.table`, typed by `pipeline/tables.py`) with
the run's id, its raw body compressed (`rawbody.compress`), the failures and the ledger's counters.
`write_batch(con, path, batch)` turns them into Arrow tables and writes them all in ONE
transaction, so a `kill -9` loses at most the batch in flight and never leaves a run that looks
complete (only `Store.finish_run` marks that). Keys make reloads idempotent:

- snapshot-grain tables (`tables.SNAPSHOT_TABLES`) are keyed by (cluster_id, snapshot_at[,
  ...]); a reload of the same snapshot replaces its rows as a set.
- bucket tables (`metric_points`, `gpu_metric_points`) store each (cluster_id, bucket_at) once
  across overlapping windows. A bucket is written when the incoming snapshot is at least as new
  as the stored one (so a revised bucket takes the newest snapshot's value, whatever the load
  order), and its per-GPU rows are replaced as a set (a resize changes the GPU count).
  These two tables carry no PRIMARY KEY on purpose: measured on DuckDB 2.0
  (bench/store_keys.py), an index made the nightly delete-then-insert ~30x slower and the file
  ~18x larger, and INSERT OR REPLACE cannot drop the GPUs a resize removed; uniqueness is the
  loader's job and is tested.

The writer walks no document: what a detail gives is already columns; it only fits amounts to
DECIMAL(18, 6) (more than 6 places are rounded half-even; beyond 12 integer digits the detail is
refused) and adds the run's id.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa

from pipeline.errors import GpucostError
from pipeline.log import get_logger
from pipeline.rawbody import compress, decompress
from pipeline.rawstore import RawRow, write_bodies
from pipeline.redact import redact_bytes, redact_text
from pipeline.tables import MONEY_ARROW, SNAPSHOT_TABLES, TABLES, TS

if TYPE_CHECKING:
    from pipeline.normalize import NormalizedDetail

# Measured (8-GPU details): 25 -> 4.3 ms per cluster to write, 50 -> 3.4, 100 -> 2.2, 200 -> 2.0.
DEFAULT_BATCH_CLUSTERS = 100
# A failure's raw body is kept for diagnosis, not as an archive: bound it.
MAX_FAILURE_BODY_BYTES = 256 * 1024
# DECIMAL(18, 6): 12 integer digits.
_MONEY_LIMIT = Decimal(10) ** 12
_MONEY_QUANTUM = Decimal("0.000001")

_log = get_logger("store")
# Errors about a value (not about the database): only these make a batch fall back to loading
# its details one by one; an I/O error aborts the batch.
DATA_ERRORS = (
    duckdb.ConversionException,
    duckdb.ConstraintException,
    duckdb.InvalidInputException,
    duckdb.OutOfRangeException,
    duckdb.TypeMismatchException,
    pa.ArrowException,
)


class LoadError(GpucostError):
    """One normalized detail cannot be stored (the reason names the field)."""


def _staged(table: str) -> dict[str, pa.DataType]:
    # What a batch stages per table: the declared columns and `_seq`, which orders details in
    # a batch (the later one wins a tie on the same key). gpu_metric_points is staged without
    # the columns its bucket already has: `_pt` (added when converting, from the points'
    # `gpu_series_count`: a point's GPU rows follow each other in point order) points at the
    # bucket's row in the batch's metric_points (`_row`); converting 1.3 M repeated timestamps
    # and ids to Arrow per night cost more than everything else.
    if table == "gpu_metric_points":
        own = ("gpu_id", "utilization", "memory_used_gb", "power_draw_w")
        return {c.name: c.arrow_type for c in TABLES[table].columns if c.name in own}
    return {**{c.name: c.arrow_type for c in TABLES[table].columns}, "_seq": pa.int32()}


# Column name -> Arrow type of what a batch stages, per table (from pipeline/tables.py).
STAGED: dict[str, dict[str, pa.DataType]] = {t: _staged(t) for t in TABLES}


def _fit_money(values: list[Any], where: Any) -> list[Any]:
    """A money column fitted to DECIMAL(18, 6): more than 6 places rounded half-even; an
    amount beyond the column raises `LoadError` naming `where(k)`. Checked per distinct value:
    a detail repeats its prices."""
    fitted: dict[Any, Any] = {}
    for value in set(values):
        if value is None:
            continue
        if type(value) is not Decimal:  # pragma: no cover - normalize gives Decimal
            kind = type(value).__name__
            raise LoadError(f"{where(values.index(value))}: money must be a decimal, got {kind}")
        try:
            amount = value
            if amount.as_tuple().exponent < -6:  # type: ignore[operator]
                amount = amount.quantize(_MONEY_QUANTUM)
        except InvalidOperation:
            raise LoadError(f"{where(values.index(value))}: not a decimal amount") from None
        if abs(amount) >= _MONEY_LIMIT:
            raise LoadError(f"{where(values.index(value))}: amount {amount} exceeds DECIMAL(18, 6)")
        if amount is not value:
            fitted[value] = amount
    if not fitted:
        return values
    return [fitted.get(v, v) for v in values]


def detail_columns(run_id: str, detail: NormalizedDetail, seq: int) -> dict[str, dict[str, Any]]:
    """One detail's staged columns per table (`STAGED`); `LoadError` when it cannot be
    stored."""
    if detail.problem is not None:
        raise LoadError(detail.problem)
    out: dict[str, dict[str, Any]] = {}
    for table, staged in STAGED.items():
        if table == "gpu_metric_points":
            own = detail.columns[table]
            columns = {name: own[name] for name in staged}
        else:
            n = detail.count(table)
            columns = {"run_id": [run_id] * n, **detail.table(table), "_seq": [seq] * n}
        for column in TABLES[table].columns:
            if column.is_money and column.name in columns:
                columns[column.name] = _fit_money(
                    columns[column.name],
                    lambda k, t=table, c=column.name: detail.path(t, k, c),
                )
        out[table] = columns
    return out


class _Rows:
    """The staged columns of a batch's details, concatenated per table. A column a detail gives
    as an Arrow array (the per-GPU columns, see `NormalizedDetail.columns`) is concatenated as
    Arrow; the others are Python lists, joined and converted once for the whole batch (their
    timestamps and amounts repeat from detail to detail: `_to_arrow`)."""

    def __init__(self, parts: list[dict[str, dict[str, Any]]]) -> None:
        self.cols: dict[str, dict[str, list[Any]]] = {
            t: {c: [] for c in staged} for t, staged in STAGED.items()
        }
        self.arrays: dict[str, dict[str, list[pa.Array]]] = {t: {} for t in STAGED}
        for part in parts:
            for table, cols in self.cols.items():
                for name, values in cols.items():
                    given = part[table][name]
                    chunks = self.arrays[table].get(name)
                    if chunks is None and not isinstance(given, pa.Array):
                        values.extend(given)
                        continue
                    # Arrow from here on; a column given both ways (a detail made by hand)
                    # keeps its rows in order.
                    kind = STAGED[table][name]
                    if chunks is None:
                        chunks = self.arrays[table][name] = []
                        if values:
                            chunks.append(pa.array(values, type=kind))
                            values.clear()
                    chunks.append(
                        given if isinstance(given, pa.Array) else pa.array(given, type=kind)
                    )

    def count(self, table: str) -> int:
        name = next(iter(self.cols[table]))
        chunks = self.arrays[table].get(name)
        return sum(map(len, chunks)) if chunks else len(self.cols[table][name])

    def arrow(self, table: str) -> pa.Table:
        schema = STAGED[table]
        columns = {
            name: (
                pa.concat_arrays(self.arrays[table][name])
                if name in self.arrays[table]
                else _to_arrow(values, schema[name])
            )
            for name, values in self.cols[table].items()
        }
        if table == "metric_points":
            columns["_row"] = pa.array(np.arange(self.count(table), dtype=np.int32))
        elif table == "gpu_metric_points":
            counts = np.array(
                [c or 0 for c in self.cols["metric_points"]["gpu_series_count"]], dtype=np.int64
            )
            pt = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
            if len(pt) != self.count(table):  # pragma: no cover - a loader bug, not data
                raise LoadError("GPU rows do not match their points' gpu_series_count")
            columns = {"_pt": pa.array(pt), **columns}
        return pa.table(columns)


def _to_arrow(values: list[Any], kind: pa.DataType) -> pa.Array:
    """A column as Arrow. Timestamps and amounts repeat (every cluster reports the same hours
    and mostly the same price), and Arrow converts each such Python object slowly: they are
    converted once per distinct value, then expanded through a dictionary."""
    if len(values) < 64 or kind not in (TS, MONEY_ARROW):
        return pa.array(values, type=kind)
    distinct = dict.fromkeys(values)
    if len(distinct) * 4 > len(values):
        return pa.array(values, type=kind)
    position = {v: i for i, v in enumerate(distinct)}
    codes = pa.array(list(map(position.__getitem__, values)), type=pa.int32())
    return pa.DictionaryArray.from_arrays(codes, pa.array(list(distinct), type=kind)).cast(kind)


@dataclass
class _Pending:
    cluster_id: str
    columns: dict[str, dict[str, Any]]
    raw: RawRow | None


@dataclass
class LoadBatch:
    """What `write_batch` commits at once: details, raw bodies, failures, counters.

    Add results as they arrive; flush (write) every `DEFAULT_BATCH_CLUSTERS` clusters so the
    whole fleet is never held in memory.
    """

    run_id: str
    keep_raw: bool = True
    pending: list[_Pending] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    fetched: int = 0
    failed: int = 0
    gone: int = 0
    skipped: int = 0
    _seq: int = 0

    def __len__(self) -> int:
        return len(self.pending) + len(self.failures)

    def add_detail(
        self,
        detail: NormalizedDetail,
        *,
        raw_body: bytes | None = None,
        raw_gzip: bytes | None = None,
        fetched_at: datetime | None = None,
        run_id: str | None = None,
    ) -> bool:
        """Queue one normalized detail; a detail that cannot be stored becomes a failure.

        Its raw body comes as it is (`raw_body`) or already compressed (`raw_gzip`, what the
        client's results hold). `run_id` (default: the batch's run) is what the rows carry:
        `--from-raw` keeps the id of the run that fetched the response. Returns False when the
        detail was refused.
        """
        self._seq += 1
        try:
            columns = detail_columns(run_id or self.run_id, detail, self._seq)
        except LoadError as exc:
            self.add_failure(
                detail.cluster_id or None,
                "failed",
                f"cannot load: {exc}",
                stage="load",
                raw_body=raw_body if raw_gzip is None else decompress(raw_gzip),
            )
            return False
        raw = None
        if raw_gzip is None and raw_body is not None:
            raw_gzip = compress(raw_body) if self.keep_raw else None
        if raw_gzip is not None and self.keep_raw:
            raw = RawRow(
                self.run_id,
                detail.cluster_id,
                fetched_at or datetime.now(UTC),
                detail.snapshot_at,
                raw_gzip,
            )
        self.pending.append(_Pending(detail.cluster_id, columns, raw))
        self.fetched += 1
        return True

    def add_failure(
        self,
        cluster_id: str | None,
        outcome: str,
        reason: str,
        *,
        stage: str = "details",
        http_status: int | None = None,
        raw_body: bytes | None = None,
    ) -> None:
        """Queue a cluster that failed, was gone (404) or skipped, with its reason."""
        if outcome not in ("failed", "gone", "skipped"):
            raise ValueError(f"unknown outcome {outcome!r}")
        # Redacted again here, at the last door: a reason can quote what the provider sent.
        body = redact_bytes(raw_body[:MAX_FAILURE_BODY_BYTES]) if raw_body is not None else None
        self.failures.append(
            {
                "run_id": self.run_id,
                "cluster_id": cluster_id,
                "stage": stage,
                "outcome": outcome,
                "http_status": http_status,
                "reason": redact_text(reason or outcome),
                "raw_body": body,
                "recorded_at": datetime.now(UTC),
            }
        )
        setattr(self, outcome, getattr(self, outcome) + 1)

    def add_result(self, result: Any) -> None:
        """Queue a `pipeline.client.FetchResult` (ok, gone, failed or skipped)."""
        if result.outcome == "ok" and result.detail is not None:
            self.add_detail(result.detail, raw_gzip=result.raw_gzip)
        elif result.outcome in ("gone", "skipped"):
            self.add_failure(
                result.cluster_id,
                result.outcome,
                result.reason or result.outcome,
                http_status=result.http_status,
            )
        else:
            self.add_failure(
                result.cluster_id,
                "failed",
                result.reason or "failed",
                http_status=result.http_status,
                raw_body=result.raw_body,
            )


def load_detail(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    run_id: str,
    detail: NormalizedDetail,
    *,
    raw_body: bytes | None = None,
) -> None:
    """Write one normalized detail (and its raw body) in its own transaction; `LoadError` when
    it cannot be stored. For many details use a `LoadBatch` and `write_batch`."""
    batch = LoadBatch(run_id)
    if not batch.add_detail(detail, raw_body=raw_body):
        raise LoadError(batch.failures[0]["reason"])
    batch.fetched = 0  # a direct load is not a fetch the ledger should count
    write_batch(con, path, batch, count=False)


def write_batch(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    batch: LoadBatch,
    *,
    requests_made: int | None = None,
    retries: int | None = None,
    count: bool = True,
    transaction: bool = True,
) -> int:
    """Commit a batch: rows, raw bodies, failures and the ledger's counters, atomically.

    If the database refuses the batch as a whole (a value no column can hold), each detail is
    retried alone so that only the bad ones become `load` failures. Returns the number of
    details written. `transaction=False` writes inside the caller's transaction. `path` names
    the database in a `StoreWriteError`.
    """
    try:
        _write(
            con,
            path,
            batch,
            batch.pending,
            requests_made=requests_made,
            retries=retries,
            count=count,
            transaction=transaction,
        )
        return len(batch.pending)
    except DATA_ERRORS as exc:
        if not batch.pending or not transaction:
            raise
        _log.debug("batch refused (%s); loading its details one by one", exc)
    good: list[_Pending] = []
    for item in batch.pending:
        probe = LoadBatch(batch.run_id, keep_raw=batch.keep_raw, pending=[item])
        try:
            _write(con, path, probe, [item], count=False, transaction=True, dry_run=True)
            good.append(item)
        except DATA_ERRORS as exc:
            batch.fetched -= 1
            batch.add_failure(item.cluster_id, "failed", f"cannot load: {exc}", stage="load")
    _write(
        con,
        path,
        batch,
        good,
        requests_made=requests_made,
        retries=retries,
        count=count,
        transaction=transaction,
    )
    return len(good)


def _write(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    batch: LoadBatch,
    pending: list[_Pending],
    *,
    requests_made: int | None = None,
    retries: int | None = None,
    count: bool,
    transaction: bool,
    dry_run: bool = False,
) -> None:
    # Imported here: the store imports this module (its thin methods delegate to it).
    from pipeline.store import rollback_quietly, write_error

    rows = _Rows([item.columns for item in pending])
    if transaction:
        con.begin()
    registered: list[str] = []
    try:
        for table in STAGED:
            name = f"_in_{table}"
            con.register(name, rows.arrow(table))
            registered.append(name)
        if pending:
            _write_snapshots(con)
            _write_buckets(con, rows)
            raws = [item.raw for item in pending if item.raw is not None]
            write_bodies(con, raws)
        if batch.failures and not dry_run:
            _write_failures(con, batch.failures)
        if count and not dry_run:
            con.execute(
                "update meta.runs set clusters_fetched = clusters_fetched + ?,"
                " clusters_failed = clusters_failed + ?, clusters_gone = clusters_gone + ?,"
                " clusters_skipped = clusters_skipped + ?,"
                " requests_made = coalesce(?, requests_made),"
                " retries = coalesce(?, retries) where run_id = ?",
                [
                    batch.fetched,
                    batch.failed,
                    batch.gone,
                    batch.skipped,
                    requests_made,
                    retries,
                    batch.run_id,
                ],
            )
        if transaction:
            if dry_run:
                con.rollback()
            else:
                con.commit()
    except BaseException as exc:
        if transaction:
            rollback_quietly(con)
        if isinstance(exc, OSError) or (
            isinstance(exc, duckdb.Error) and not isinstance(exc, DATA_ERRORS)
        ):
            raise write_error(path, exc) from exc
        raise
    finally:
        for name in registered:
            with contextlib.suppress(duckdb.Error):
                con.unregister(name)


def _write_failures(con: duckdb.DuckDBPyConnection, failures: list[dict[str, Any]]) -> None:
    con.executemany(
        "insert into meta.run_failures (run_id, cluster_id, stage, outcome,"
        " http_status, reason, raw_body, recorded_at) values (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                f["run_id"],
                f["cluster_id"],
                f["stage"],
                f["outcome"],
                f["http_status"],
                f["reason"],
                f["raw_body"],
                f["recorded_at"],
            )
            for f in failures
        ],
    )


def _write_snapshots(con: duckdb.DuckDBPyConnection) -> None:
    # The last detail of the batch for a snapshot key wins, as a set of rows per table.
    con.execute(
        "create or replace temp table _snap_win as select cluster_id, snapshot_at,"
        " max(_seq) as _seq from _in_cluster_snapshots group by all"
    )
    for table in SNAPSHOT_TABLES:
        cols = ", ".join(TABLES[table].names)
        con.execute(
            f"delete from snap.{table} t using _snap_win w"
            " where t.cluster_id = w.cluster_id and t.snapshot_at = w.snapshot_at"
        )
        con.execute(
            f"insert into snap.{table} ({cols}) select {cols} from _in_{table} i"
            " semi join _snap_win w on i.cluster_id = w.cluster_id"
            " and i.snapshot_at = w.snapshot_at and i._seq = w._seq"
        )


def _write_buckets(con: duckdb.DuckDBPyConnection, rows: _Rows) -> None:
    if not rows.count("metric_points"):
        return
    # Candidates: per bucket, the newest snapshot in the batch (later detail on a tie). When no
    # cluster comes twice in the batch (a live night), every bucket is its own candidate: a
    # detail holds each bucket once (normalize keeps a bucket's last entry), and the window's
    # sort cost 0.15 CPU s per 1,000 clusters for nothing.
    clusters = rows.cols["cluster_snapshots"]["cluster_id"]
    once = len(set(clusters)) == len(clusters)
    con.execute(
        "create or replace temp table _bucket_win as select * from _in_metric_points"
        + (
            ""
            if once
            else " qualify row_number() over (partition by cluster_id, bucket_at"
            " order by snapshot_at desc, _seq desc) = 1"
        )
    )
    # The bucket lower bound lets DuckDB skip old row groups by their min/max (zonemaps)
    # instead of scanning all history on every batch.
    oldest = min(rows.cols["metric_points"]["bucket_at"])
    # A stored bucket from a newer snapshot stays (a backfill or replay of an older one).
    con.execute(
        "delete from _bucket_win w using snap.metric_points m"
        " where m.bucket_at >= ? and m.cluster_id = w.cluster_id"
        " and m.bucket_at = w.bucket_at and m.snapshot_at > w.snapshot_at",
        [oldest],
    )
    for table in ("metric_points", "gpu_metric_points"):
        con.execute(
            f"delete from snap.{table} t using _bucket_win w"
            " where t.bucket_at >= ? and t.cluster_id = w.cluster_id"
            " and t.bucket_at = w.bucket_at",
            [oldest],
        )
    cols = ", ".join(TABLES["metric_points"].names)
    con.execute(f"insert into snap.metric_points ({cols}) select {cols} from _bucket_win")
    # Only the GPUs of the winning points: joined through the point's row in the batch.
    con.execute(
        f"insert into snap.gpu_metric_points ({', '.join(TABLES['gpu_metric_points'].names)})"
        " select w.run_id, w.cluster_id, w.bucket_at, g.gpu_id, w.snapshot_at,"
        " g.utilization, g.memory_used_gb, g.power_draw_w"
        " from _in_gpu_metric_points g join _bucket_win w on g._pt = w._row"
    )
