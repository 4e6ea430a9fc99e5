"""The SQL models against hand-computed cases: every expected number is worked out in comments
from the rows the test inserts (tests/models_fixtures.py). Default rates: a 2-GPU cluster bills
gpu 6.20 (3.10 per GPU), cpu 0.32, memory 0.12, storage 0.14, network 0.12 = 6.90 per hour.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline.contracts import load_contracts
from pipeline.errors import DataTestError
from pipeline.models import BuildError, build_on_connection, discover_models, discover_tests
from tests.models_fixtures import DAY, HOUR, T0, D, FixtureDB, hours, run_id_for

MARTS = (
    "idle_waste_daily",
    "idle_waste_gpu_daily",
    "fleet_daily",
    "projection_drift",
    "recommendations",
    "clusters",
    "cluster_drift_accuracy",
)


def _daily(db: FixtureDB, cluster_id: str) -> dict:
    """The cluster's idle_waste_daily rows keyed by ISO day."""
    rows = db.rows(
        "select * from marts.idle_waste_daily where cluster_id = ? order by day", [cluster_id]
    )
    return {str(r["day"]): r for r in rows}


def _totals(db: FixtureDB, cluster_id: str) -> dict:
    return db.one(
        "select sum(gpu_hours) as gpu_hours, sum(idle_gpu_hours) as idle_gpu_hours, "
        "sum(idle_cost) as idle_cost, sum(unused_capacity_cost) as unused_capacity_cost "
        "from marts.idle_waste_daily where cluster_id = ?",
        [cluster_id],
    )


def _recs(db: FixtureDB, cluster_id: str) -> dict:
    rows = db.rows("select * from marts.recommendations where cluster_id = ?", [cluster_id])
    return {r["kind"]: r for r in rows}


def _week_before(at):
    """The 168 hourly bucket starts of the 7-day window of a snapshot at `at`."""
    return hours(at - 168 * HOUR, 168)


# -- idle waste ------------------------------------------------------------------------------


def test_idle_cost_unused_capacity_and_memory_held_per_gpu():
    db = FixtureDB()
    db.snapshot("c1", T0)
    # 24 buckets Nov 12 03:00 .. Nov 13 02:00, each: GPU 0 at 0 % holding 8 GB (idle, memory
    # held), GPU 1 at 90 %; cost 6.90 -> GPU cost 6.90 x 6.20/6.90 = 6.20, 3.10 per GPU.
    db.buckets("c1", hours(T0 - 24 * HOUR, 24), gpus=[(0.0, 8.0), (90.0, 70.0)], cost=D("6.90"))
    db.build()
    days = _daily(db, "c1")
    # Nov 12 holds 21 buckets (03..23), Nov 13 holds 3 (00..02).
    nov12 = days["2026-11-12"]
    assert nov12["gpu_hours"] == D("42")  # 21 x 2 GPUs
    assert nov12["idle_gpu_hours"] == D("21")  # GPU 0 only
    assert nov12["idle_cost"] == D("65.10")  # 21 x 3.10
    # unused: (1 - 0) + (1 - 0.9) = 1.1 GPU x 3.10 = 3.41 per bucket; x 21 = 71.61
    assert nov12["unused_capacity_cost"] == D("71.61")
    assert nov12["memory_held_idle_gpu_hours"] == D("21")
    assert nov12["avg_gpu_utilization"] == pytest.approx(45.0)
    assert nov12["per_gpu"] is True
    assert days["2026-11-13"]["idle_cost"] == D("9.30")  # 3 x 3.10
    gpu0 = db.one(
        "select * from marts.idle_waste_gpu_daily where gpu_id = '0' and day = '2026-11-12'"
    )
    assert (gpu0["gpu_hours"], gpu0["idle_gpu_hours"], gpu0["idle_cost"]) == (
        D("21"),
        D("21"),
        D("65.10"),
    )
    fleet = db.one("select * from marts.fleet_daily where day = '2026-11-12'")
    assert fleet["cost"] == D("144.90")  # 21 x 6.90
    assert fleet["idle_cost"] == D("65.10")


def test_idle_gpu_below_memory_threshold_is_not_memory_held():
    db = FixtureDB()
    db.snapshot("c1", T0)
    # GPU 0 idle with 0.5 GB (< 1 GB: an empty GPU), GPU 1 idle with 1.0 GB (held: >= 1 GB)
    db.buckets("c1", hours(T0 - 3 * HOUR, 3), gpus=[(1.0, 0.5), (4.9, 1.0)], cost=D("6.90"))
    db.build()
    row = _daily(db, "c1")["2026-11-13"]
    assert row["idle_gpu_hours"] == D("6")
    assert row["memory_held_idle_gpu_hours"] == D("3")


def test_without_per_gpu_series_every_gpu_of_an_idle_bucket_is_idle():
    db = FixtureDB()
    db.snapshot("c1", T0, has_gpu_series=False)
    # cluster utilization 4 % (< 5): both GPUs idle; 10 %: none idle
    db.buckets("c1", hours(T0 - 3 * HOUR, 2), util=4.0, cost=D("6.90"))
    db.bucket("c1", T0 - HOUR, util=10.0, cost=D("6.90"))
    db.build()
    row = _daily(db, "c1")["2026-11-13"]
    assert row["gpu_hours"] == D("6")  # 3 buckets x gpu_count 2 of the nearest snapshot
    assert row["idle_gpu_hours"] == D("4")
    assert row["idle_cost"] == D("12.40")  # 4 GPU-hours x 3.10
    # unused: 2 x 0.96 x 3.10 x 2 buckets + 2 x 0.90 x 3.10 = 11.904 + 5.58 = 17.484
    assert row["unused_capacity_cost"] == D("17.484")
    assert row["per_gpu"] is False
    assert row["memory_held_idle_gpu_hours"] == D("0")


def test_bucket_without_cost_is_priced_by_the_snapshot_rate():
    db = FixtureDB()
    db.snapshot("c1", T0)
    # no cost on the point: GPU price = gpu 6.20 / 2 GPUs = 3.10; fleet cost estimated 6.90/h
    db.buckets("c1", hours(T0 - 2 * HOUR, 2), gpus=[(0.0, 0.0), (0.0, 0.0)])
    db.build()
    assert _daily(db, "c1")["2026-11-13"]["idle_cost"] == D("12.40")  # 4 x 3.10
    assert db.one("select cost from marts.fleet_daily")["cost"] == D("13.80")


def test_price_change_inside_a_day_prices_each_bucket_by_its_nearest_snapshot():
    db = FixtureDB()
    db.snapshot("c1", T0)  # Nov 13 03:00, gpu 6.20 of 6.90
    db.snapshot(
        "c1",
        T0 + DAY,
        components={
            "gpu": D("8.20"),
            "cpu": D("0.32"),
            "memory": D("0.12"),
            "storage": D("0.14"),
            "network": D("0.12"),
        },
    )  # gpu 8.20 of 8.90
    # 24 idle buckets Nov 13 03:00 .. Nov 14 02:00; the price changed at 15:00.
    for i, at in enumerate(hours(T0, 24)):
        cost = D("6.90") if i < 12 else D("8.90")
        db.bucket("c1", at, gpus=[(0.0, 0.0), (0.0, 0.0)], cost=cost, snapshot_at=T0 + DAY)
    db.build()
    days = _daily(db, "c1")
    # Midpoints 03:30..14:30 are nearer Nov 13 03:00 (GPU cost 6.90 x 6.20/6.90 = 6.20),
    # 15:30..02:30 nearer Nov 14 03:00 (8.90 x 8.20/8.90 = 8.20).
    # Nov 13 (03..23): 12 x 6.20 + 9 x 8.20 = 74.40 + 73.80 = 148.20
    assert days["2026-11-13"]["idle_cost"] == D("148.20")
    # Nov 14 (00..02): 3 x 8.20 = 24.60
    assert days["2026-11-14"]["idle_cost"] == D("24.60")


def test_resize_8_to_4_counts_the_gpus_each_bucket_had():
    db = FixtureDB()
    big = {
        "gpu": D("24.80"),
        "cpu": D("0.32"),
        "memory": D("0.12"),
        "storage": D("0.14"),
        "network": D("0.12"),
    }  # 25.50 per hour, 3.10 per GPU
    small = dict(big, gpu=D("12.40"))  # 13.10 per hour
    db.snapshot("c1", T0, gpu_count=8, components=big)
    db.snapshot("c1", T0 + DAY, gpu_count=4, components=small)
    for i, at in enumerate(hours(T0, 24)):
        if i < 12:  # 8 GPUs: 3 at 50 %, 5 idle
            gpus, cost = [(50.0, 40.0)] * 3 + [(0.0, 0.0)] * 5, D("25.50")
        else:  # 4 GPUs: 3 at 50 %, 1 idle
            gpus, cost = [(50.0, 40.0)] * 3 + [(0.0, 0.0)], D("13.10")
        db.bucket("c1", at, gpus=gpus, cost=cost, snapshot_at=T0 + DAY)
    db.build()
    totals = _totals(db, "c1")
    assert totals["gpu_hours"] == D("144")  # 12 x 8 + 12 x 4
    assert totals["idle_gpu_hours"] == D("72")  # 12 x 5 + 12 x 1
    # per GPU 25.50 x 24.80/25.50 / 8 = 3.10 before, 13.10 x 12.40/13.10 / 4 = 3.10 after
    assert totals["idle_cost"] == D("223.20")  # 72 x 3.10
    # unused: (5 + 3 x 0.5) x 3.10 x 12 + (1 + 1.5) x 3.10 x 12 = 241.80 + 93.00
    assert totals["unused_capacity_cost"] == D("334.80")
    drift = db.one("select * from marts.projection_drift")
    # projected 25.50 x 24 = 612.00; actual 12 x 25.50 + 12 x 13.10 = 463.20
    assert drift["projected_cost"] == D("612")
    assert drift["actual_cost"] == D("463.20")
    assert drift["drift_pct"] == pytest.approx((463.20 - 612) / 612 * 100)
    assert drift["is_flagged"] is True
    assert drift["cause"] == "resize"


def test_stopped_mid_day_bills_storage_only_and_no_gpu_hours():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.snapshot("c1", T0 + DAY, status="stopped")  # rate = storage 0.14
    for i, at in enumerate(hours(T0, 24)):
        if i < 6:  # 03..08 running, idle
            db.bucket("c1", at, gpus=[(0.0, 0.0)] * 2, cost=D("6.90"), snapshot_at=T0 + DAY)
        else:  # 09..02 stopped, storage only, no GPU entries
            db.bucket("c1", at, util=0.0, cost=D("0.14"), status="stopped", snapshot_at=T0 + DAY)
    db.build()
    days = _daily(db, "c1")
    # the stopped snapshot bills no GPU: every running bucket is priced by Nov 13 03:00
    assert days["2026-11-13"]["gpu_hours"] == D("12")  # 6 running buckets x 2
    assert days["2026-11-13"]["idle_cost"] == D("37.20")  # 12 x 3.10
    assert days["2026-11-14"]["gpu_hours"] == D("0")
    fleet = {str(r["day"]): r["cost"] for r in db.rows("select * from marts.fleet_daily")}
    assert fleet["2026-11-13"] == D("43.50")  # 6 x 6.90 + 15 x 0.14
    assert fleet["2026-11-14"] == D("0.42")  # 3 x 0.14
    drift = db.one("select * from marts.projection_drift")
    # projected 6.90 x 24 = 165.60, actual 41.40 + 2.52 = 43.92
    assert drift["actual_cost"] == D("43.92")
    assert drift["cause"] == "stopped"
    assert drift["is_flagged"] is True


def test_cluster_younger_than_the_window():
    db = FixtureDB()
    db.snapshot("c1", T0, created_at=T0 - 20 * HOUR)
    # 20 idle buckets Nov 12 07:00 .. Nov 13 02:00
    db.buckets("c1", hours(T0 - 20 * HOUR, 20), gpus=[(0.0, 0.0)] * 2, cost=D("6.90"))
    db.build()
    days = _daily(db, "c1")
    assert days["2026-11-12"]["gpu_hours"] == D("34")  # 17 buckets x 2
    assert days["2026-11-13"]["gpu_hours"] == D("6")
    # 20 billed buckets < 24: too young for stop_idle; downsize needs no minimum
    assert set(_recs(db, "c1")) == {"downsize"}


def test_gaps_are_no_data_and_break_idle_runs():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.snapshot("c2", T0)
    for cid, gap in (("c1", False), ("c2", True)):
        for at in _week_before(T0):
            h = at.hour
            busy = 9 <= h < 19  # busy 10 h, idle 14 h (19:00 .. 08:00) every day
            if gap and h == 1:
                continue  # one missing bucket a night: runs 19..00 (6 h) and 02..08 (7 h)
            db.bucket(cid, at, gpus=[(60.0 if busy else 0.0, 0.0)] * 2, cost=D("6.90"))
    db.build()
    assert "schedule" in _recs(db, "c1")
    assert "schedule" not in _recs(db, "c2")
    # missing buckets count as nothing, not as zero-utilization hours: 7 fewer per GPU
    c1, c2 = _totals(db, "c1"), _totals(db, "c2")
    assert c1["gpu_hours"] - c2["gpu_hours"] == D("14")
    assert c1["idle_gpu_hours"] - c2["idle_gpu_hours"] == D("14")


def test_bucket_revised_by_a_later_snapshot_takes_the_new_value():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.bucket("c1", T0 - HOUR, gpus=[(0.0, 0.0)] * 2, cost=D("6.90"))
    db.build()
    assert _daily(db, "c1")["2026-11-13"]["idle_gpu_hours"] == D("2")
    db.snapshot("c1", T0 + DAY)
    # the provider revised the bucket: GPU 1 was busy after all
    db.bucket("c1", T0 - HOUR, gpus=[(0.0, 0.0), (80.0, 0.0)], cost=D("6.90"), snapshot_at=T0 + DAY)
    db.build()
    row = _daily(db, "c1")["2026-11-13"]
    assert row["idle_gpu_hours"] == D("1")
    assert row["idle_cost"] == D("3.10")


def test_zero_cost_cluster_has_no_waste_and_no_drift_percentage():
    db = FixtureDB()
    zero = {k: D(0) for k in ("gpu", "cpu", "memory", "storage", "network")}
    db.snapshot("c1", T0, components=zero)
    db.snapshot("c1", T0 + DAY, components=zero)
    db.buckets("c1", hours(T0, 24), gpus=[(0.0, 0.0)] * 2, cost=D(0), snapshot_at=T0 + DAY)
    db.build()
    assert _daily(db, "c1")["2026-11-13"]["idle_cost"] == D(0)
    assert _daily(db, "c1")["2026-11-13"]["idle_gpu_hours"] == D("42")
    drift = db.one("select * from marts.projection_drift")
    assert (drift["projected_cost"], drift["actual_cost"]) == (D(0), D(0))
    assert drift["drift_pct"] is None
    assert drift["is_flagged"] is False


def test_several_currencies_are_never_summed_together():
    db = FixtureDB()
    db.snapshot("usd", T0)
    db.snapshot("eur", T0, currency="EUR")
    db.buckets("usd", hours(T0 - 2 * HOUR, 2), gpus=[(0.0, 0.0)] * 2, cost=D("6.90"))
    db.buckets(
        "eur", hours(T0 - 2 * HOUR, 2), gpus=[(0.0, 0.0)] * 2, cost=D("6.90"), currency="EUR"
    )
    db.build()
    rows = {r["currency"]: r for r in db.rows("select * from marts.fleet_daily")}
    assert set(rows) == {"USD", "EUR"}
    assert rows["USD"]["cost"] == rows["EUR"]["cost"] == D("13.80")
    assert rows["EUR"]["idle_cost"] == D("12.40")


def test_thresholds_reach_sql_as_variables():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.bucket("c1", T0 - HOUR, gpus=[(30.0, 0.0), (60.0, 0.0)], cost=D("6.90"))
    db.build()
    assert _daily(db, "c1")["2026-11-13"]["idle_gpu_hours"] == D("0")
    db.build(idle_threshold_pct=50.0)  # now GPU 0 (30 %) is idle
    assert _daily(db, "c1")["2026-11-13"]["idle_gpu_hours"] == D("1")
    sql = "".join(m.sql for m in discover_models())
    assert "idle_threshold_pct" in sql and "< 5" not in sql


# -- projection drift ------------------------------------------------------------------------


def test_drift_from_total_cost_to_date_when_points_carry_no_cost_with_reset():
    db = FixtureDB()
    db.snapshot("c1", T0, total_cost_to_date=D("1000"))
    # the cluster was recreated under the same id: the total restarted and is now 150.00
    db.snapshot("c1", T0 + DAY, total_cost_to_date=D("150"))
    db.buckets("c1", hours(T0, 24), gpus=[(50.0, 0.0)] * 2, snapshot_at=T0 + DAY)
    db.build()
    drift = db.one("select * from marts.projection_drift")
    # a decrease is a reset: what accrued is the new total, 150.00 (not 150 - 1000)
    assert drift["actual_cost"] == D("150")
    assert drift["projected_cost"] == D("165.6")
    src = db.one("select actual_source from intermediate.projection_actuals")
    assert src["actual_source"] == "total_cost_to_date"


def test_unelapsed_or_poorly_covered_horizons_are_not_scored():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.snapshot("c1", T0 + DAY)
    # 22 of 24 buckets (91.7 % < 95 %) and no totals: the daily horizon is not scored;
    # weekly and monthly have not elapsed
    db.buckets("c1", hours(T0, 22), gpus=[(50.0, 0.0)] * 2, cost=D("6.90"), snapshot_at=T0 + DAY)
    db.build()
    assert db.rows("select * from marts.projection_drift") == []
    db.bucket("c1", T0 + 22 * HOUR, gpus=[(50.0, 0.0)] * 2, cost=D("6.90"), snapshot_at=T0 + DAY)
    db.build()  # 23 of 24 = 95.8 %: scored, from the 23 buckets seen
    assert db.one("select actual_cost from marts.projection_drift")["actual_cost"] == D("158.70")


def test_deleted_mid_horizon_is_the_cause():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.snapshot("keep", T0)
    db.snapshot("c1", T0 + 12 * HOUR)
    db.snapshot("keep", T0 + 12 * HOUR)
    db.snapshot("keep", T0 + DAY)  # c1 was deleted before this run
    db.buckets(
        "c1", hours(T0, 12), gpus=[(50.0, 0.0)] * 2, cost=D("6.90"), snapshot_at=T0 + 12 * HOUR
    )
    db.build()
    # 12 of 24 hours seen: not scored at the default 95 % coverage
    assert db.rows("select * from marts.projection_drift where cluster_id = 'c1'") == []
    db.build(drift_min_coverage_pct=50.0)
    drift = db.one(
        "select * from marts.projection_drift where cluster_id = 'c1' and projected_at = ?",
        [T0],
    )
    assert drift["actual_cost"] == D("82.80")  # 12 x 6.90
    assert drift["cause"] == "deleted"
    assert db.one("select status from marts.clusters where cluster_id = 'c1'")["status"] == (
        "deleted"
    )


def test_rate_change_is_the_cause_and_small_drift_is_not_flagged():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.snapshot(
        "c1",
        T0 + DAY,
        hourly_rate=D("7.00"),
        components={
            "gpu": D("6.30"),
            "cpu": D("0.32"),
            "memory": D("0.12"),
            "storage": D("0.14"),
            "network": D("0.12"),
        },
    )
    db.buckets("c1", hours(T0, 24), gpus=[(50.0, 0.0)] * 2, cost=D("7.00"), snapshot_at=T0 + DAY)
    db.build()
    drift = db.one("select * from marts.projection_drift")
    # 24 x 7.00 = 168.00 against 165.60: +1.45 %, |diff| 2.40 >= 1 but < 15 %: not flagged
    assert drift["actual_cost"] == D("168")
    assert drift["is_flagged"] is False
    assert drift["cause"] == "rate_change"
    acc = db.one("select * from marts.cluster_drift_accuracy where horizon = 'daily'")
    assert acc["scored_days"] == 1
    assert acc["mape_pct"] == pytest.approx(2.40 / 165.60 * 100)


# -- recommendations ---------------------------------------------------------------------------


def test_stop_idle_and_downsize_for_an_idle_cluster():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.buckets("c1", _week_before(T0), gpus=[(1.0, 8.0)] * 2, cost=D("6.90"))
    db.build()
    recs = _recs(db, "c1")
    assert set(recs) == {"stop_idle", "downsize"}
    # (6.90 - 0.14 storage) x 720 = 4867.20
    assert recs["stop_idle"]["monthly_savings"] == D("4867.20")
    assert "168 of 168" in recs["stop_idle"]["reason"]
    # per-GPU evidence: each GPU idle all 168 h holding 8 GB -> 16.0 GB held
    assert (
        "GPU 0, 1 below 5 % in at least 168 of 168 h, 16.0 GB held" in (recs["stop_idle"]["reason"])
    )
    # busy P95 = 0 -> keep max(1, 0) = 1 GPU: (2 - 1) x 3.10 x 720 = 2232.00
    assert recs["downsize"]["monthly_savings"] == D("2232.00")
    assert recs["stop_idle"]["status"] == "open"


def test_downsize_uses_the_interpolated_p95_of_busy_gpus():
    db = FixtureDB()
    four = {
        "gpu": D("12.40"),
        "cpu": D("0.32"),
        "memory": D("0.12"),
        "storage": D("0.14"),
        "network": D("0.12"),
    }
    db.snapshot("c1", T0, gpu_count=4, components=four)
    # GPU 0 always busy; GPU 1 busy in the last 9 of 168 hours: busy counts are 159 ones and
    # 9 twos. P95 (linear): position 0.95 x 167 = 158.65, between index 158 (1) and 159 (2):
    # 1.65 -> need 2 -> savings (4 - 2) x 3.10 x 720 = 4464.00
    for i, at in enumerate(_week_before(T0)):
        gpus = [(80.0, 40.0), (80.0 if i >= 159 else 0.0, 0.0), (0.0, 0.0), (0.0, 0.0)]
        db.bucket("c1", at, gpus=gpus, cost=D("13.10"))
    db.build()
    recs = _recs(db, "c1")
    assert set(recs) == {"downsize"}
    assert recs["downsize"]["monthly_savings"] == D("4464.00")
    assert "1.65" in recs["downsize"]["reason"] and "2 of 4 GPUs" in recs["downsize"]["reason"]


def test_schedule_for_a_cluster_idle_every_night():
    db = FixtureDB()
    db.snapshot("c1", T0)
    # window Nov 6 03:00 .. Nov 13 03:00; busy 09..16 (8 h), idle 17:00 .. 08:00.
    # Runs: Nov 6 03..08 (6 h, too short), six full nights of 16 h, Nov 12 17..02 (10 h):
    # 96 + 10 = 106 h in qualifying runs, on 8 UTC days (Nov 6..13) >= 5.
    # all-idle share 112/168 < 95 %: not stop_idle; busy P95 = 2 = gpu_count: no downsize.
    for at in _week_before(T0):
        busy = 9 <= at.hour < 17
        db.bucket("c1", at, gpus=[(70.0 if busy else 0.0, 0.0)] * 2, cost=D("6.90"))
    db.build()
    recs = _recs(db, "c1")
    assert set(recs) == {"schedule"}
    # 106 / 7 x 30 x 6.76 = 3070.9714285...
    assert recs["schedule"]["monthly_savings"] == D("3070.971429")


def test_delete_storage_for_a_cluster_stopped_all_week():
    db = FixtureDB()
    db.snapshot("c1", T0, status="stopped", last_status_change=T0 - 10 * DAY)
    db.buckets("c1", _week_before(T0), util=0.0, cost=D("0.14"), status="stopped")
    db.build()
    recs = _recs(db, "c1")
    assert set(recs) == {"delete_storage"}
    assert recs["delete_storage"]["monthly_savings"] == D("100.80")  # 0.14 x 720
    assert "2026-11-03" in recs["delete_storage"]["reason"]


def test_investigate_error_while_cost_accrues():
    db = FixtureDB()
    db.snapshot("c1", T0, status="error")
    db.build()
    recs = _recs(db, "c1")
    assert set(recs) == {"investigate_error"}
    assert recs["investigate_error"]["monthly_savings"] == D("4867.20")  # (6.90 - 0.14) x 720


def test_open_recommendation_resolved_when_the_cluster_is_stopped():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.buckets("c1", _week_before(T0), gpus=[(1.0, 8.0)] * 2, cost=D("6.90"))
    db.build()
    first = _recs(db, "c1")["stop_idle"]
    db.snapshot("c1", T0 + DAY, status="stopped")
    db.buckets(
        "c1", hours(T0, 24), util=0.0, cost=D("0.14"), status="stopped", snapshot_at=T0 + DAY
    )
    db.build()
    rec = _recs(db, "c1")["stop_idle"]
    assert rec["rec_id"] == first["rec_id"]  # stable across nights
    assert rec["status"] == "resolved"
    assert rec["first_seen_at"] == rec["last_seen_at"] == T0
    # rate before 6.90, after 0.14 (storage): 6.76 x 720 = 4867.20
    assert rec["realized_monthly_savings"] == D("4867.20")


def test_recommendation_closed_when_the_cluster_gets_busy():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.buckets("c1", _week_before(T0), gpus=[(1.0, 8.0)] * 2, cost=D("6.90"))
    db.snapshot("c1", T0 + DAY)
    db.buckets("c1", hours(T0, 24), gpus=[(90.0, 8.0)] * 2, cost=D("6.90"), snapshot_at=T0 + DAY)
    db.build()
    rec = _recs(db, "c1")["stop_idle"]  # 144 of 168 idle at Nov 14 = 85.7 % < 95 %
    assert rec["status"] == "closed"
    assert rec["realized_monthly_savings"] is None


def test_recommendation_resolved_when_the_cluster_is_deleted():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.snapshot("keep", T0)
    db.buckets("c1", _week_before(T0), gpus=[(1.0, 8.0)] * 2, cost=D("6.90"))
    db.snapshot("keep", T0 + DAY)
    db.failure(f"run-{(T0 + DAY):%Y%m%dT%H%M%S}", "c1", outcome="gone")
    db.build()
    rec = _recs(db, "c1")["stop_idle"]
    assert rec["status"] == "resolved"
    assert rec["realized_monthly_savings"] == D("4968.00")  # (6.90 - 0) x 720


def test_a_cluster_that_failed_in_the_last_run_is_not_deleted():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.snapshot("keep", T0)
    db.buckets("c1", _week_before(T0), gpus=[(1.0, 8.0)] * 2, cost=D("6.90"))
    db.snapshot("keep", T0 + DAY)
    db.failure(f"run-{(T0 + DAY):%Y%m%dT%H%M%S}", "c1", outcome="failed")
    db.build()
    assert db.one("select status from marts.clusters where cluster_id = 'c1'")["status"] == (
        "running"
    )


# -- the build ---------------------------------------------------------------------------------


def _marts(db: FixtureDB) -> dict[str, list[tuple]]:
    return {m: db.con.execute(f"select * from marts.{m} order by all").fetchall() for m in MARTS}


def _every_mart(db: FixtureDB) -> dict[str, list[tuple]]:
    """Every mart (tables and views; not the build's own ledger), every row."""
    names = db.con.execute(
        "select table_name from information_schema.tables where table_schema = 'marts' "
        "and not starts_with(table_name, 'build_') order by table_name"
    ).fetchall()
    return {
        n: db.con.execute(f'select * from marts."{n}" order by all').fetchall() for (n,) in names
    }


def test_incremental_builds_equal_a_full_refresh():
    db = FixtureDB()
    for night in range(4):
        at = T0 + night * DAY
        for cid, gpus in (("a", [(0.0, 8.0), (70.0, 40.0)]), ("b", [(2.0, 0.0)] * 2)):
            db.snapshot(cid, at, total_cost_to_date=D(1000) + night * D("165.60"))
            # each night revises the newest 3 buckets of the night before
            for i, bucket in enumerate(_week_before(at)):
                late = i >= 165
                util = [(u + (5.0 if late else 0.0), m) for u, m in gpus]
                db.bucket(cid, bucket, gpus=util, cost=D("6.90"), snapshot_at=at)
        result = db.build()
        if night:
            assert "marts.idle_waste_daily" in result.incremental_marts
    incremental = _every_mart(db)
    full = db.build(full_refresh=True)
    assert full.incremental_marts == []
    assert _every_mart(db) == incremental
    # the comparison is not between empty tables
    assert incremental["projection_drift"] and incremental["cluster_cost_daily"]


def _night_of_events(db: FixtureDB, night: int) -> None:
    """Night `night` of a fleet where something happens every night: `nap` stops on nights 2-3
    and restarts (its pricing snapshot is then days back), `gone` is deleted after night 2,
    `new` appears on night 3, `idle` shrinks from 2 GPUs to 1 on night 4, `busy` just runs."""
    at = T0 + night * DAY
    since = at - (7 * DAY if night == 0 else DAY + 3 * HOUR)  # revises 3 buckets each night
    plan = {
        "busy": ("running", 2, [(80.0, 30.0), (65.0, 20.0)]),
        "nap": ("stopped" if night in (2, 3) else "running", 2, [(1.0, 4.0), (50.0, 9.0)]),
        "idle": ("running", 2 if night < 4 else 1, [(0.0, 2.0)]),
    }
    if night <= 2:
        plan["gone"] = ("running", 2, [(2.0, 0.0), (3.0, 0.0)])
    if night >= 3:
        plan["new"] = ("running", 2, [(1.0, 0.0), (90.0, 10.0)])
    for cid, (status, gpu_count, gpus) in plan.items():
        series = (gpus * gpu_count)[:gpu_count]
        db.snapshot(cid, at, status=status, gpu_count=gpu_count)
        start = max(since, at - 2 * DAY) if cid == "new" else since
        for i, bucket in enumerate(hours(start, int((at - start) / HOUR))):
            util = [(u + (i % 3), m) for u, m in series]
            if status == "stopped":
                db.bucket(cid, bucket, util=0.0, cost=D("0.14"), status="stopped", snapshot_at=at)
            else:
                db.bucket(cid, bucket, gpus=util, cost=D("6.90"), snapshot_at=at)
    if night >= 3:
        db.failure(run_id_for(at), "gone", outcome="gone")


def test_nightly_incremental_builds_through_stops_deletions_and_new_clusters_equal_full():
    incremental, full = FixtureDB(), FixtureDB()
    for night in range(7):
        for db in (incremental, full):
            _night_of_events(db, night)
        result = incremental.build()
        full.build(full_refresh=True)
        if night:
            assert "intermediate.buckets" in result.incremental_marts, night
        assert _marts(incremental) == _marts(full), night
    marts = _marts(full)
    assert {r[0] for r in marts["clusters"]} == {"busy", "nap", "idle", "gone", "new"}
    # the comparison has teeth: the events reached the marts
    assert {r[2] for r in marts["clusters"] if r[0] == "gone"} == {"deleted"}
    assert {r[7] for r in marts["projection_drift"]} >= {"stopped", "started", "resize"}
    assert {r[3] for r in marts["recommendations"]} >= {"open", "resolved"}


def test_a_run_rewritten_after_it_was_built_is_built_again():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.buckets("c1", hours(T0 - 2 * HOUR, 2), gpus=[(0.0, 0.0)] * 2, cost=D("6.90"), snapshot_at=T0)
    db.build()
    # the same run's bucket gets a new value (a replay from the raw store)
    db.bucket("c1", T0 - HOUR, gpus=[(90.0, 0.0)] * 2, cost=D("6.90"), snapshot_at=T0)
    result = db.build()
    assert "marts.idle_waste_daily" in result.incremental_marts
    assert db.one("select idle_gpu_hours from marts.idle_waste_daily")["idle_gpu_hours"] == 2


def test_failing_data_test_raises_and_keeps_the_last_good_build():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.bucket("c1", T0 - HOUR, gpus=[(0.0, 0.0)] * 2, cost=D("6.90"))
    db.build()
    db.bucket("c1", T0 - 2 * HOUR, gpus=[(0.0, 0.0)] * 2, cost=D("-50"))  # day total < 0
    with pytest.raises(DataTestError, match="no_negative_costs"):
        db.build(full_refresh=True)
    # rolled back: the marts are those of the previous build
    assert db.one("select cost from marts.fleet_daily")["cost"] == D("6.90")


def test_build_result_counts_models_tests_and_rows():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.bucket("c1", T0 - HOUR, gpus=[(0.0, 0.0)] * 2, cost=D("6.90"))
    result = db.build()
    tests = len(discover_tests())
    assert tests >= 7
    assert result.tests_passed == tests
    assert result.rows_per_mart["fleet_daily"] == 1
    assert set(MARTS) <= set(result.rows_per_mart)
    line = result.summary_line()
    assert f"{tests} data tests passed" in line and "fleet_daily=1" in line


def _write(root, layer, name, sql):
    (root / layer).mkdir(parents=True, exist_ok=True)
    (root / layer / f"{name}.sql").write_text(sql)


def test_build_order_comes_from_the_models_references(tmp_path):
    _write(tmp_path, "marts", "b", "select * from intermediate.a")
    _write(tmp_path, "intermediate", "a", "select * from staging.s")
    _write(tmp_path, "staging", "s", "select 1 as x from snap.cluster_snapshots")
    order = [m.relation for m in discover_models(tmp_path)]
    assert order == ["staging.s", "intermediate.a", "marts.b"]


def test_a_cycle_is_a_clear_error(tmp_path):
    _write(tmp_path, "intermediate", "a", "select * from intermediate.b")
    _write(
        tmp_path, "intermediate", "b", "with x as (select * from intermediate.a) select * from x"
    )
    with pytest.raises(BuildError, match="cycle"):
        discover_models(tmp_path)


def test_a_view_reading_the_builds_scope_is_refused(tmp_path):
    # the scope exists only while a build runs: a view would fail when read afterwards
    _write(tmp_path, "intermediate", "v", "select * from _gpucost_scope")
    with pytest.raises(BuildError, match="only a table may read the build's scope"):
        discover_models(tmp_path)


def test_an_incremental_header_must_say_per_cluster_or_fleet(tmp_path):
    _write(tmp_path, "marts", "m", "-- incremental: day\nselect 1 as x from snap.runs")
    with pytest.raises(BuildError, match="per cluster where"):
        discover_models(tmp_path)


def test_a_reference_to_an_unknown_model_is_a_clear_error(tmp_path):
    _write(tmp_path, "marts", "m", "select * from intermediate.missing")
    with pytest.raises(BuildError, match="intermediate.missing"):
        discover_models(tmp_path)


def test_batches_refuse_a_per_cluster_model_reading_a_table_that_is_not(tmp_path):
    # batched builds compute the per-cluster tables before the others: it would read a stale
    # (or empty) table, through a view too
    from pipeline.models import _check_batchable

    _write(tmp_path, "marts", "whole", "select 1 as cluster_id from snap.cluster_snapshots")
    _write(tmp_path, "intermediate", "v", "select * from marts.whole")
    _write(
        tmp_path,
        "marts",
        "per",
        "-- materialized: table\n-- incremental: per cluster where true\n"
        "select * from intermediate.v",
    )
    with pytest.raises(BuildError, match="marts.whole"):
        _check_batchable(discover_models(tmp_path))
    _check_batchable(discover_models())  # the project's models keep the rule


def test_build_on_an_empty_database_says_snapshot_first():
    import duckdb

    from pipeline.config import Thresholds

    with pytest.raises(BuildError, match="snapshot"):
        build_on_connection(duckdb.connect(), Thresholds())


def test_money_columns_are_decimal():
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.bucket("c1", T0 - HOUR, gpus=[(0.0, 0.0)] * 2, cost=D("6.90"))
    db.build()
    types = dict(
        db.con.execute(
            "select table_name || '.' || column_name, data_type from information_schema.columns "
            "where table_schema = 'marts'"
        ).fetchall()
    )
    money = [
        "idle_waste_daily.idle_cost",
        "idle_waste_daily.unused_capacity_cost",
        "fleet_daily.cost",
        "fleet_daily.idle_cost",
        "projection_drift.projected_cost",
        "projection_drift.actual_cost",
        "recommendations.monthly_savings",
        "recommendations.realized_monthly_savings",
        "clusters.hourly_rate",
    ]
    for column in money:
        assert types[column].startswith("DECIMAL"), column
    assert isinstance(db.one("select cost from marts.fleet_daily")["cost"], Decimal)


def test_gpucost_build_command_builds_a_database_file(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import cli

    path = tmp_path / "g.duckdb"
    db = FixtureDB(path)
    db.snapshot("c1", T0)
    db.bucket("c1", T0 - HOUR, gpus=[(0.0, 0.0)] * 2, cost=D("6.90"))
    db.close()
    result = CliRunner().invoke(cli, ["build", "--db", str(path), "--full-refresh"])
    assert result.exit_code == 0, result.output
    assert "full refresh" in result.output and "fleet_daily=1" in result.output
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("select idle_cost from marts.idle_waste_daily").fetchone() == (D("6.20"),)
    con.close()


def test_gpucost_build_without_a_database_exits_with_a_clear_message(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import cli

    result = CliRunner().invoke(cli, ["build", "--db", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 2  # a usage error: wrong --db, or no snapshot yet
    assert "snapshot" in result.output


def test_build_while_another_run_holds_the_lock_exits_5(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import cli
    from pipeline.store import Store

    path = tmp_path / "g.duckdb"
    db = FixtureDB(path)
    db.snapshot("c1", T0)
    db.close()
    with Store.open(path):
        result = CliRunner().invoke(cli, ["build", "--db", str(path)])
    assert result.exit_code == 5, result.output


@pytest.mark.parametrize("dialect", ["spark", "trino"])
def test_every_model_transpiles_to_a_warehouse_dialect(dialect):
    """DESIGN "Past one machine": the models stay portable enough for a SQL transpiler."""
    import sqlglot

    for model in discover_models():
        out = sqlglot.transpile(
            model.sql, read="duckdb", write=dialect, unsupported_level=sqlglot.ErrorLevel.RAISE
        )
        assert len(out) == 1 and "select * from final" in out[0].lower(), model.relation


def test_marts_declare_and_have_exactly_the_contract_columns_in_order():
    """DESIGN "The outward contract": what users, scripts and spreadsheets rely on. The marts'
    declarations (sql/marts/<name>.toml) must say so, and the build makes them so."""
    contract = {
        "idle_waste_daily": "cluster_id, day, currency, gpu_hours, idle_gpu_hours, idle_cost, "
        "unused_capacity_cost, avg_gpu_utilization, per_gpu, memory_held_idle_gpu_hours",
        "projection_drift": "cluster_id, projected_at, horizon, projected_cost, actual_cost, "
        "drift_pct, is_flagged, cause, currency",
        "recommendations": "rec_id, cluster_id, kind, status, monthly_savings, currency, reason, "
        "first_seen_at, last_seen_at, realized_monthly_savings",
        "fleet_daily": "day, currency, cost, gpu_hours, idle_gpu_hours, idle_cost",
        "clusters": "cluster_id, name, status, gpu_type, gpu_count, region, project_name, "
        "hourly_rate, currency, health, last_snapshot_at",
    }
    declared = load_contracts()
    for mart, columns in contract.items():
        assert declared[mart].names == columns.split(", "), mart
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.build()
    for mart, columns in contract.items():
        found = db.rows(
            "select column_name from information_schema.columns where table_schema = 'marts' "
            "and table_name = ? order by ordinal_position",
            [mart],
        )
        assert [r["column_name"] for r in found] == columns.split(", "), mart


def test_a_data_test_that_cannot_run_fails_the_build(tmp_path):
    from pipeline.config import Thresholds

    _write(tmp_path, "marts", "m", "select cluster_id from snap.cluster_snapshots")
    _write(tmp_path, "tests", "broken", "select * from marts.no_such_mart")
    db = FixtureDB()
    with pytest.raises(DataTestError, match="broken: the test itself fails"):
        build_on_connection(db.con, Thresholds(), root=tmp_path)
    tables = db.con.execute("select table_name from duckdb_tables() where schema_name = 'marts'")
    assert tables.fetchall() == []  # rolled back


def test_started_is_the_cause_when_a_stopped_cluster_starts():
    db = FixtureDB()
    db.snapshot("c1", T0, status="stopped")  # rate 0.14: projected 0.14 x 24 = 3.36
    db.snapshot("c1", T0 + DAY)
    for i, at in enumerate(hours(T0, 24)):
        if i < 12:
            db.bucket("c1", at, util=0.0, cost=D("0.14"), status="stopped", snapshot_at=T0 + DAY)
        else:
            db.bucket("c1", at, gpus=[(80.0, 0.0)] * 2, cost=D("6.90"), snapshot_at=T0 + DAY)
    db.build()
    drift = db.one("select * from marts.projection_drift where projected_at = ?", [T0])
    # 12 x 0.14 + 12 x 6.90 = 1.68 + 82.80 = 84.48
    assert (drift["projected_cost"], drift["actual_cost"]) == (D("3.36"), D("84.48"))
    assert drift["cause"] == "started"
    assert drift["is_flagged"] is True
