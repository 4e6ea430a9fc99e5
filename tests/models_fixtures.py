"""Hand-written snapshots for the model tests: a fresh DuckDB with the store's schema, and
helpers that insert `snap.*` rows directly, so that every expected number can be computed by
hand from what a test inserted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from pipeline.config import Thresholds
from pipeline.models import BuildResult, build_on_connection
from pipeline.store import migrations

T0 = datetime(2026, 11, 13, 3, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

D = Decimal

# A 2-GPU cluster's default breakdown: gpu 6.20 (3.10 per GPU), cpu 0.32, memory 0.12,
# storage 0.14, network 0.12 -> 6.90 per hour.
DEFAULT_COMPONENTS = {
    "gpu": D("6.20"),
    "cpu": D("0.32"),
    "memory": D("0.12"),
    "storage": D("0.14"),
    "network": D("0.12"),
}


def run_id_for(at: datetime) -> str:
    """The run id a fixture gives a snapshot taken at `at` (one run per instant)."""
    return f"run-{at:%Y%m%dT%H%M%S}"


def hours(start: datetime, count: int) -> list[datetime]:
    """`count` hourly bucket starts from `start`."""
    return [start + i * HOUR for i in range(count)]


class FixtureDB:
    """An in-memory DuckDB with schema v1 and helpers to insert snapshots and buckets."""

    def __init__(self, path: Path | None = None) -> None:
        self.con = duckdb.connect(str(path) if path else ":memory:")
        self.con.execute("set TimeZone = 'UTC'")
        # every migration, as Store.open applies them (models may read meta tables of later ones)
        for _version, _name, sql in migrations():
            self.con.execute(sql)
        self._points: dict[tuple[str, datetime], tuple[Any, ...]] = {}

    # -- inserting ---------------------------------------------------------------------------
    def run(self, run_id: str, status: str = "complete") -> None:
        """Record a run in the ledger (snapshot() does this for its own run)."""
        self.con.execute(
            "insert into meta.runs (run_id, started_at, status) values (?, now(), ?) "
            "on conflict do nothing",
            [run_id, status],
        )

    def failure(self, run_id: str, cluster_id: str, outcome: str = "gone") -> None:
        """Record that `run_id` listed `cluster_id` but did not snapshot it."""
        self.run(run_id)
        self.con.execute(
            "insert into meta.run_failures (run_id, cluster_id, stage, outcome, reason, "
            "recorded_at) values (?, ?, 'details', ?, 'fixture', now())",
            [run_id, cluster_id, outcome],
        )

    def snapshot(
        self,
        cluster_id: str,
        at: datetime,
        *,
        status: str = "running",
        gpu_count: int = 2,
        currency: str = "USD",
        components: dict[str, Decimal] | None = None,
        hourly_rate: Decimal | None = None,
        total_cost_to_date: Decimal | None = None,
        projections: dict[str, Decimal] | None = None,
        has_gpu_series: bool = True,
        has_breakdown: bool = True,
        name: str | None = None,
        created_at: datetime | None = None,
        last_status_change: datetime | None = None,
        health: str = "healthy",
        run_id: str | None = None,
    ) -> None:
        """One snapshot; rates default to DEFAULT_COMPONENTS (GPU, CPU, memory 0 when stopped),
        projections to rate x 24 / 168 / 720."""
        run_id = run_id or run_id_for(at)
        self.run(run_id)
        comps = dict(DEFAULT_COMPONENTS if components is None else components)
        if status == "stopped" and components is None:
            comps.update(gpu=D(0), cpu=D(0), memory=D(0), network=D(0))
        rate = hourly_rate if hourly_rate is not None else sum(comps.values(), D(0))
        self.con.execute(
            "insert into snap.cluster_snapshots (run_id, cluster_id, snapshot_at, name, status, "
            "status_message, last_status_change, created_at, updated_at, gpu_type, gpu_count, "
            "storage_gb, region, project_name, gpu_health, storage_health, network_health, "
            "docker_health, currency, hourly_rate, total_cost_to_date, metrics_window, "
            "interval_seconds, has_metrics, has_gpu_series, has_cost_breakdown) values "
            "(?, ?, ?, ?, ?, 'fixture', ?, ?, ?, 'H100', ?, 1000, 'us-west-2', 'ML', ?, "
            "'healthy', 'healthy', 'healthy', ?, ?, ?, '7d', 3600, true, ?, ?)",
            [
                run_id,
                cluster_id,
                at,
                name or cluster_id,
                status,
                last_status_change,
                created_at or (T0 - 30 * DAY),
                at,
                gpu_count,
                health,
                currency,
                rate,
                total_cost_to_date,
                has_gpu_series,
                has_breakdown,
            ],
        )
        if has_breakdown:
            for component, value in comps.items():
                self.con.execute(
                    "insert into snap.cost_components values (?, ?, ?, ?, ?, ?)",
                    [run_id, cluster_id, at, component, value, currency],
                )
        if projections is None:
            projections = {"daily": rate * 24, "weekly": rate * 168, "monthly": rate * 720}
        for horizon, value in projections.items():
            hours_ = {"daily": 24, "weekly": 168, "monthly": 720}[horizon]
            self.con.execute(
                "insert into snap.projections values (?, ?, ?, ?, ?, ?, ?, 'current_hourly_rate')",
                [run_id, cluster_id, at, horizon, hours_, value, currency],
            )

    def bucket(
        self,
        cluster_id: str,
        at: datetime,
        *,
        util: float | None = None,
        gpus: Sequence[tuple[float, float]] | None = None,
        cost: Decimal | None = None,
        status: str | None = "running",
        currency: str = "USD",
        snapshot_at: datetime | None = None,
        interval_seconds: int = 3600,
    ) -> None:
        """One bucket (replacing any earlier value). `gpus` = [(utilization, memory_gb), ...]
        makes a per-GPU series; `util` defaults to the GPUs' mean."""
        snapshot_at = snapshot_at or at
        if util is None:
            util = sum(g[0] for g in gpus) / len(gpus) if gpus else 0.0
        # kept in Python and written at build(): a later call for the same bucket replaces it,
        # as the store keeps the newest value
        self._points[(cluster_id, at)] = (
            run_id_for(snapshot_at),
            cluster_id,
            at,
            interval_seconds,
            snapshot_at,
            status,
            util,
            cost,
            currency,
            len(gpus) if gpus else None,
            list(gpus or ()),
        )

    def _flush(self) -> None:
        """Rewrite snap.metric_points and snap.gpu_metric_points from the buffered buckets."""
        self.con.execute("delete from snap.metric_points")
        self.con.execute("delete from snap.gpu_metric_points")
        if not self._points:
            return
        rows = list(self._points.values())
        points = pa.table(
            {
                "run_id": [r[0] for r in rows],
                "cluster_id": [r[1] for r in rows],
                "bucket_at": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
                "interval_seconds": [r[3] for r in rows],
                "snapshot_at": pa.array([r[4] for r in rows], pa.timestamp("us", tz="UTC")),
                "status": pa.array([r[5] for r in rows], pa.string()),
                "gpu_utilization": pa.array([r[6] for r in rows], pa.float64()),
                "cost": pa.array([r[7] for r in rows], pa.decimal128(18, 6)),
                "currency": [r[8] for r in rows],
                "gpu_series_count": pa.array([r[9] for r in rows], pa.int32()),
            }
        )
        gpu_rows = [
            (r[0], r[1], r[2], str(i), r[4], u, m) for r in rows for i, (u, m) in enumerate(r[10])
        ]
        gpu_points = pa.table(
            {
                "run_id": pa.array([g[0] for g in gpu_rows], pa.string()),
                "cluster_id": pa.array([g[1] for g in gpu_rows], pa.string()),
                "bucket_at": pa.array([g[2] for g in gpu_rows], pa.timestamp("us", tz="UTC")),
                "gpu_id": pa.array([g[3] for g in gpu_rows], pa.string()),
                "snapshot_at": pa.array([g[4] for g in gpu_rows], pa.timestamp("us", tz="UTC")),
                "utilization": pa.array([g[5] for g in gpu_rows], pa.float64()),
                "memory_used_gb": pa.array([g[6] for g in gpu_rows], pa.float64()),
            }
        )
        self.con.register("_fixture_points", points)
        self.con.register("_fixture_gpu_points", gpu_points)
        self.con.execute(
            "insert into snap.metric_points select run_id, cluster_id, bucket_at, "
            "interval_seconds, snapshot_at, status, gpu_utilization, 0, 0, 0, cost, currency, "
            "gpu_series_count from _fixture_points"
        )
        self.con.execute(
            "insert into snap.gpu_metric_points select run_id, cluster_id, bucket_at, gpu_id, "
            "snapshot_at, utilization, memory_used_gb, 100 from _fixture_gpu_points"
        )
        self.con.unregister("_fixture_points")
        self.con.unregister("_fixture_gpu_points")

    def buckets(self, cluster_id: str, starts: Iterable[datetime], **kwargs: Any) -> None:
        """The same bucket values at every start."""
        for at in starts:
            self.bucket(cluster_id, at, **kwargs)

    # -- building and reading ----------------------------------------------------------------
    def close(self) -> None:
        """Write the buffered buckets and close the database (for file databases)."""
        self._flush()
        self.con.close()

    def build(self, *, full_refresh: bool = False, **thresholds: Any) -> BuildResult:
        """Build every model with default thresholds, overridden by keyword."""
        self._flush()
        return build_on_connection(self.con, Thresholds(**thresholds), full_refresh=full_refresh)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Query results as dicts."""
        cursor = self.con.execute(sql, list(params))
        names = [d[0] for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any]:
        """The single row a query returns (fails otherwise)."""
        found = self.rows(sql, params)
        assert len(found) == 1, found
        return found[0]
