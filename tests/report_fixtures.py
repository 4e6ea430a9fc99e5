"""A small, hand-computed gpucost database for the report tests.

Two UTC days (2026-11-18 and 2026-11-19) of hourly buckets for four clusters, two nightly runs
(the second one partial), and marts whose every number is computed by hand below from the
snapshot rows, so a report read from the marts can be checked against arithmetic, and the FOCUS
export (which reads the snapshot tables) against the marts.

    cls_a  "train-a"                        USD  H100 x2  gpu 6.00 cpu 0.30 mem 0.10 sto 0.10
           net 0.00 -> 6.50/h, running both days; per-GPU series: GPU 0 at 90 %, GPU 1 at 0 %
           holding 8 GB. GPU price = 6.50 x 6.00/6.50 / 2 = 3.00 per GPU-hour.
           per day: cost 24 x 6.50 = 156.00; gpu_hours 48; idle 24 (GPU 1);
           idle cost 24 x 3.00 = 72.00; unused (0.10 x 24 + 1.00 x 24) x 3.00 = 79.20.
    cls_b  "<script>alert(1)</script>"      USD  A100 x1  gpu 2.00 cpu 0.20 sto 0.05 -> 2.25/h,
           running, no per-GPU series, cluster utilization 2 % (idle).
           per day: cost 54.00; gpu_hours 24; idle 24; idle cost 24 x 2.00 = 48.00;
           unused 0.98 x 24 x 2.00 = 47.04.
    cls_c  '=HYPERLINK("http://evil.example","x")'  EUR  L40S x4  gpu 4.80 cpu 0.40 sto 0.20
           -> 5.40/h; 11-18 running, GPUs at 80/80/40/0 %; stopped from 11-19 00:00 (bills
           storage 0.20/h only). GPU price 1.20.
           11-18: cost 129.60; gpu_hours 96; idle 24 (GPU 3); idle cost 28.80;
                  unused (0.2 + 0.2 + 0.6 + 1.0) x 24 x 1.20 = 57.60; avg util 50.
           11-19: cost 24 x 0.20 = 4.80; nothing billed on GPUs.
    cls_d  "<img src=x onerror=alert(1)>"   USD  T4 x1  gpu 0.50 cpu 0.05 sto 0.05 -> 0.60/h,
           status error, still billing; no per-GPU series; utilization 0 %.
           per day: cost 14.40; gpu_hours 24; idle 24; idle cost 12.00; unused 12.00.

    fleet_daily  USD per day: cost 156.00 + 54.00 + 14.40 = 224.40; gpu_hours 48 + 24 + 24 = 96;
                 idle 24 + 24 + 24 = 72; idle cost 72.00 + 48.00 + 12.00 = 132.00
                 EUR 11-18: 129.60, 96, 24, 28.80; EUR 11-19: 4.80, 0, 0, 0.00
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb

from pipeline.contracts import load_contracts
from pipeline.store import migrations
from pipeline.tables import insert_rows

D = Decimal

DAY1 = datetime(2026, 11, 18, tzinfo=UTC)
DAY2 = datetime(2026, 11, 19, tzinfo=UTC)
SNAP1 = datetime(2026, 11, 19, tzinfo=UTC)  # run 1, covers the buckets of 11-18
SNAP2 = datetime(2026, 11, 20, tzinfo=UTC)  # run 2 (partial), covers 11-19

HOSTILE_SCRIPT = "<script>alert(1)</script>"
HOSTILE_IMG = "<img src=x onerror=alert(1)>"
HOSTILE_FORMULA = '=HYPERLINK("http://evil.example","x")'


def declared_ddl(*marts: str) -> str:
    """`create table` statements for marts, with the columns and types they declare
    (sql/marts/<name>.toml): the fixture's hand-written marts have the built marts' shape."""
    contracts = load_contracts()
    return "".join(
        f"create table marts.{mart} ("
        + ", ".join(f"{c.name} {c.type}" for c in contracts[mart].columns)
        + ");\n"
        for mart in marts
    )


MARTS_DDL = "create schema if not exists marts;\n" + declared_ddl(
    "idle_waste_daily", "projection_drift", "recommendations", "fleet_daily", "clusters"
)


@dataclass(frozen=True)
class _Cluster:
    cluster_id: str
    name: str
    currency: str
    gpu_type: str
    gpu_count: int
    components: dict[str, Decimal]
    region: str
    project: str
    gpu_util: list[float] | None  # per-GPU utilization when the series exists
    cluster_util: float
    status_day2: str


CLUSTERS = [
    _Cluster(
        "cls_a",
        "train-a",
        "USD",
        "H100",
        2,
        {
            "gpu": D("6.00"),
            "cpu": D("0.30"),
            "memory": D("0.10"),
            "storage": D("0.10"),
            "network": D("0.00"),
        },
        "us-west-2",
        "ML Research",
        [90.0, 0.0],
        45.0,
        "running",
    ),
    _Cluster(
        "cls_b",
        HOSTILE_SCRIPT,
        "USD",
        "A100",
        1,
        {"gpu": D("2.00"), "cpu": D("0.20"), "storage": D("0.05")},
        "us-east-1",
        "Platform",
        None,
        2.0,
        "running",
    ),
    _Cluster(
        "cls_c",
        HOSTILE_FORMULA,
        "EUR",
        "L40S",
        4,
        {"gpu": D("4.80"), "cpu": D("0.40"), "storage": D("0.20")},
        "eu-central-1",
        "Vision",
        [80.0, 80.0, 40.0, 0.0],
        50.0,
        "stopped",
    ),
    _Cluster(
        "cls_d",
        HOSTILE_IMG,
        "USD",
        "T4",
        1,
        {"gpu": D("0.50"), "cpu": D("0.05"), "storage": D("0.05")},
        "us-west-2",
        "Platform",
        None,
        0.0,
        "error",
    ),
]

# Hand-computed marts (see the module docstring).
FLEET_DAILY = [
    (DAY1.date(), "USD", D("224.40"), 96.0, 72.0, D("132.00")),
    (DAY2.date(), "USD", D("224.40"), 96.0, 72.0, D("132.00")),
    (DAY1.date(), "EUR", D("129.60"), 96.0, 24.0, D("28.80")),
    (DAY2.date(), "EUR", D("4.80"), 0.0, 0.0, D("0.00")),
]
IDLE_WASTE_DAILY = [
    ("cls_a", DAY1.date(), "USD", 48.0, 24.0, D("72.00"), D("79.20"), 45.0, True, 24.0),
    ("cls_a", DAY2.date(), "USD", 48.0, 24.0, D("72.00"), D("79.20"), 45.0, True, 24.0),
    ("cls_b", DAY1.date(), "USD", 24.0, 24.0, D("48.00"), D("47.04"), 2.0, False, 0.0),
    ("cls_b", DAY2.date(), "USD", 24.0, 24.0, D("48.00"), D("47.04"), 2.0, False, 0.0),
    ("cls_c", DAY1.date(), "EUR", 96.0, 24.0, D("28.80"), D("57.60"), 50.0, True, 0.0),
    ("cls_c", DAY2.date(), "EUR", 0.0, 0.0, D("0.00"), D("0.00"), None, True, 0.0),
    ("cls_d", DAY1.date(), "USD", 24.0, 24.0, D("12.00"), D("12.00"), 0.0, False, 0.0),
    ("cls_d", DAY2.date(), "USD", 24.0, 24.0, D("12.00"), D("12.00"), 0.0, False, 0.0),
]
PROJECTION_DRIFT = [
    # cls_a at 11-19 00:00, daily: 6.50 x 24 = 156.00 projected, 156.00 actual.
    ("cls_a", SNAP1, "daily", D("156.00"), D("156.00"), 0.0, False, "usage", "USD"),
    # cls_c stopped: projected 5.40 x 24 = 129.60, actual 4.80 -> (4.80 - 129.60)/129.60 = -96.3 %
    ("cls_c", SNAP1, "daily", D("129.60"), D("4.80"), -96.2962962962963, True, "stopped", "EUR"),
    ("cls_b", SNAP1, "daily", D("54.00"), D("54.00"), 0.0, False, "usage", "USD"),
]
RECOMMENDATIONS = [
    # cls_a downsize: 1 busy GPU of 2 -> (2 - 1) x 3.00 x 720 = 2160.00
    (
        "rec_a_downsize",
        "cls_a",
        "downsize",
        "open",
        D("2160.00"),
        "USD",
        "GPU 1 below 5 % in 48 of 48 h, 8 GB held",
        SNAP1,
        SNAP2,
        None,
    ),
    # cls_b stop_idle: (2.25 - 0.05) x 720 = 1584.00
    (
        "rec_b_stop_idle",
        "cls_b",
        "stop_idle",
        "open",
        D("1584.00"),
        "USD",
        f"all GPUs below 5 % in 48 of 48 billed h ({HOSTILE_SCRIPT})",
        SNAP1,
        SNAP2,
        None,
    ),
    # cls_d investigate_error: the whole rate x 720 = 432.00
    (
        "rec_d_error",
        "cls_d",
        "investigate_error",
        "open",
        D("432.00"),
        "USD",
        "status error while billing 0.60/h",
        SNAP1,
        SNAP2,
        None,
    ),
    # cls_c schedule, resolved by the stop: realized (5.40 - 0.20) x 720 = 3744.00
    (
        "rec_c_schedule",
        "cls_c",
        "schedule",
        "resolved",
        D("1000.00"),
        "EUR",
        "idle 8 h nightly on 5 of 7 days",
        SNAP1,
        SNAP1,
        D("3744.00"),
    ),
]


def _status(cluster: _Cluster, day: int) -> str:
    return "running" if day == 1 else cluster.status_day2


def _rate(cluster: _Cluster, status: str) -> dict[str, Decimal]:
    if status == "stopped":
        return {k: (v if k == "storage" else D("0.00")) for k, v in cluster.components.items()}
    return dict(cluster.components)


def create_fixture_db(
    path: Path,
    *,
    with_marts: bool = True,
    latest_run_status: str = "partial",
    extra_clusters: int = 0,
) -> Path:
    """Write the hand-computed database to `path`; `extra_clusters` adds filler clusters."""
    con = duckdb.connect(str(path))
    for _version, _name, sql in migrations():
        con.execute(sql)
    con.execute(
        "insert into meta.runs values ('run1', ?, ?, 'http://127.0.0.1:8080/v1', 'complete',"
        " 5, 4, 0, 0, 0, 9, 0, null)",
        [SNAP1, SNAP1 + timedelta(minutes=2)],
    )
    con.execute(
        "insert into meta.runs values ('run2', ?, ?, 'http://127.0.0.1:8080/v1', ?,"
        " 6, 4, 1, 0, 1, 12, 3, 'some clusters failed')",
        [SNAP2, SNAP2 + timedelta(minutes=2), latest_run_status],
    )
    con.execute(
        "insert into meta.run_failures values ('run2', 'cls_broken', 'details', 'failed', 500,"
        " 'HTTP 500 after 4 attempts <b>bold</b>', null, ?),"
        " ('run2', 'cls_later', 'details', 'skipped', null, 'request budget exhausted', null, ?)",
        [SNAP2, SNAP2],
    )
    clusters = list(CLUSTERS)
    for i in range(extra_clusters):
        clusters.append(
            _Cluster(
                f"cls_x{i:04d}",
                f"filler-{i:04d}",
                "USD",
                "L4",
                1,
                {"gpu": D("0.80"), "storage": D("0.02")},
                "us-east-1",
                "Filler",
                [30.0],
                30.0,
                "running",
            )
        )
    for cluster in clusters:
        _insert_cluster(con, cluster)
    if with_marts:
        con.execute(MARTS_DDL)
        con.executemany("insert into marts.fleet_daily values (?, ?, ?, ?, ?, ?)", FLEET_DAILY)
        con.executemany(
            "insert into marts.idle_waste_daily values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            IDLE_WASTE_DAILY,
        )
        con.executemany(
            "insert into marts.projection_drift values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            PROJECTION_DRIFT,
        )
        con.executemany(
            "insert into marts.recommendations values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            RECOMMENDATIONS,
        )
        for cluster in clusters:
            status = cluster.status_day2
            rate = sum(_rate(cluster, status).values(), D(0))
            health = "degraded" if cluster.cluster_id == "cls_d" else "healthy"
            con.execute(
                "insert into marts.clusters values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    cluster.cluster_id,
                    cluster.name,
                    status,
                    cluster.gpu_type,
                    cluster.gpu_count,
                    cluster.region,
                    cluster.project,
                    rate,
                    cluster.currency,
                    health,
                    SNAP2,
                ],
            )
        if extra_clusters:
            _insert_filler_marts(con, clusters[len(CLUSTERS) :])
        build_snapshot_marts(con)
    con.close()
    return path


# The marts the report reads that come straight from the snapshot tables: built here by their
# own models (sql/), over the fixture's hand-written snapshots, beside the hand-written marts.
SNAPSHOT_MARTS = (
    "marts.report_days",
    "marts.active_alerts",
    "marts.cluster_configuration",
    "marts.cluster_rates",
    "marts.utilization_heatmap",
    "marts.cluster_cost_daily",
)


def build_snapshot_marts(con: duckdb.DuckDBPyConnection) -> None:
    """Create SNAPSHOT_MARTS, and the staging views they read, from the sql/ models."""
    from pipeline.config import Thresholds
    from pipeline.models import _make_scope, discover_models, set_threshold_variables

    models = discover_models()
    by_relation = {m.relation: m for m in models}
    needed: set[str] = set()
    todo = list(SNAPSHOT_MARTS)
    while todo:
        relation = todo.pop()
        if relation not in needed:
            needed.add(relation)
            todo.extend(by_relation[relation].depends_on)
    con.execute("set TimeZone = 'UTC'")
    # the bucket table of the marts is built as a full refresh builds it
    set_threshold_variables(con, Thresholds())
    _make_scope(con, full=True)
    for model in models:
        if model.relation not in needed:
            continue
        con.execute(f"create schema if not exists {model.layer}")
        kind = "view" if model.materialized == "view" else "table"
        con.execute(f"create or replace {kind} {model.relation} as {model.sql.strip().rstrip(';')}")
    con.execute("drop table if exists _gpucost_scope")


def _insert_filler_marts(con: duckdb.DuckDBPyConnection, fillers: list[_Cluster]) -> None:
    # Each filler: 0.82/h, one L4 at 30 %: 19.68 a day, 24 GPU-hours, none idle.
    n = len(fillers)
    for day in (DAY1.date(), DAY2.date()):
        con.execute(
            "update marts.fleet_daily set cost = cost + ?, gpu_hours = gpu_hours + ?"
            " where day = ? and currency = 'USD'",
            [D("19.68") * n, 24.0 * n, day],
        )
        for f in fillers:
            con.execute(
                "insert into marts.idle_waste_daily values (?, ?, 'USD', 24, 0, 0, ?, 30, true, 0)",
                [f.cluster_id, day, D("13.44")],
            )


def _memory_used(c: _Cluster, utilization: float) -> float:
    # Only cls_a's idle GPU holds memory (>= 1 GB): cls_c's idle GPU is empty.
    if utilization == 0:
        return 8.0 if c.cluster_id == "cls_a" else 0.5
    return 40.0


def _insert_cluster(con: duckdb.DuckDBPyConnection, c: _Cluster) -> None:
    for run_id, snap_at, day in (("run1", SNAP1, 1), ("run2", SNAP2, 2)):
        status = _status(c, day)
        rate = _rate(c, status)
        hourly = sum(rate.values(), D(0))
        has_series = c.gpu_util is not None
        key = {"run_id": run_id, "cluster_id": c.cluster_id, "snapshot_at": snap_at}
        insert_rows(
            con,
            "cluster_snapshots",
            [
                {
                    **key,
                    "name": c.name,
                    "description": "fixture",
                    "status": status,
                    "status_message": "ok",
                    "created_at": DAY1 - timedelta(days=10),
                    "updated_at": snap_at,
                    "gpu_type": c.gpu_type,
                    "gpu_count": c.gpu_count,
                    "cpu_cores": 16,
                    "memory_gb": 128,
                    "storage_gb": 500,
                    "storage_type": "nvme",
                    "region": c.region,
                    "availability_zone": c.region + "a",
                    "project_id": "proj_" + c.project.split()[0].lower(),
                    "project_name": c.project,
                    "template_name": "PyTorch 2.5",
                    "docker_image": "registry.example.com/pytorch:2.5",
                    "cuda_version": "12.4",
                    "gpu_health": "degraded" if c.cluster_id == "cls_d" else "healthy",
                    "storage_health": "healthy",
                    "network_health": "healthy",
                    "docker_health": "healthy",
                    "currency": c.currency,
                    "hourly_rate": hourly,
                    "total_cost_to_date": 0,
                    "window_cost": 0,
                    "metrics_window": "7d",
                    "interval_seconds": 3600,
                    "has_metrics": True,
                    "has_gpu_series": has_series,
                    "has_cost_breakdown": True,
                    "current_gpu_utilization": c.cluster_util if status != "stopped" else 0.0,
                }
            ],
        )
        insert_rows(
            con,
            "cost_components",
            [
                {**key, "component": component, "cost_per_hour": cost, "currency": c.currency}
                for component, cost in rate.items()
            ],
        )
        insert_rows(
            con,
            "projections",
            [
                {
                    **key,
                    "horizon": "daily",
                    "horizon_hours": 24,
                    "projected_cost": hourly * 24,
                    "currency": c.currency,
                    "basis": "rate",
                }
            ],
        )
        day_start = DAY1 if day == 1 else DAY2
        series = has_series and status != "stopped"
        buckets = [day_start + timedelta(hours=hour) for hour in range(24)]
        insert_rows(
            con,
            "metric_points",
            [
                {
                    **key,
                    "bucket_at": bucket,
                    "interval_seconds": 3600,
                    "status": status,
                    "gpu_utilization": 0.0 if status == "stopped" else c.cluster_util,
                    "gpu_memory_utilization": 0.0,
                    "cpu_utilization": 0.0,
                    "memory_utilization": 0.0,
                    "cost": hourly,
                    "currency": c.currency,
                    "gpu_series_count": c.gpu_count if series else None,
                }
                for bucket in buckets
            ],
        )
        if series:
            insert_rows(
                con,
                "gpu_metric_points",
                [
                    {
                        **key,
                        "bucket_at": bucket,
                        "gpu_id": str(gpu),
                        "utilization": u,
                        "memory_used_gb": _memory_used(c, u),
                        "power_draw_w": 100.0,
                    }
                    for bucket in buckets
                    for gpu, u in enumerate(c.gpu_util or [])
                ],
            )
    alerts = []
    if c.cluster_id == "cls_a":
        alerts.append(
            ("cls_a", "alert_1", "warning", "gpu_utilization", 10, 0, "2h", 2, None, "GPU 1 idle")
        )
    if c.cluster_id == "cls_b":
        alerts.append(
            (
                "cls_b",
                "alert_2",
                "critical",
                "gpu_utilization",
                5,
                2,
                "30h",
                30,
                None,
                f"idle {HOSTILE_IMG}",
            )
        )
        alerts.append(
            ("cls_b", "alert_3", "info", "cpu_utilization", 5, 2, "1h", 3, 1, "resolved one")
        )
    insert_rows(
        con,
        "alerts",
        [
            {
                "run_id": "run2",
                "cluster_id": cid,
                "snapshot_at": SNAP2,
                "alert_id": alert_id,
                "severity": severity,
                "metric": metric,
                "condition": "less_than",
                "threshold": threshold,
                "current_value": value,
                "duration": duration,
                "triggered_at": SNAP2 - timedelta(hours=ago),
                "resolved_at": None if resolved is None else SNAP2 - timedelta(hours=resolved),
                "message": message,
            }
            for (
                cid,
                alert_id,
                severity,
                metric,
                threshold,
                value,
                duration,
                ago,
                resolved,
                message,
            ) in alerts
        ],
    )


FINANCE_DDL = declared_ddl("project_monthly", "projects", "budget_status", "spend_anomalies")

NOV = date(2026, 11, 1)
# two projects (one named hostile, one unmapped), three budgets (one per status), an anomaly
PROJECT_MONTHLY = [
    (
        NOV,
        "proj_ml",
        "USD",
        "ML Research",
        "u1",
        "CC-100",
        D("900"),
        D("800"),
        D("100"),
        D("20"),
        D("180"),
        D("200"),
        D("50"),
        D("0"),
        DAY1,
        SNAP2,
        False,
        D("0"),
    ),
    (
        NOV,
        "proj_x",
        "USD",
        HOSTILE_SCRIPT,
        "u2",
        "unmapped",
        D("300"),
        D("250"),
        D("40"),
        D("4"),
        D("30"),
        D("40"),
        D("0"),
        D("0"),
        DAY1,
        SNAP2,
        False,
        D("-1.50"),
    ),
]
PROJECTS = [
    ("proj_ml", "ML Research", "u1", "ml@example.com", "CC-100", False, 2),
    ("proj_x", HOSTILE_SCRIPT, "u2", "x@example.com", "unmapped", True, 1),
]
BUDGET_STATUS = [
    ("fleet", "fleet", None, NOV, "USD", D("5000"), D("1200"), D("2400"), 24.0, 48.0, "ok"),
    (
        "ml",
        "project",
        "proj_ml",
        NOV,
        "USD",
        D("1000"),
        D("900"),
        D("1800"),
        90.0,
        180.0,
        "at_risk",
    ),
    ("x", "project", "proj_x", NOV, "USD", D("200"), D("300"), D("600"), 150.0, 300.0, "over"),
]
SPEND_ANOMALIES = [
    (
        date(2026, 11, 19),
        "project",
        "proj_ml",
        "USD",
        D("600"),
        D("300"),
        100.0,
        "started",
        D("5"),
        "cls_a,cls_b",
    ),
]


def add_finance_marts(path: Path) -> None:
    """Add the finance marts, hand-written, to a database made by `create_fixture_db`."""
    con = duckdb.connect(str(path))
    try:
        con.execute(FINANCE_DDL)
        con.executemany(
            f"insert into marts.project_monthly values ({', '.join(['?'] * 18)})", PROJECT_MONTHLY
        )
        con.executemany("insert into marts.projects values (?, ?, ?, ?, ?, ?, ?)", PROJECTS)
        con.executemany(
            "insert into marts.budget_status values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            BUDGET_STATUS,
        )
        con.executemany(
            "insert into marts.spend_anomalies values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            SPEND_ANOMALIES,
        )
    finally:
        con.close()
