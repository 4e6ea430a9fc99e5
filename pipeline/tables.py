"""The snapshot tables, declared once: every column's name, type, source and meaning.

Each `snap.*` table the snapshot writes from a provider response is declared here, column by
column, in the order of its table: the DuckDB type (as `information_schema.columns.data_type`
spells it), where the value comes from in the provider's document (`source`: a path of the
canonical, snake_case document; `[]` walks a list; `(run)` and `(derived)` for what the document
does not hold as such) and what it means. From these declarations come:

- the Arrow schemas the writer converts the normalized columns with (`arrow_schema`);
- the rows the normalizer builds (`pipeline.normalize` reads each column from its `source`);
- a test that the migrations, applied to a fresh database, give exactly these columns and types;
- docs/store.md's column tables (`pipeline.docgen`; a test checks the file is current);
- the test fixtures' rows (`insert_rows`), so no test spells a table's columns by hand.

A new column is one `Column` here plus its migration (and staging SQL when a model reads it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

VARCHAR = "VARCHAR"
INTEGER = "INTEGER"
DOUBLE = "DOUBLE"
BOOLEAN = "BOOLEAN"
TIMESTAMPTZ = "TIMESTAMP WITH TIME ZONE"
MONEY = "DECIMAL(18,6)"

TS = pa.timestamp("us", tz="UTC")
MONEY_ARROW = pa.decimal128(18, 6)
_ARROW: dict[str, pa.DataType] = {
    VARCHAR: pa.string(),
    INTEGER: pa.int32(),
    DOUBLE: pa.float64(),
    BOOLEAN: pa.bool_(),
    TIMESTAMPTZ: TS,
    MONEY: MONEY_ARROW,
}
# What a run or the loader supplies (not a path of the document).
RUN = "(run)"
DERIVED = "(derived)"


@dataclass(frozen=True)
class Column:
    """One column of a snapshot table: name, DuckDB type, source path, meaning."""

    name: str
    type: str
    source: str
    description: str
    not_null: bool = False
    key: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        """The Arrow type the writer converts this column's values to."""
        return _ARROW[self.type]

    @property
    def is_money(self) -> bool:
        """An amount: `Decimal` end to end, rounded half-even to 6 places when stored."""
        return self.type == MONEY


@dataclass(frozen=True)
class Table:
    """One `snap.*` table: its grain (one row per ...), the list it comes from, its columns."""

    name: str
    grain: str
    rows_from: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        """The column names, in the table's order."""
        return [c.name for c in self.columns]

    @property
    def key(self) -> list[str]:
        """The columns of the table's key (a PRIMARY KEY, or unique by the loader)."""
        return [c.name for c in self.columns if c.key]

    def column(self, name: str) -> Column:
        """The declaration of one column (KeyError when the table has none of that name)."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"snap.{self.name} has no column {name!r}")

    def arrow_schema(self) -> pa.Schema:
        """The table's columns as an Arrow schema."""
        return pa.schema([(c.name, c.arrow_type) for c in self.columns])


def _c(
    name: str, type_: str, source: str, description: str, *, nn: bool = False, key: bool = False
) -> Column:
    return Column(name, type_, source, description, not_null=nn or key, key=key)


def _snapshot_key() -> tuple[Column, ...]:
    return (
        _c("run_id", VARCHAR, RUN, "the run that wrote the row", nn=True),
        _c("cluster_id", VARCHAR, "id", "the cluster", key=True),
        _c(
            "snapshot_at",
            TIMESTAMPTZ,
            "metrics.current.timestamp",
            "the snapshot instant (data time): `metrics.current.timestamp`, else `updated_at`",
            key=True,
        ),
    )


_CLUSTER_SNAPSHOTS = Table(
    "cluster_snapshots",
    "one row per cluster per snapshot",
    "",
    (
        *_snapshot_key(),
        _c("name", VARCHAR, "name", "as the provider sends it (may hold hostile text)"),
        _c("description", VARCHAR, "description", "as the provider sends it"),
        _c(
            "status",
            VARCHAR,
            "status",
            "`pending, starting, running, stopping, stopped, error` at the snapshot",
        ),
        _c("status_message", VARCHAR, "status_details.message", "the status' message"),
        _c(
            "last_status_change",
            TIMESTAMPTZ,
            "status_details.last_status_change",
            "when the status last changed",
        ),
        _c("created_at", TIMESTAMPTZ, "created_at", "the cluster's creation"),
        _c("updated_at", TIMESTAMPTZ, "updated_at", "the cluster's last update"),
        _c("gpu_type", VARCHAR, "configuration.gpu_type", "e.g. `H100`"),
        _c("gpu_count", INTEGER, "configuration.gpu_count", "GPUs at the snapshot"),
        _c("cpu_cores", INTEGER, "configuration.cpu_cores", "CPU cores"),
        _c("memory_gb", DOUBLE, "configuration.memory_gb", "memory, GB"),
        _c("storage_gb", DOUBLE, "configuration.storage_gb", "storage, GB"),
        _c("storage_type", VARCHAR, "configuration.storage_type", "e.g. `nvme`"),
        _c("region", VARCHAR, "configuration.region", "e.g. `us-west-2`"),
        _c("availability_zone", VARCHAR, "configuration.availability_zone", "e.g. `us-west-2a`"),
        _c("project_id", VARCHAR, "project_info.project_id", "the project"),
        _c("project_name", VARCHAR, "project_info.project_name", "the project's name"),
        _c("owner_id", VARCHAR, "project_info.owner_id", "the project's owner"),
        _c("template_id", VARCHAR, "template_info.template_id", "the template"),
        _c("template_name", VARCHAR, "template_info.template_name", "the template's name"),
        _c("template_version", VARCHAR, "template_info.template_version", "the template's version"),
        _c("docker_image", VARCHAR, "template_info.docker_image", "the container image"),
        _c(
            "cuda_version",
            VARCHAR,
            "environment.cuda_version",
            "CUDA version (environment variables are never stored)",
        ),
        _c(
            "gpu_health",
            VARCHAR,
            "status_details.health_checks.gpu_health",
            "`healthy, degraded, unhealthy`",
        ),
        _c(
            "storage_health",
            VARCHAR,
            "status_details.health_checks.storage_health",
            "`healthy, degraded, unhealthy`",
        ),
        _c(
            "network_health",
            VARCHAR,
            "status_details.health_checks.network_health",
            "`healthy, degraded, unhealthy`",
        ),
        _c(
            "docker_health",
            VARCHAR,
            "status_details.health_checks.docker_health",
            "`healthy, degraded, unhealthy`",
        ),
        _c("currency", VARCHAR, "cost.currency", "ISO 4217 code (upper case)"),
        _c(
            "hourly_rate",
            MONEY,
            "cost.current_hourly_rate",
            "what the cluster bills now, currency per hour",
        ),
        _c(
            "total_cost_to_date",
            MONEY,
            "cost.cost_breakdown.total_cost_to_date",
            "cumulative since creation (a decrease means the cluster was recreated)",
        ),
        _c(
            "window_cost",
            MONEY,
            "cost.cost_breakdown.window_cost",
            "cost over the metrics window",
        ),
        _c("metrics_window", VARCHAR, "metrics.window", "`7d` for the nightly job"),
        _c(
            "interval_seconds",
            INTEGER,
            "metrics.interval_seconds",
            "bucket length (3600); inferred from the points' smallest gap when not sent",
        ),
        _c(
            "has_metrics",
            BOOLEAN,
            DERIVED,
            "the detail carried `metrics` (stopped clusters may not)",
            nn=True,
        ),
        _c(
            "has_gpu_series",
            BOOLEAN,
            DERIVED,
            "some historical point carried per-GPU values",
            nn=True,
        ),
        _c(
            "has_cost_breakdown",
            BOOLEAN,
            DERIVED,
            "`cost.cost_breakdown` was sent",
            nn=True,
        ),
        _c(
            "current_gpu_utilization",
            DOUBLE,
            "metrics.current.gpu_utilization",
            "% at the snapshot instant",
        ),
        _c(
            "current_gpu_memory_utilization",
            DOUBLE,
            "metrics.current.gpu_memory_utilization",
            "% at the snapshot instant",
        ),
        _c(
            "current_cpu_utilization",
            DOUBLE,
            "metrics.current.cpu_utilization",
            "% at the snapshot instant",
        ),
        _c(
            "current_memory_utilization",
            DOUBLE,
            "metrics.current.memory_utilization",
            "% at the snapshot instant",
        ),
        _c(
            "owner_email",
            VARCHAR,
            "project_info.owner_email",
            "the project owner's e-mail (migration 0002: finance and notifications write to it)",
        ),
    ),
)

_COST_COMPONENTS = Table(
    "cost_components",
    "one row per `*_cost_per_hour` key of `cost.cost_breakdown` per snapshot",
    "cost.cost_breakdown",
    (
        *_snapshot_key(),
        _c(
            "component",
            VARCHAR,
            "cost.cost_breakdown.<component>_cost_per_hour",
            "the key without `_cost_per_hour`: `gpu, cpu, memory, storage, network, ...` (a "
            "component the provider adds appears without a schema change)",
            key=True,
        ),
        _c(
            "cost_per_hour",
            MONEY,
            "cost.cost_breakdown.<component>_cost_per_hour",
            "what the component bills now, currency per hour (0 for gpu/cpu/memory when stopped)",
            nn=True,
        ),
        _c("currency", VARCHAR, "cost.currency", "ISO 4217 code"),
    ),
)

_PROJECTIONS = Table(
    "projections",
    "one row per horizon the provider projects, per snapshot",
    "cost.cost_projections",
    (
        *_snapshot_key(),
        _c(
            "horizon",
            VARCHAR,
            "cost.cost_projections.<horizon>",
            "`daily`, `weekly`, `monthly`",
            key=True,
        ),
        _c("horizon_hours", INTEGER, DERIVED, "24, 168, 720 from `snapshot_at`", nn=True),
        _c(
            "projected_cost",
            MONEY,
            "cost.cost_projections.<horizon>",
            "the provider's projection over the horizon",
            nn=True,
        ),
        _c("currency", VARCHAR, "cost.currency", "ISO 4217 code"),
        _c(
            "basis",
            VARCHAR,
            "cost.cost_projections.projection_basis",
            "e.g. `current_hourly_rate`",
        ),
    ),
)

_ALERTS = Table(
    "alerts",
    "one row per alert per snapshot (the later of two with the same id)",
    "metrics.alerts[]",
    (
        *_snapshot_key(),
        _c(
            "alert_id",
            VARCHAR,
            "metrics.alerts[].alert_id",
            "`#n` by position when the provider sent none",
            key=True,
        ),
        _c("severity", VARCHAR, "metrics.alerts[].severity", "`info, warning, critical`"),
        _c("metric", VARCHAR, "metrics.alerts[].metric", "what the alert watches"),
        _c("condition", VARCHAR, "metrics.alerts[].condition", "e.g. `above`"),
        _c("threshold", DOUBLE, "metrics.alerts[].threshold", "in the metric's unit"),
        _c("current_value", DOUBLE, "metrics.alerts[].current_value", "in the metric's unit"),
        _c("duration", VARCHAR, "metrics.alerts[].duration", "text, e.g. `2h 10m`"),
        _c("triggered_at", TIMESTAMPTZ, "metrics.alerts[].triggered_at", "when it fired"),
        _c("resolved_at", TIMESTAMPTZ, "metrics.alerts[].resolved_at", "null while open"),
        _c("message", VARCHAR, "metrics.alerts[].message", "the provider's text"),
    ),
)

_GPU_CURRENT = Table(
    "gpu_current",
    "one row per GPU per snapshot: readings at the snapshot instant",
    "metrics.current.gpus[]",
    (
        *_snapshot_key(),
        _c("gpu_id", VARCHAR, "metrics.current.gpus[].gpu_id", 'text, `"0".."n-1"`', key=True),
        _c("utilization", DOUBLE, "metrics.current.gpus[].utilization", "%"),
        _c("memory_used_gb", DOUBLE, "metrics.current.gpus[].memory_used_gb", "GB"),
        _c("memory_total_gb", DOUBLE, "metrics.current.gpus[].memory_total_gb", "GB"),
        _c("temperature_c", DOUBLE, "metrics.current.gpus[].temperature_c", "°C"),
        _c("power_draw_w", DOUBLE, "metrics.current.gpus[].power_draw_w", "W"),
    ),
)

_POINT = "metrics.historical.data_points[]"
_METRIC_POINTS = Table(
    "metric_points",
    "one row per cluster per bucket, stored once across overlapping windows",
    _POINT,
    (
        _c("run_id", VARCHAR, RUN, "the run that wrote the row", nn=True),
        _c("cluster_id", VARCHAR, "id", "the cluster", key=True),
        _c(
            "bucket_at",
            TIMESTAMPTZ,
            f"{_POINT}.timestamp",
            "the bucket covers `[bucket_at, bucket_at + interval_seconds)`",
            key=True,
        ),
        _c(
            "interval_seconds",
            INTEGER,
            "metrics.interval_seconds",
            "3600; inferred from the points' smallest gap when not sent",
            nn=True,
        ),
        _c(
            "snapshot_at",
            TIMESTAMPTZ,
            "metrics.current.timestamp",
            "the snapshot whose value this is",
            nn=True,
        ),
        _c(
            "status",
            VARCHAR,
            f"{_POINT}.status",
            "the cluster's state during the bucket; null when not sent (counts as billed)",
        ),
        _c("gpu_utilization", DOUBLE, f"{_POINT}.gpu_utilization", "cluster average, %"),
        _c(
            "gpu_memory_utilization",
            DOUBLE,
            f"{_POINT}.gpu_memory_utilization",
            "cluster average, %",
        ),
        _c("cpu_utilization", DOUBLE, f"{_POINT}.cpu_utilization", "cluster average, %"),
        _c("memory_utilization", DOUBLE, f"{_POINT}.memory_utilization", "cluster average, %"),
        _c(
            "cost",
            MONEY,
            f"{_POINT}.cost",
            "what accrued in the bucket; null when the provider sends no per-bucket cost",
        ),
        _c("currency", VARCHAR, "cost.currency", "ISO 4217 code"),
        _c(
            "gpu_series_count",
            INTEGER,
            f"{_POINT}.gpus",
            "number of per-GPU entries of the bucket; null without a per-GPU series",
        ),
    ),
)

_GPU_METRIC_POINTS = Table(
    "gpu_metric_points",
    "one row per GPU per bucket, replaced as a set with its bucket",
    f"{_POINT}.gpus[]",
    (
        _c("run_id", VARCHAR, RUN, "the run that wrote the row", nn=True),
        _c("cluster_id", VARCHAR, "id", "the cluster", key=True),
        _c("bucket_at", TIMESTAMPTZ, f"{_POINT}.timestamp", "the bucket", key=True),
        _c("gpu_id", VARCHAR, f"{_POINT}.gpus[].gpu_id", "the GPU", key=True),
        _c(
            "snapshot_at",
            TIMESTAMPTZ,
            "metrics.current.timestamp",
            "same as its bucket's",
            nn=True,
        ),
        _c("utilization", DOUBLE, f"{_POINT}.gpus[].utilization", "%"),
        _c("memory_used_gb", DOUBLE, f"{_POINT}.gpus[].memory_used_gb", "GB"),
        _c("power_draw_w", DOUBLE, f"{_POINT}.gpus[].power_draw_w", "W"),
    ),
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        _CLUSTER_SNAPSHOTS,
        _COST_COMPONENTS,
        _PROJECTIONS,
        _ALERTS,
        _GPU_CURRENT,
        _METRIC_POINTS,
        _GPU_METRIC_POINTS,
    )
}
# Keyed by (cluster_id, snapshot_at[, ...]): a reload of a snapshot replaces its rows as a set.
SNAPSHOT_TABLES = (
    "cluster_snapshots",
    "cost_components",
    "projections",
    "alerts",
    "gpu_current",
)
# Keyed by (cluster_id, bucket_at[, gpu_id]): the newest snapshot's value of a bucket wins.
BUCKET_TABLES = ("metric_points", "gpu_metric_points")
HORIZON_HOURS = {"daily": 24, "weekly": 168, "monthly": 720}


def relative(source: str, rows_from: str) -> str:
    """A column's source path within one item of its table's list (`metrics.alerts[].severity`
    -> `severity`)."""
    prefix = rows_from + "."
    return source[len(prefix) :] if source.startswith(prefix) else source


def insert_rows(con: Any, table: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert rows (dicts by column name; a column not given is NULL) into `snap.<table>`, as
    Arrow columns typed by the declaration. For test fixtures and tools: the store's own
    loader is `pipeline.writer`. Returns the number of rows."""
    spec = TABLES[table]
    rows = list(rows)
    if not rows:
        return 0
    unknown = {k for r in rows for k in r} - set(spec.names)
    if unknown:
        raise KeyError(f"snap.{table} has no column {sorted(unknown)[0]!r}")
    data = pa.table(
        {c.name: pa.array([r.get(c.name) for r in rows], c.arrow_type) for c in spec.columns}
    )
    names = ", ".join(spec.names)
    con.register("_insert_rows", data)
    try:
        con.execute(f"insert into snap.{table} ({names}) select {names} from _insert_rows")
    finally:
        con.unregister("_insert_rows")
    return len(rows)
