"""The DuckDB store: migrations, the runs ledger, the lock, loading canonical details, raw store.

One file holds everything (`gpucost.duckdb` by default), created readable by its owner only
(mode 0600, like its lock file) because it holds cost data:

- `meta.*`: `schema_version` (the migrations applied), `runs` (one row per run: status
  running | complete | partial | failed and its counters) and `run_failures` (each cluster that
  failed, was gone or skipped, with the reason).
- `snap.*`: the normalized snapshot tables that `sql/staging` reads (migrations/0001_initial.sql).
- `raw.responses`: every detail response as received (already redacted by the client),
  gzip-compressed, kept `store.raw_retention_days` days; `gpucost snapshot --from-raw` rebuilds
  `snap.*` from them.

Loading is batched: a `LoadBatch` collects the results of N clusters (a result's data points
come as columns from normalization when they took its fast path, else from the dicts),
`Store.write_batch` turns them into Arrow tables and writes them, their raw bodies, their failures
and the ledger's counters in ONE transaction. A `kill -9` therefore loses at most the batch in
flight and never leaves a run that looks complete (only `finish_run` marks that). Keys make
reloads idempotent:

- snapshot-grain tables (`cluster_snapshots`, `cost_components`, `projections`, `alerts`,
  `gpu_current`) are keyed by (cluster_id, snapshot_at[, ...]); a reload of the same snapshot
  replaces its rows as a set.
- bucket tables (`metric_points`, `gpu_metric_points`) store each (cluster_id, bucket_at) once
  across overlapping windows. A bucket is written when the incoming snapshot is at least as new
  as the stored one (so a revised bucket takes the newest snapshot's value, whatever the load
  order), and its per-GPU rows are replaced as a set (a resize changes the GPU count).
  These two tables carry no PRIMARY KEY on purpose: measured on DuckDB 2.0
  (bench/store_keys.py), an index made the nightly delete-then-insert ~30x slower and the file
  ~18x larger, and INSERT OR REPLACE cannot drop the GPUs a resize removed; uniqueness is the
  loader's job and is tested.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa
from filelock import FileLock, Timeout

from pipeline import duck
from pipeline.errors import ConfigError, GpucostError, LockedError
from pipeline.log import get_logger
from pipeline.redact import redact_bytes, redact_text
from pipeline.tables import MONEY_ARROW, SNAPSHOT_TABLES, TABLES, TS

if TYPE_CHECKING:
    from pipeline.normalize import PointColumns

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
FILE_MODE = 0o600
# Measured (8-GPU details): 25 -> 4.3 ms per cluster to write, 50 -> 3.4, 100 -> 2.2, 200 -> 2.0.
DEFAULT_BATCH_CLUSTERS = 100
RAW_ENCODING = "gzip"
# Level 1 compresses these JSON bodies about 6x at a fraction of level 6's CPU time.
RAW_COMPRESSLEVEL = 1
# A failure's raw body is kept for diagnosis, not as an archive: bound it.
MAX_FAILURE_BODY_BYTES = 256 * 1024
HORIZON_HOURS = {"daily": 24, "weekly": 168, "monthly": 720}
# DECIMAL(18, 6): 12 integer digits.
_MONEY_LIMIT = Decimal(10) ** 12
_MONEY_QUANTUM = Decimal("0.000001")
_MIGRATION_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")

_log = get_logger("store")
# Errors about a value (not about the database): only these make a batch fall back to loading
# its details one by one; an I/O error aborts the batch.
_DATA_ERRORS = (
    duckdb.ConversionException,
    duckdb.ConstraintException,
    duckdb.InvalidInputException,
    duckdb.OutOfRangeException,
    duckdb.TypeMismatchException,
    pa.ArrowException,
)


class StoreError(GpucostError):
    """The database cannot be used: newer than this code, or a migration failed."""


class LoadError(GpucostError):
    """One canonical detail cannot be turned into rows (the reason names the field)."""


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
# Rows: canonical detail -> column lists
# --------------------------------------------------------------------------------------------

_TS = TS
_MONEY = MONEY_ARROW


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


# Column name -> Arrow type, in the order of the tables' columns (pipeline/tables.py).
_SCHEMAS: dict[str, dict[str, pa.DataType]] = {t: _staged(t) for t in TABLES}
_GPU_POINT_COLUMNS = tuple(TABLES["gpu_metric_points"].names)
_SNAPSHOT_TABLES = SNAPSHOT_TABLES


def _columns(table: str) -> list[str]:
    if table == "gpu_metric_points":
        return list(_GPU_POINT_COLUMNS)
    return [c for c in _SCHEMAS[table] if not c.startswith("_")]


class _Rows:
    """Column lists for every snap table; one instance per detail, merged into the batch."""

    def __init__(self) -> None:
        self.cols: dict[str, dict[str, list[Any]]] = {
            t: {c: [] for c in schema} for t, schema in _SCHEMAS.items()
        }

    def add(self, table: str, row: Mapping[str, Any]) -> None:
        for name, values in self.cols[table].items():
            values.append(row.get(name))

    def extend(self, other: _Rows) -> None:
        for table, cols in self.cols.items():
            for name, values in cols.items():
                values.extend(other.cols[table][name])

    def count(self, table: str) -> int:
        return len(next(iter(self.cols[table].values())))

    def arrow(self, table: str) -> pa.Table:
        schema = _SCHEMAS[table]
        columns = {
            name: _to_arrow(values, schema[name]) for name, values in self.cols[table].items()
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
    if len(values) < 64 or kind not in (_TS, _MONEY):
        return pa.array(values, type=kind)
    distinct = dict.fromkeys(values)
    if len(distinct) * 4 > len(values):
        return pa.array(values, type=kind)
    position = {v: i for i, v in enumerate(distinct)}
    codes = pa.array(list(map(position.__getitem__, values)), type=pa.int32())
    return pa.DictionaryArray.from_arrays(codes, pa.array(list(distinct), type=kind)).cast(kind)


def _get(doc: Any, *path: str) -> Any:
    """doc[a][b]... or None when any part is missing or not a mapping."""
    for key in path:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc


def _money(value: Any, where: str) -> Decimal | None:
    """A money value as DECIMAL(18, 6); more than 6 places are rounded half-even."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        # A binary float here means normalization let one through: refuse rather than guess.
        raise LoadError(f"{where}: money must be a decimal, got {type(value).__name__}")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(value)
        if not amount.is_finite():
            raise LoadError(f"{where}: money must be finite, got {value!r}")
        if amount.as_tuple().exponent < -6:  # type: ignore[operator]
            amount = amount.quantize(_MONEY_QUANTUM)
    except InvalidOperation:
        raise LoadError(f"{where}: not a decimal amount: {value!r}") from None
    if abs(amount) >= _MONEY_LIMIT:
        raise LoadError(f"{where}: amount {amount} exceeds DECIMAL(18, 6)")
    return amount


def _ts(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise LoadError(f"{where}: expected an aware datetime, got {value!r}")
    return value


def _num(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise LoadError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float | Decimal) and value == int(value):
            return int(value)
        raise LoadError(f"{where}: expected an integer, got {value!r}")
    return value


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def snapshot_instant(detail: Mapping[str, Any]) -> datetime | None:
    """The snapshot's data time: `metrics.current.timestamp`, else `updated_at`."""
    return _get(detail, "metrics", "current", "timestamp") or detail.get("updated_at")


def _interval(metrics: Mapping[str, Any], points: list[Any]) -> int:
    """The bucket length: as sent, else the smallest gap between points, else one hour."""
    sent = _int(metrics.get("interval_seconds"), "metrics.interval_seconds")
    if sent:
        return sent
    stamps = sorted(
        p["timestamp"]
        for p in points
        if isinstance(p, Mapping) and isinstance(p.get("timestamp"), datetime)
    )
    gaps = [int((b - a).total_seconds()) for a, b in zip(stamps, stamps[1:], strict=False)]
    gaps = [g for g in gaps if g > 0]
    return min(gaps) if gaps else 3600


def detail_rows(
    run_id: str, detail: Mapping[str, Any], seq: int = 0, columns: PointColumns | None = None
) -> _Rows:
    """One canonical detail as rows of every snap table; `LoadError` names a bad field.

    `columns` (from `normalize_detail_columns`, for this very detail) lets the data points be
    taken as columns instead of walking their dicts again.
    """
    rows = _Rows()
    cluster_id = detail.get("id")
    if not isinstance(cluster_id, str) or not cluster_id:
        raise LoadError("id: missing")
    snap_at = _ts(snapshot_instant(detail), "metrics.current.timestamp")
    if snap_at is None:
        raise LoadError("no snapshot instant: neither metrics.current.timestamp nor updated_at")
    sent_cost = detail.get("cost")
    cost: Mapping[str, Any] = sent_cost if isinstance(sent_cost, Mapping) else {}
    currency = _str(cost.get("currency"))
    breakdown = cost.get("cost_breakdown")
    metrics = detail.get("metrics") if isinstance(detail.get("metrics"), Mapping) else None
    current = _get(metrics, "current") if metrics else None
    points = _get(metrics, "historical", "data_points") if metrics else None
    if points is not None and not isinstance(points, list):
        raise LoadError("metrics.historical.data_points: not a list")
    points = points or []
    key = {"run_id": run_id, "cluster_id": cluster_id, "snapshot_at": snap_at, "_seq": seq}
    health = _get(detail, "status_details", "health_checks") or {}
    config = detail.get("configuration") or {}
    rows.add(
        "cluster_snapshots",
        {
            **key,
            "name": _str(detail.get("name")),
            "description": _str(detail.get("description")),
            "status": _str(detail.get("status")),
            "status_message": _str(_get(detail, "status_details", "message")),
            "last_status_change": _ts(
                _get(detail, "status_details", "last_status_change"),
                "status_details.last_status_change",
            ),
            "created_at": _ts(detail.get("created_at"), "created_at"),
            "updated_at": _ts(detail.get("updated_at"), "updated_at"),
            "gpu_type": _str(config.get("gpu_type")),
            "gpu_count": _int(config.get("gpu_count"), "configuration.gpu_count"),
            "cpu_cores": _int(config.get("cpu_cores"), "configuration.cpu_cores"),
            "memory_gb": _num(config.get("memory_gb"), "configuration.memory_gb"),
            "storage_gb": _num(config.get("storage_gb"), "configuration.storage_gb"),
            "storage_type": _str(config.get("storage_type")),
            "region": _str(config.get("region")),
            "availability_zone": _str(config.get("availability_zone")),
            "project_id": _str(_get(detail, "project_info", "project_id")),
            "project_name": _str(_get(detail, "project_info", "project_name")),
            "owner_id": _str(_get(detail, "project_info", "owner_id")),
            "owner_email": _str(_get(detail, "project_info", "owner_email")),
            "template_id": _str(_get(detail, "template_info", "template_id")),
            "template_name": _str(_get(detail, "template_info", "template_name")),
            "template_version": _str(_get(detail, "template_info", "template_version")),
            "docker_image": _str(_get(detail, "template_info", "docker_image")),
            "cuda_version": _str(_get(detail, "environment", "cuda_version")),
            "gpu_health": _str(health.get("gpu_health")),
            "storage_health": _str(health.get("storage_health")),
            "network_health": _str(health.get("network_health")),
            "docker_health": _str(health.get("docker_health")),
            "currency": currency,
            "hourly_rate": _money(cost.get("current_hourly_rate"), "cost.current_hourly_rate"),
            "total_cost_to_date": _money(
                _get(breakdown, "total_cost_to_date"), "cost.cost_breakdown.total_cost_to_date"
            ),
            "window_cost": _money(
                _get(breakdown, "window_cost"), "cost.cost_breakdown.window_cost"
            ),
            "metrics_window": _str(metrics.get("window")) if metrics else None,
            "interval_seconds": _interval(metrics, points) if metrics else None,
            "has_metrics": metrics is not None,
            "has_gpu_series": any(
                isinstance(p, Mapping) and isinstance(p.get("gpus"), list) and p["gpus"]
                for p in points
            ),
            "has_cost_breakdown": isinstance(breakdown, Mapping),
            "current_gpu_utilization": _num(
                _get(current, "gpu_utilization"), "metrics.current.gpu_utilization"
            ),
            "current_gpu_memory_utilization": _num(
                _get(current, "gpu_memory_utilization"), "metrics.current.gpu_memory_utilization"
            ),
            "current_cpu_utilization": _num(
                _get(current, "cpu_utilization"), "metrics.current.cpu_utilization"
            ),
            "current_memory_utilization": _num(
                _get(current, "memory_utilization"), "metrics.current.memory_utilization"
            ),
        },
    )
    if isinstance(breakdown, Mapping):
        for name, value in breakdown.items():
            if name.endswith("_cost_per_hour") and value is not None:
                rows.add(
                    "cost_components",
                    {
                        **key,
                        "component": name.removesuffix("_cost_per_hour"),
                        "cost_per_hour": _money(value, f"cost.cost_breakdown.{name}"),
                        "currency": currency,
                    },
                )
    projections = cost.get("cost_projections")
    if isinstance(projections, Mapping):
        for horizon, hours in HORIZON_HOURS.items():
            value = projections.get(horizon)
            if value is not None:
                rows.add(
                    "projections",
                    {
                        **key,
                        "horizon": horizon,
                        "horizon_hours": hours,
                        "projected_cost": _money(value, f"cost.cost_projections.{horizon}"),
                        "currency": currency,
                        "basis": _str(projections.get("projection_basis")),
                    },
                )
    if metrics:
        _alert_rows(rows, key, metrics.get("alerts"))
        _gpu_current_rows(rows, key, _get(current, "gpus"))
        interval = _interval(metrics, points)
        if columns is not None and len(columns.bucket_at) == len(points):
            _column_rows(rows, run_id, cluster_id, snap_at, seq, currency, interval, columns)
        else:
            _point_rows(rows, run_id, cluster_id, snap_at, seq, currency, interval, points)
    return rows


def _alert_rows(rows: _Rows, key: dict[str, Any], alerts: Any) -> None:
    if not isinstance(alerts, list):
        return
    by_id: dict[str, dict[str, Any]] = {}
    for i, alert in enumerate(alerts):
        if not isinstance(alert, Mapping):
            raise LoadError(f"metrics.alerts[{i}]: not an object")
        where = f"metrics.alerts[{i}]"
        # The key needs an id; an alert the provider sent without one is kept by position.
        alert_id = _str(alert.get("alert_id")) or f"#{i}"
        by_id[alert_id] = {
            **key,
            "alert_id": alert_id,
            "severity": _str(alert.get("severity")),
            "metric": _str(alert.get("metric")),
            "condition": _str(alert.get("condition")),
            "threshold": _num(alert.get("threshold"), f"{where}.threshold"),
            "current_value": _num(alert.get("current_value"), f"{where}.current_value"),
            "duration": _str(alert.get("duration")),
            "triggered_at": _ts(alert.get("triggered_at"), f"{where}.triggered_at"),
            "resolved_at": _ts(alert.get("resolved_at"), f"{where}.resolved_at"),
            "message": _str(alert.get("message")),
        }
    for row in by_id.values():
        rows.add("alerts", row)


def _gpu_current_rows(rows: _Rows, key: dict[str, Any], gpus: Any) -> None:
    if not isinstance(gpus, list):
        return
    by_id: dict[str, dict[str, Any]] = {}
    for i, gpu in enumerate(gpus):
        where = f"metrics.current.gpus[{i}]"
        if not isinstance(gpu, Mapping) or gpu.get("gpu_id") is None:
            raise LoadError(f"{where}: no gpu_id")
        gpu_id = str(gpu["gpu_id"])
        by_id[gpu_id] = {
            **key,
            "gpu_id": gpu_id,
            "utilization": _num(gpu.get("utilization"), f"{where}.utilization"),
            "memory_used_gb": _num(gpu.get("memory_used_gb"), f"{where}.memory_used_gb"),
            "memory_total_gb": _num(gpu.get("memory_total_gb"), f"{where}.memory_total_gb"),
            "temperature_c": _num(gpu.get("temperature_c"), f"{where}.temperature_c"),
            "power_draw_w": _num(gpu.get("power_draw_w"), f"{where}.power_draw_w"),
        }
    for row in by_id.values():
        rows.add("gpu_current", row)


_NUMBER_TYPES = frozenset({float, int, type(None)})


def _check_numbers(values: list[Any], where: Any) -> None:
    """Make every value of a float column a float or None, naming the first bad one.

    The fast path is one pass of type checks; `where(k)` builds the field path of item k only
    when something is wrong.
    """
    if all(v.__class__ in _NUMBER_TYPES for v in values):
        return
    for k, v in enumerate(values):
        if v.__class__ not in _NUMBER_TYPES:
            values[k] = _num(v, where(k))


def _column_rows(
    rows: _Rows,
    run_id: str,
    cluster_id: str,
    snap_at: datetime,
    seq: int,
    currency: str | None,
    interval: int,
    columns: PointColumns,
) -> None:
    """The data points from normalization's columns: already typed, buckets and GPU ids
    distinct, so they are appended whole; only money is checked against DECIMAL(18, 6)."""
    mp = rows.cols["metric_points"]
    gm = rows.cols["gpu_metric_points"]
    n_points = len(columns.bucket_at)
    mp["run_id"].extend([run_id] * n_points)
    mp["cluster_id"].extend([cluster_id] * n_points)
    mp["bucket_at"].extend(columns.bucket_at)
    mp["interval_seconds"].extend([interval] * n_points)
    mp["snapshot_at"].extend([snap_at] * n_points)
    mp["currency"].extend([currency] * n_points)
    mp["_seq"].extend([seq] * n_points)
    mp["status"].extend(columns.status)
    mp["gpu_utilization"].extend(columns.gpu_utilization)
    mp["gpu_memory_utilization"].extend(columns.gpu_memory_utilization)
    mp["cpu_utilization"].extend(columns.cpu_utilization)
    mp["memory_utilization"].extend(columns.memory_utilization)
    mp["cost"].extend(
        [
            _money(c, f"metrics.historical.data_points[{i}].cost") if c is not None else None
            for i, c in enumerate(columns.cost)
        ]
    )
    mp["gpu_series_count"].extend(columns.gpu_series_count)
    gm["gpu_id"].extend(columns.gpu_id)
    gm["utilization"].extend(columns.utilization)
    gm["memory_used_gb"].extend(columns.memory_used_gb)
    gm["power_draw_w"].extend(columns.power_draw_w)


def _point_rows(
    rows: _Rows,
    run_id: str,
    cluster_id: str,
    snap_at: datetime,
    seq: int,
    currency: str | None,
    interval: int,
    points: list[Any],
) -> None:
    """The hot loop (168 points x 8 GPUs per cluster): whole columns at a time."""
    latest: dict[datetime, tuple[int, Mapping[str, Any]]] = {}
    for i, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise LoadError(f"metrics.historical.data_points[{i}]: not an object")
        bucket = point.get("timestamp")
        if bucket is None:
            raise LoadError(f"metrics.historical.data_points[{i}].timestamp: missing")
        if bucket.__class__ is not datetime or bucket.tzinfo is None:
            _ts(bucket, f"metrics.historical.data_points[{i}].timestamp")
        latest[bucket] = (i, point)  # a bucket sent twice: the later entry wins
    mp = rows.cols["metric_points"]
    gm = rows.cols["gpu_metric_points"]
    n_points = len(latest)
    entries = list(latest.values())
    mp["run_id"].extend([run_id] * n_points)
    mp["cluster_id"].extend([cluster_id] * n_points)
    mp["bucket_at"].extend(latest)
    mp["interval_seconds"].extend([interval] * n_points)
    mp["snapshot_at"].extend([snap_at] * n_points)
    mp["currency"].extend([currency] * n_points)
    mp["_seq"].extend([seq] * n_points)
    mp["status"].extend([_str(p.get("status")) for _, p in entries])
    for name in (
        "gpu_utilization",
        "gpu_memory_utilization",
        "cpu_utilization",
        "memory_utilization",
    ):
        column = [p.get(name) for _, p in entries]
        _check_numbers(
            column, lambda k, n=name: f"metrics.historical.data_points[{entries[k][0]}].{n}"
        )
        mp[name].extend(column)
    mp["cost"].extend(
        [_money(p.get("cost"), f"metrics.historical.data_points[{i}].cost") for i, p in entries]
    )
    counts = mp["gpu_series_count"]
    gpu_points = []
    for i, point in entries:
        gpus = point.get("gpus")
        if gpus is None:
            counts.append(None)
            continue
        if not isinstance(gpus, list):
            raise LoadError(f"metrics.historical.data_points[{i}].gpus: not a list")
        counts.append(len(gpus))
        if gpus:
            gpu_points.append((i, gpus))
    for i, gpus in gpu_points:
        n = len(gpus)
        try:
            ids = [g["gpu_id"] for g in gpus]
            utilization = [g.get("utilization") for g in gpus]
            memory = [g.get("memory_used_gb") for g in gpus]
            power = [g.get("power_draw_w") for g in gpus]
        except (KeyError, TypeError, AttributeError):
            raise LoadError(
                f"metrics.historical.data_points[{i}].gpus: an entry without gpu_id"
            ) from None
        if not all(g.__class__ is str for g in ids):
            if any(g is None for g in ids):
                raise LoadError(f"metrics.historical.data_points[{i}].gpus: no gpu_id")
            ids = [str(g) for g in ids]
        if len(set(ids)) != n:
            raise LoadError(f"metrics.historical.data_points[{i}].gpus: a gpu_id sent twice")
        for column, name in (
            (utilization, "utilization"),
            (memory, "memory_used_gb"),
            (power, "power_draw_w"),
        ):
            _check_numbers(
                column, lambda k, n=name, i=i: f"metrics.historical.data_points[{i}].gpus[{k}].{n}"
            )
        gm["gpu_id"].extend(ids)
        gm["utilization"].extend(utilization)
        gm["memory_used_gb"].extend(memory)
        gm["power_draw_w"].extend(power)


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


@dataclass
class _Pending:
    cluster_id: str
    rows: _Rows
    raw: tuple[str, str, datetime, datetime | None, bytes] | None


@dataclass
class LoadBatch:
    """What `Store.write_batch` commits at once: details, raw bodies, failures, counters.

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
        detail: Mapping[str, Any],
        *,
        raw_body: bytes | None = None,
        fetched_at: datetime | None = None,
        run_id: str | None = None,
        columns: PointColumns | None = None,
    ) -> bool:
        """Queue one canonical detail; a detail that cannot be loaded becomes a failure.

        `run_id` (default: the batch's run) is what the rows carry: `--from-raw` keeps the
        id of the run that fetched the response. Returns False when the detail was refused.
        """
        self._seq += 1
        cluster_id = str(detail.get("id") or "")
        try:
            rows = detail_rows(run_id or self.run_id, detail, self._seq, columns)
        except LoadError as exc:
            self.add_failure(
                cluster_id or None, "failed", f"cannot load: {exc}", stage="load", raw_body=raw_body
            )
            return False
        raw = None
        if raw_body is not None and self.keep_raw:
            raw = (
                self.run_id,
                cluster_id,
                fetched_at or datetime.now(UTC),
                snapshot_instant(detail),
                gzip.compress(raw_body, compresslevel=RAW_COMPRESSLEVEL, mtime=0),
            )
        self.pending.append(_Pending(cluster_id, rows, raw))
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
            self.add_detail(
                result.detail,
                raw_body=result.raw_body,
                columns=getattr(result, "columns", None),
            )
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

    # -- loading -----------------------------------------------------------------------------

    def load_detail(
        self, run_id: str, detail: Mapping[str, Any], *, raw_body: bytes | None = None
    ) -> None:
        """Write one canonical detail (and its raw body) in its own transaction.

        Raises `LoadError` when the detail cannot be turned into rows. For many details use a
        `LoadBatch` and `write_batch`: it is much faster.
        """
        batch = LoadBatch(run_id)
        if not batch.add_detail(detail, raw_body=raw_body):
            raise LoadError(batch.failures[0]["reason"])
        batch.fetched = 0  # a direct load is not a fetch the ledger should count
        self.write_batch(batch, count=False)

    def write_batch(
        self,
        batch: LoadBatch,
        *,
        requests_made: int | None = None,
        retries: int | None = None,
        count: bool = True,
        transaction: bool = True,
    ) -> int:
        """Commit a batch: rows, raw bodies, failures and the ledger's counters, atomically.

        If the database refuses the batch as a whole (a value no column can hold), each detail
        is retried alone so that only the bad ones become `load` failures. Returns the number
        of details written. `transaction=False` writes inside the caller's transaction.
        """
        try:
            self._write(batch, batch.pending, requests_made, retries, count, transaction)
            return len(batch.pending)
        except _DATA_ERRORS as exc:
            if not batch.pending or not transaction:
                raise
            _log.debug("batch refused (%s); loading its details one by one", exc)
        good: list[_Pending] = []
        for item in batch.pending:
            probe = LoadBatch(batch.run_id, keep_raw=batch.keep_raw, pending=[item])
            try:
                self._write(probe, [item], None, None, False, True, dry_run=True)
                good.append(item)
            except _DATA_ERRORS as exc:
                batch.fetched -= 1
                batch.add_failure(item.cluster_id, "failed", f"cannot load: {exc}", stage="load")
        self._write(batch, good, requests_made, retries, count, transaction)
        return len(good)

    def _write(
        self,
        batch: LoadBatch,
        pending: list[_Pending],
        requests_made: int | None,
        retries: int | None,
        count: bool,
        transaction: bool,
        dry_run: bool = False,
    ) -> None:
        rows = _Rows()
        for item in pending:
            rows.extend(item.rows)
        con = self.con
        if transaction:
            con.begin()
        registered: list[str] = []
        try:
            for table in _SCHEMAS:
                name = f"_in_{table}"
                con.register(name, rows.arrow(table))
                registered.append(name)
            if pending:
                self._write_snapshots(con)
                self._write_buckets(con, rows)
                raws = [item.raw for item in pending if item.raw is not None]
                if raws:
                    # executemany prepares per row: an Arrow table is one insert
                    con.register(
                        "_in_raw",
                        pa.table(
                            {
                                "run_id": pa.array([r[0] for r in raws], pa.string()),
                                "cluster_id": pa.array([r[1] for r in raws], pa.string()),
                                "fetched_at": pa.array([r[2] for r in raws], _TS),
                                "snapshot_at": pa.array([r[3] for r in raws], _TS),
                                "body": pa.array([r[4] for r in raws], pa.binary()),
                            }
                        ),
                    )
                    registered.append("_in_raw")
                    con.execute(
                        "insert into raw.responses (run_id, cluster_id, fetched_at, snapshot_at,"
                        " encoding, body) select run_id, cluster_id, fetched_at, snapshot_at,"
                        f" '{RAW_ENCODING}', body from _in_raw"
                    )
            if batch.failures and not dry_run:
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
                        for f in batch.failures
                    ],
                )
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
                isinstance(exc, duckdb.Error) and not isinstance(exc, _DATA_ERRORS)
            ):
                raise write_error(self.path, exc) from exc
            raise
        finally:
            for name in registered:
                with contextlib.suppress(duckdb.Error):
                    con.unregister(name)

    @staticmethod
    def _write_snapshots(con: duckdb.DuckDBPyConnection) -> None:
        # The last detail of the batch for a snapshot key wins, as a set of rows per table.
        con.execute(
            "create or replace temp table _snap_win as select cluster_id, snapshot_at,"
            " max(_seq) as _seq from _in_cluster_snapshots group by all"
        )
        for table in _SNAPSHOT_TABLES:
            cols = ", ".join(_columns(table))
            con.execute(
                f"delete from snap.{table} t using _snap_win w"
                " where t.cluster_id = w.cluster_id and t.snapshot_at = w.snapshot_at"
            )
            con.execute(
                f"insert into snap.{table} ({cols}) select {cols} from _in_{table} i"
                " semi join _snap_win w on i.cluster_id = w.cluster_id"
                " and i.snapshot_at = w.snapshot_at and i._seq = w._seq"
            )

    @staticmethod
    def _write_buckets(con: duckdb.DuckDBPyConnection, rows: _Rows) -> None:
        if not rows.count("metric_points"):
            return
        # Candidates: per bucket, the newest snapshot in the batch (later detail on a tie).
        con.execute(
            "create or replace temp table _bucket_win as select * from _in_metric_points"
            " qualify row_number() over (partition by cluster_id, bucket_at"
            " order by snapshot_at desc, _seq desc) = 1"
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
        cols = ", ".join(c for c in _columns("metric_points"))
        con.execute(f"insert into snap.metric_points ({cols}) select {cols} from _bucket_win")
        # Only the GPUs of the winning points: joined through the point's row in the batch.
        con.execute(
            f"insert into snap.gpu_metric_points ({', '.join(_GPU_POINT_COLUMNS)})"
            " select w.run_id, w.cluster_id, w.bucket_at, g.gpu_id, w.snapshot_at,"
            " g.utilization, g.memory_used_gb, g.power_draw_w"
            " from _in_gpu_metric_points g join _bucket_win w on g._pt = w._row"
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
        for table in _SCHEMAS:
            self.con.execute(f"delete from snap.{table} where run_id in ?", [ids])
