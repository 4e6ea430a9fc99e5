"""Shared pieces of the snapshot end-to-end tests: a config, table dumps, fleet expectations.

Expectations come straight from the simulator's fleet documents (`fleet.detail`), parsed here
with the standard library only, never with pipeline.normalize (that would hide its bugs).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.config import ApiSettings, Config, StoreSettings

API_KEY = "snapshot-test-key-1"
START = datetime(2026, 11, 13, 3, tzinfo=UTC)
SNAP_TABLES = (
    "cluster_snapshots",
    "cost_components",
    "projections",
    "alerts",
    "gpu_current",
    "metric_points",
    "gpu_metric_points",
)


def make_config(db: Path, url: str, **api: Any) -> Config:
    """A config for a test database and a simulator URL (the key comes from the environment)."""
    return Config(api=ApiSettings(url=url, **api), store=StoreSettings(db=str(db)))


def dump(con: Any, table: str, *, with_run_id: bool = True) -> list[tuple]:
    """Every row of snap.`table`, sorted, optionally without run_id."""
    cols = "*" if with_run_id else "* exclude (run_id)"
    return con.execute(f"select {cols} from snap.{table} order by all").fetchall()


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def fleet_buckets(detail: dict[str, Any]) -> dict[datetime, tuple]:
    """bucket_at -> (gpu_utilization, cost, status, {gpu_id: utilization}) from a fleet doc."""
    out = {}
    for p in (detail.get("metrics") or {}).get("historical", {}).get("data_points", []):
        cost = Decimal(p["cost"]) if p.get("cost") is not None else None
        gpus = {g["gpu_id"]: float(g["utilization"]) for g in p.get("gpus") or []}
        out[_ts(p["timestamp"])] = (float(p["gpu_utilization"]), cost, p.get("status"), gpus)
    return out


def stored_buckets(con: Any, cluster_id: str) -> dict[datetime, tuple]:
    """The same shape as `fleet_buckets`, read from the database."""
    gpus: dict[datetime, dict[str, float]] = {}
    for bucket, gpu_id, util in con.execute(
        "select bucket_at, gpu_id, utilization from snap.gpu_metric_points where cluster_id = ?",
        [cluster_id],
    ).fetchall():
        gpus.setdefault(bucket, {})[gpu_id] = util
    return {
        bucket: (util, cost, status, gpus.get(bucket, {}))
        for bucket, util, cost, status in con.execute(
            "select bucket_at, gpu_utilization, cost, status from snap.metric_points"
            " where cluster_id = ?",
            [cluster_id],
        ).fetchall()
    }


def duplicate_keys(con: Any) -> list[tuple]:
    """Keys stored more than once in the bucket tables (must be empty)."""
    return con.execute(
        "select cluster_id, bucket_at, null, count(*) from snap.metric_points group by all"
        " having count(*) > 1 union all"
        " select cluster_id, bucket_at, gpu_id, count(*) from snap.gpu_metric_points"
        " group by all having count(*) > 1"
    ).fetchall()
