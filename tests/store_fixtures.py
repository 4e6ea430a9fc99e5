"""Hand-made canonical details (the shape `pipeline.normalize` produces) for store tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

T0 = datetime(2026, 11, 20, 3, tzinfo=UTC)
HOUR = timedelta(hours=1)


def point(
    at: datetime,
    *,
    util: float = 50.0,
    cost: str | None = "6.9000",
    gpus: list[float] | None = None,
    status: str | None = "running",
) -> dict[str, Any]:
    """One historical data point; `gpus` gives each GPU's utilization."""
    p: dict[str, Any] = {
        "timestamp": at,
        "gpu_utilization": util,
        "gpu_memory_utilization": 40.0,
        "cpu_utilization": 10.0,
        "memory_utilization": 20.0,
    }
    if status is not None:
        p["status"] = status
    if cost is not None:
        p["cost"] = Decimal(cost)
    if gpus is not None:
        p["gpus"] = [
            {
                "gpu_id": str(i),
                "utilization": u,
                "memory_used_gb": 8.0 + i,
                "power_draw_w": 100.0 + u,
            }
            for i, u in enumerate(gpus)
        ]
    return p


def detail(
    cluster_id: str = "cls_a",
    *,
    at: datetime = T0,
    hours: int = 3,
    gpu_count: int = 2,
    util: float = 50.0,
    rate: str = "6.9000",
    name: str = "train-a",
    per_gpu: bool = True,
    currency: str = "USD",
    points: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A canonical ClusterDetail snapshotted at `at` with `hours` hourly buckets before it."""
    if points is None:
        points = [
            point(
                at - (hours - h) * HOUR,
                util=util,
                cost=rate,
                gpus=[util] * gpu_count if per_gpu else None,
            )
            for h in range(hours)
        ]
    return {
        "id": cluster_id,
        "name": name,
        "description": "test",
        "status": "running",
        "created_at": T0 - timedelta(days=30),
        "updated_at": at,
        "status_details": {
            "message": "ok",
            "last_status_change": T0 - timedelta(days=30),
            "health_checks": {
                "gpu_health": "healthy",
                "storage_health": "healthy",
                "network_health": "healthy",
                "docker_health": "degraded",
            },
        },
        "configuration": {
            "gpu_type": "H100",
            "gpu_count": gpu_count,
            "cpu_cores": 32,
            "memory_gb": 256.0,
            "storage_gb": 1000.0,
            "storage_type": "nvme",
            "region": "us-west-2",
            "availability_zone": "us-west-2a",
        },
        "project_info": {"project_id": "proj_1", "project_name": "ML", "owner_id": "u1"},
        "template_info": {
            "template_id": "t1",
            "template_name": "PyTorch",
            "template_version": "v2",
            "docker_image": "img:1",
        },
        "environment": {"variables": {"HF_TOKEN": "[REDACTED]"}, "cuda_version": "12.4"},
        "metrics": {
            "window": "7d",
            "interval_seconds": 3600,
            "current": {
                "timestamp": at,
                "gpu_utilization": util,
                "gpu_memory_utilization": 40.0,
                "cpu_utilization": 10.0,
                "memory_utilization": 20.0,
                "gpus": [
                    {
                        "gpu_id": str(i),
                        "utilization": util,
                        "memory_used_gb": 8.0,
                        "memory_total_gb": 80.0,
                        "temperature_c": 50.0,
                        "power_draw_w": 300.0,
                    }
                    for i in range(gpu_count)
                ],
            },
            "historical": {"data_points": points},
            "alerts": [
                {
                    "alert_id": "al_1",
                    "severity": "warning",
                    "metric": "gpu_utilization",
                    "condition": "less_than",
                    "threshold": 10.0,
                    "current_value": 1.0,
                    "duration": "2h",
                    "triggered_at": at - HOUR,
                    "message": "idle",
                }
            ],
        },
        "cost": {
            "currency": currency,
            "current_hourly_rate": Decimal(rate),
            "cost_breakdown": {
                "gpu_cost_per_hour": Decimal("6.2000"),
                "cpu_cost_per_hour": Decimal("0.3200"),
                "storage_cost_per_hour": Decimal("0.1400"),
                "network_cost_per_hour": Decimal("0.2400"),
                "total_cost_to_date": Decimal("3091.2000"),
                "window_cost": Decimal("20.7000"),
            },
            "cost_projections": {
                "daily": Decimal(rate) * 24,
                "weekly": Decimal(rate) * 168,
                "monthly": Decimal(rate) * 720,
                "projection_basis": "current_hourly_rate",
            },
        },
    }
