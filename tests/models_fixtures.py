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

from pipeline.config import Thresholds
from pipeline.models import BuildResult, build_on_connection
from pipeline.store import migrations
from pipeline.tables import HORIZON_HOURS, insert_rows

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
        key = {"run_id": run_id, "cluster_id": cluster_id, "snapshot_at": at}
        insert_rows(
            self.con,
            "cluster_snapshots",
            [
                {
                    **key,
                    "name": name or cluster_id,
                    "status": status,
                    "status_message": "fixture",
                    "last_status_change": last_status_change,
                    "created_at": created_at or (T0 - 30 * DAY),
                    "updated_at": at,
                    "gpu_type": "H100",
                    "gpu_count": gpu_count,
                    "storage_gb": 1000,
                    "region": "us-west-2",
                    "project_name": "ML",
                    "gpu_health": health,
                    "storage_health": "healthy",
                    "network_health": "healthy",
                    "docker_health": "healthy",
                    "currency": currency,
                    "hourly_rate": rate,
                    "total_cost_to_date": total_cost_to_date,
                    "metrics_window": "7d",
                    "interval_seconds": 3600,
                    "has_metrics": True,
                    "has_gpu_series": has_gpu_series,
                    "has_cost_breakdown": has_breakdown,
                }
            ],
        )
        if has_breakdown:
            insert_rows(
                self.con,
                "cost_components",
                [
                    {**key, "component": component, "cost_per_hour": value, "currency": currency}
                    for component, value in comps.items()
                ],
            )
        if projections is None:
            projections = {"daily": rate * 24, "weekly": rate * 168, "monthly": rate * 720}
        insert_rows(
            self.con,
            "projections",
            [
                {
                    **key,
                    "horizon": horizon,
                    "horizon_hours": HORIZON_HOURS[horizon],
                    "projected_cost": value,
                    "currency": currency,
                    "basis": "current_hourly_rate",
                }
                for horizon, value in projections.items()
            ],
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
        names = ("run_id", "cluster_id", "bucket_at", "interval_seconds", "snapshot_at", "status")
        insert_rows(
            self.con,
            "metric_points",
            [
                {
                    **dict(zip(names, r[:6], strict=True)),
                    "gpu_utilization": r[6],
                    "gpu_memory_utilization": 0.0,
                    "cpu_utilization": 0.0,
                    "memory_utilization": 0.0,
                    "cost": r[7],
                    "currency": r[8],
                    "gpu_series_count": r[9],
                }
                for r in rows
            ],
        )
        insert_rows(
            self.con,
            "gpu_metric_points",
            [
                {
                    "run_id": r[0],
                    "cluster_id": r[1],
                    "bucket_at": r[2],
                    "gpu_id": str(i),
                    "snapshot_at": r[4],
                    "utilization": u,
                    "memory_used_gb": m,
                    "power_draw_w": 100.0,
                }
                for r in rows
                for i, (u, m) in enumerate(r[10])
            ],
        )

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
