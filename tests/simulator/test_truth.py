"""Ground truth against numbers worked out by hand, and over the demo fleet."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from pipeline.config import Thresholds
from pipeline.simulator.fleet import ClusterEvent, ClusterPlan, Fleet, FleetSpec
from pipeline.simulator.truth import GroundTruth, ground_truth

from .conftest import START

D = Decimal
T0 = datetime(2026, 11, 2, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 3, 0, tzinfo=UTC)
CREATED = datetime(2026, 11, 1, 0, tzinfo=UTC)


def _util_a(t: datetime, gpu: int) -> tuple[float, float]:
    # GPU 0 at 50 % all day; GPU 1 idle holding 8 GB until noon, then 80 %
    if gpu == 0:
        return 50.0, 40.0
    return (0.0, 8.0) if t.hour < 12 else (80.0, 40.0)


def _util_c(t: datetime, gpu: int) -> tuple[float, float]:
    # busy 09:00-16:59 UTC, else 1 % holding 0.5 GB (below the 1 GB "memory held" line)
    return (60.0, 10.0) if 9 <= t.hour < 17 else (1.0, 0.5)


# A: 2 x H100 at 3.00 + 0.40 other = 6.40/h; the GPU price drops to 2.00 at 11-02 10:00 (4.40/h).
PLAN_A = ClusterPlan(
    id="cls_a",
    name="a",
    created_at=CREATED,
    gpu_type="H100",
    gpu_count=2,
    gpu_price=D("3.00"),
    cpu_rate=D("0.20"),
    memory_rate=D("0.10"),
    storage_rate=D("0.05"),
    network_rate=D("0.05"),
    utilization=_util_a,
    events=(ClusterEvent(datetime(2026, 11, 2, 10, tzinfo=UTC), "price", gpu_price=D("2.00")),),
)
# B: 4 x A100 at 1.50 + 0.30 other = 6.30/h, no per-GPU series, always 2 % busy; resized to
# 2 GPUs at 11-02 12:00 (3.30/h).
PLAN_B = ClusterPlan(
    id="cls_b",
    name="b",
    created_at=CREATED,
    gpu_type="A100",
    gpu_count=4,
    gpu_price=D("1.50"),
    cpu_rate=D("0.10"),
    memory_rate=D("0.05"),
    storage_rate=D("0.10"),
    network_rate=D("0.05"),
    utilization=lambda t, g: (2.0, 6.0),
    per_gpu_series=False,
    events=(ClusterEvent(datetime(2026, 11, 2, 12, tzinfo=UTC), "resize", gpu_count=2),),
)
# C: 1 x L4 at 0.80 + 0.10 other = 0.90/h in EUR, created 06:30 (bills from 07:00), points
# without `cost`, stopped 11-02 18:00-22:00 (storage 0.02/h only).
PLAN_C = ClusterPlan(
    id="cls_c",
    name="c",
    created_at=datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
    gpu_type="L4",
    gpu_count=1,
    gpu_price=D("0.80"),
    cpu_rate=D("0.04"),
    memory_rate=D("0.02"),
    storage_rate=D("0.02"),
    network_rate=D("0.02"),
    currency="EUR",
    utilization=_util_c,
    point_cost=False,
    events=(
        ClusterEvent(datetime(2026, 11, 2, 18, tzinfo=UTC), "stop"),
        ClusterEvent(datetime(2026, 11, 2, 22, tzinfo=UTC), "start"),
    ),
)


def _truth(*plans: ClusterPlan, thresholds: Thresholds | None = None, **kw: str) -> GroundTruth:
    fleet = Fleet(FleetSpec(plans=list(plans), start=T0))
    return ground_truth(fleet, [T1, T0], thresholds, **kw)


def _daily(truth: GroundTruth) -> dict[tuple[str, date], tuple[Decimal, ...]]:
    return {
        (r.cluster_id, r.day): (
            r.gpu_hours,
            r.idle_gpu_hours,
            r.idle_cost,
            r.unused_capacity_cost,
            r.actual_cost,
            r.memory_held_idle_gpu_hours,
        )
        for r in truth.daily
    }


def test_daily_truth_matches_hand_computed_price_change_resize_and_stop() -> None:
    daily = _daily(_truth(PLAN_A, PLAN_B, PLAN_C))
    # Snapshots T0 = 11-02 00:00 and T1 = 11-03 00:00 see 11-01 and 11-02 (the windows start
    # before creation). A bucket is priced by the snapshot nearest its midpoint: 11-01 and
    # 11-02 00:00-11:59 by T0, 11-02 12:00-23:59 by T1.
    # A, 11-01: cost 6.40, GPU share 6.00/6.40 -> 3.00 per GPU.
    #   idle: GPU 1 00-11 = 12 h x 3.00 = 36.00, holding 8 GB -> 12 memory-held hours
    #   unused: GPU 0 24 x 0.5 x 3 = 36.00; GPU 1 12 x 1 x 3 + 12 x 0.2 x 3 = 43.20 -> 79.20
    #   actual: 24 x 6.40 = 153.60
    assert daily[("cls_a", date(2026, 11, 1))] == (
        D(48),
        D(12),
        D("36.00"),
        D("79.20"),
        D("153.60"),
        D(12),
    )
    # A, 11-02: 00-09 cost 6.40 -> 3.00/GPU; 10-11 cost 4.40 priced by T0's share 6.00/6.40
    #   -> 4.125 -> 2.0625/GPU; 12-23 cost 4.40 by T1's share 4.00/4.40 -> 2.00/GPU.
    #   idle: 10 x 3 + 2 x 2.0625 = 34.125
    #   unused GPU 0: 10 x .5 x 3 + 2 x .5 x 2.0625 + 12 x .5 x 2 = 15 + 2.0625 + 12 = 29.0625
    #   unused GPU 1: 10 x 3 + 2 x 2.0625 + 12 x .2 x 2 = 30 + 4.125 + 4.8 = 38.925 -> 67.9875
    #   actual: 10 x 6.40 + 14 x 4.40 = 64.00 + 61.60 = 125.60
    assert daily[("cls_a", date(2026, 11, 2))] == (
        D(48),
        D(12),
        D("34.125"),
        D("67.9875"),
        D("125.60"),
        D(12),
    )
    # B, no per-GPU series: GPUs per bucket = the nearest snapshot's gpu_count; 2 % < 5 % so
    # every GPU is idle. 11-01: 4 GPUs (T0), cost 6.30 x 6.00/6.30 = 6.00 -> 1.50/GPU.
    #   idle 96 h x 1.50 = 144.00; unused 96 x 0.98 x 1.50 = 141.12; actual 24 x 6.30
    assert daily[("cls_b", date(2026, 11, 1))] == (
        D(96),
        D(96),
        D("144.00"),
        D("141.12"),
        D("151.20"),
        D(0),
    )
    # B, 11-02: 00-11 4 GPUs (T0), 1.50/GPU: 48 GPU-h, 72.00 idle, 48 x .98 x 1.5 = 70.56;
    #   12-23 2 GPUs (T1: 3.30 x 3.00/3.30 = 3.00 -> 1.50/GPU): 24 GPU-h, 36.00, 35.28.
    #   actual 12 x 6.30 + 12 x 3.30 = 75.60 + 39.60 = 115.20
    assert daily[("cls_b", date(2026, 11, 2))] == (
        D(72),
        D(72),
        D("108.00"),
        D("105.84"),
        D("115.20"),
        D(0),
    )
    # C, 11-01: bills 07-23 (17 h) at 0.90; no point cost -> GPU price = 0.80 / 1 GPU.
    #   idle 07, 08, 17-23 = 9 h -> 7.20; unused 9 x .99 x .8 + 8 x .4 x .8 = 7.128 + 2.56
    assert daily[("cls_c", date(2026, 11, 1))] == (
        D(17),
        D(9),
        D("7.20"),
        D("9.688"),
        D("15.30"),
        D(0),
    )
    # C, 11-02: stopped 18-21 (not billed, 4 x 0.02 storage); billed 20 h: idle 00-08, 17, 22,
    #   23 = 12 h -> 9.60; unused 12 x .99 x .8 + 8 x .4 x .8 = 9.504 + 2.56 = 12.064;
    #   actual 20 x 0.90 + 4 x 0.02 = 18.08
    assert daily[("cls_c", date(2026, 11, 2))] == (
        D(20),
        D(12),
        D("9.60"),
        D("12.064"),
        D("18.08"),
        D(0),
    )
    assert len(daily) == 6


def test_daily_truth_averages_utilization_over_billed_gpu_hours() -> None:
    rows = {(r.cluster_id, r.day): r for r in _truth(PLAN_A, PLAN_B, PLAN_C).daily}
    # A 11-01: 12 h x (50 + 0) + 12 h x (50 + 80) = 2160 over 48 GPU-hours
    assert rows[("cls_a", date(2026, 11, 1))].avg_gpu_utilization == 45.0
    assert rows[("cls_a", date(2026, 11, 1))].per_gpu
    # B: the cluster-wide 2 % for every GPU, no per-GPU series
    assert rows[("cls_b", date(2026, 11, 2))].avg_gpu_utilization == 2.0
    assert not rows[("cls_b", date(2026, 11, 2))].per_gpu
    # C 11-02: billed 8 h x 60 + 12 h x 1 = 492 over 20 GPU-hours (stopped hours excluded)
    assert rows[("cls_c", date(2026, 11, 2))].avg_gpu_utilization == 24.6


def test_projection_truth_scores_only_elapsed_horizons() -> None:
    truth = _truth(PLAN_A, PLAN_B, PLAN_C)
    rows = {(p.cluster_id, p.projected_at, p.horizon): p for p in truth.projections}
    # only T0's daily horizon [11-02 00:00, 11-03 00:00) has elapsed by T1
    assert set(rows) == {(c, T0, "daily") for c in ("cls_a", "cls_b", "cls_c")}
    # A: 6.40 x 24 projected; the day cost 125.60 (the price drop)
    assert (
        rows[("cls_a", T0, "daily")].projected_cost,
        rows[("cls_a", T0, "daily")].actual_cost,
    ) == (D("153.60"), D("125.60"))
    # B: 6.30 x 24 projected; 115.20 after the resize
    assert (
        rows[("cls_b", T0, "daily")].projected_cost,
        rows[("cls_b", T0, "daily")].actual_cost,
    ) == (D("151.20"), D("115.20"))
    # C: 0.90 x 24 projected; 18.08 with 4 stopped hours
    assert (
        rows[("cls_c", T0, "daily")].projected_cost,
        rows[("cls_c", T0, "daily")].actual_cost,
    ) == (D("21.60"), D("18.08"))
    assert rows[("cls_c", T0, "daily")].currency == "EUR"
    assert all(r.covered_hours == 24 for r in rows.values())


def test_recommendation_truth_matches_hand_computed_savings() -> None:
    truth = _truth(PLAN_A, PLAN_B, PLAN_C)
    recs = {(r.cluster_id, r.kind): r.monthly_savings for r in truth.recommendations}
    # B idle in 48 of 48 billed hours (>= 24, >= 95 %): stop saves (3.30 - 0.10) x 720.
    # A: P95 of busy GPUs (1 x 24 h, 2 x 24 h) = 2 = gpu_count: no downsize; never all idle.
    # C: idle 21 of 37 billed hours; its longest idle run (11-01 17:00 - 11-02 08:59, 16 h)
    # holds 7 h of 11-01 and 9 h of 11-02: it counts on 11-02 only, 1 day < 5: no schedule.
    assert recs == {("cls_b", "stop_idle"): D("2304.000000")}


def test_schedule_truth_follows_the_configured_day_count() -> None:
    # one qualifying run of 16 h, counted on 1 day (11-02 holds 9 of its hours)
    assert not _truth(PLAN_C, thresholds=Thresholds(schedule_min_days=2)).recommendations
    truth = _truth(PLAN_C, thresholds=Thresholds(schedule_min_days=1))
    recs = {(r.cluster_id, r.kind): r.monthly_savings for r in truth.recommendations}
    # savings: 16 / 7 h a day x 30 x (0.90 - 0.02) = 422.40 / 7 = 60.342857...
    assert recs == {("cls_c", "schedule"): D("60.342857")}


def test_stopped_and_error_clusters_get_their_recommendations() -> None:
    stopped = ClusterPlan(
        id="cls_d",
        name="d",
        created_at=CREATED,
        status="stopped",
        storage_rate=D("0.07"),
        utilization=lambda t, g: (0.0, 0.0),
    )
    # error from creation: 1 GPU at 1.00 + 4 x 0.10 = 1.40/h, 0 % busy, 4 GB held
    error = ClusterPlan(
        id="cls_e",
        name="e",
        created_at=CREATED,
        status="error",
        gpu_price=D("1.00"),
        cpu_rate=D("0.10"),
        memory_rate=D("0.10"),
        storage_rate=D("0.10"),
        network_rate=D("0.10"),
        utilization=lambda t, g: (90.0, 4.0),
    )
    truth = _truth(stopped, error)
    recs = {(r.cluster_id, r.kind): r.monthly_savings for r in truth.recommendations}
    # stopped through the window: storage 0.07 x 720 = 50.40; error: (1.40 - 0.10) x 720 = 936
    assert recs == {
        ("cls_d", "delete_storage"): D("50.40"),
        ("cls_e", "investigate_error"): D("936.00"),
    }
    daily = _daily(truth)
    # stopped: no GPU-hours, 24 x 0.07 storage
    assert daily[("cls_d", date(2026, 11, 1))] == (D(0), D(0), D(0), D(0), D("1.68"), D(0))
    # error still bills: 24 idle GPU-hours at 1.40 x 1.00/1.40 = 1.00, all unused, memory held
    assert daily[("cls_e", date(2026, 11, 1))] == (
        D(24),
        D(24),
        D("24.00"),
        D("24.00"),
        D("33.60"),
        D(24),
    )


def test_late_revisions_count_as_the_newest_snapshot_saw_them() -> None:
    # 6 % is busy; its preliminary value (0.8 x 6 = 4.8 %) is idle. At T1 the buckets 22:00 and
    # 23:00 of 11-02 are still preliminary, and no later snapshot revises them.
    late = ClusterPlan(
        id="cls_l",
        name="l",
        created_at=CREATED,
        utilization=lambda t, g: (6.0, 2.0),
        late_data=True,
    )
    newest = _daily(_truth(late))[("cls_l", date(2026, 11, 2))]
    final = _daily(_truth(late, values="final"))[("cls_l", date(2026, 11, 2))]
    assert newest[1] == 2
    assert final[1] == 0
    # T0's preliminary 11-01 22:00-23:00 were revised by T1: final in both
    assert _daily(_truth(late))[("cls_l", date(2026, 11, 1))][1] == 0


def test_demo_fleet_truth_has_every_recommendation_kind_and_is_json() -> None:
    fleet = Fleet(FleetSpec(seed=7, clusters=40, start=START))
    nights = [START + timedelta(days=i) for i in range(14)]
    truth = ground_truth(fleet, nights)
    kinds = {r.kind for r in truth.recommendations}
    assert kinds == {"stop_idle", "downsize", "schedule", "delete_storage", "investigate_error"}
    # every projection scored has elapsed; weekly ones exist, monthly cannot yet
    assert {p.horizon for p in truth.projections} == {"daily", "weekly"}
    assert all(
        p.projected_at + timedelta(hours=p.horizon_hours) <= nights[-1] for p in truth.projections
    )
    # the fleet's cost per day equals the sum of its clusters' bucket costs
    day = date(2026, 11, 10)
    expected = sum(
        (
            fleet.series(cid, h, h + 24).cost
            for cid in fleet.cluster_ids()
            for h in [int(datetime(2026, 11, 10, tzinfo=UTC).timestamp()) // 3600]
        ),
        [],
    )
    usd_eur = {(r["day"], r["currency"]): r["cost"] for r in truth.fleet_daily()}
    assert usd_eur[(day, "USD")] + usd_eur[(day, "EUR")] == sum(expected, D(0))
    # the demo shows recommendations resolved by each of DESIGN's three actions
    resolved = {h.cluster_id for h in truth.recommendation_history if h.status == "resolved"}
    plans = [fleet.plan(c) for c in resolved]
    assert any(e.kind == "stop" for p in plans for e in p.events)
    assert any(e.kind == "resize" for p in plans for e in p.events)
    assert any(p.deleted_at is not None for p in plans)
    doc = json.loads(json.dumps(truth.to_dict()))
    assert doc["recommendations"][0]["monthly_savings"] == str(
        truth.recommendations[0].monthly_savings
    )


def test_truth_needs_a_snapshot_time() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ground_truth(Fleet(FleetSpec(plans=[PLAN_A], start=T0)), [])


def test_projection_from_an_off_hour_snapshot_counts_from_its_hour() -> None:
    fleet = Fleet(FleetSpec(plans=[PLAN_A], start=T0))
    late = [T0 + timedelta(minutes=25), T1 + timedelta(minutes=25)]
    (row,) = ground_truth(fleet, late).projections
    # projected at 00:25 at 6.40/h; the horizon's buckets are 11-02 00:00-23:00 (the hours
    # total_cost_to_date advances by), all seen by the 11-03 00:25 snapshot: 125.60 as above
    assert (row.projected_at, row.horizon) == (late[0], "daily")
    assert (row.projected_cost, row.actual_cost, row.covered_hours) == (
        D("153.60"),
        D("125.60"),
        24,
    )


def test_recommendation_history_resolves_on_stop_and_closes_on_use() -> None:
    noon = datetime(2026, 11, 2, 12, tzinfo=UTC)
    # 2 GPUs at 1.00 + 4 x 0.10 = 2.40/h, idle (1 %) from 10-30; stopped at 11-02 12:00
    stopped = ClusterPlan(
        id="cls_f",
        name="f",
        created_at=datetime(2026, 10, 30, tzinfo=UTC),
        gpu_count=2,
        gpu_price=D("1.00"),
        cpu_rate=D("0.10"),
        memory_rate=D("0.10"),
        storage_rate=D("0.10"),
        network_rate=D("0.10"),
        utilization=lambda t, g: (1.0, 3.0),
        events=(ClusterEvent(noon, "stop"),),
    )
    # the same, never stopped, but busy (90 %) from 11-02 12:00
    used = dataclasses.replace(
        stopped,
        id="cls_g",
        events=(),
        utilization=lambda t, g: (90.0, 30.0) if t >= noon else (1.0, 3.0),
    )
    truth = _truth(stopped, used)
    history = {(h.cluster_id, h.kind): h for h in truth.recommendation_history}
    assert set(history) == {(c, k) for c in ("cls_f", "cls_g") for k in ("stop_idle", "downsize")}
    # at T0 both idle in 72 of 72 billed hours: stop_idle (2.40 - 0.10) x 720 = 1656, and
    # downsize to max(1, 0) = 1 GPU: 1 x 1.00 x 720 = 720; both gone at T1
    f_stop, f_down = history[("cls_f", "stop_idle")], history[("cls_f", "downsize")]
    assert (f_stop.monthly_savings, f_down.monthly_savings) == (D("1656"), D("720"))
    assert (f_stop.first_seen_at, f_stop.last_seen_at) == (T0, T0)
    # stopped since: resolved, realized = (2.40 - 0.10 storage now) x 720 for each kind
    assert (f_stop.status, f_stop.realized_monthly_savings) == ("resolved", D("1656"))
    assert (f_down.status, f_down.realized_monthly_savings) == ("resolved", D("1656"))
    # busy since, still running with 2 GPUs: closed, nothing realized
    g_stop = history[("cls_g", "stop_idle")]
    assert (g_stop.status, g_stop.realized_monthly_savings) == ("closed", None)
    assert truth.recommendations == []


def _schedule_plan(cid: str, idle) -> ClusterPlan:
    # 1 x L4 at 0.80 + 0.10 other = 0.90/h (storage 0.02/h); idle(t) says when it is idle.
    return ClusterPlan(
        id=cid,
        name=cid,
        created_at=datetime(2026, 10, 20, 0, tzinfo=UTC),
        gpu_type="L4",
        gpu_count=1,
        gpu_price=D("0.80"),
        cpu_rate=D("0.04"),
        memory_rate=D("0.02"),
        storage_rate=D("0.02"),
        network_rate=D("0.02"),
        utilization=lambda t, g: (1.0, 0.5) if idle(t) else (70.0, 10.0),
    )


def _schedule_truth(*plans: ClusterPlan) -> dict[str, Decimal]:
    # The window of the snapshot at 11-09 00:00 is 11-02 00:00 .. 11-08 23:59 (Mon .. Sun).
    at = datetime(2026, 11, 9, 0, tzinfo=UTC)
    fleet = Fleet(FleetSpec(plans=list(plans), start=at))
    truth = ground_truth(fleet, [at])
    return {r.cluster_id: r.monthly_savings for r in truth.recommendations if r.kind == "schedule"}


def test_schedule_counts_a_night_across_midnight_once_not_on_both_dates() -> None:
    nightly = _schedule_plan("nightly", lambda t: t.hour >= 18 or t.hour < 9)  # 15 h nights
    three_nights = _schedule_plan(  # idle 20:00-08:00 on Mon, Wed and Fri nights only
        "three_nights",
        lambda t: (
            (t.weekday() in (0, 2, 4) and t.hour >= 20) or (t.weekday() in (1, 3, 5) and t.hour < 8)
        ),
    )
    one_stretch = _schedule_plan(  # one 100 h idle stretch from Mon 00:00, busy otherwise
        "one_stretch",
        lambda t: datetime(2026, 11, 2, tzinfo=UTC) <= t < datetime(2026, 11, 6, 4, tzinfo=UTC),
    )
    recs = _schedule_truth(nightly, three_nights, one_stretch)
    # nightly: the window opens idle (Mon 00:00-08:59, 9 h: counts on Mon), then six 15-h nights
    # (6 h before midnight, 9 h after: each counts on the later day, Tue..Sun), and the last
    # night is cut by the window end (Sun 18:00-23:59, 6 h: not a run). 7 days >= 5.
    # Hours: 9 + 6 x 15 = 99; 99 / 7 x 30 x (0.90 - 0.02) = 373.371428...
    assert recs["nightly"] == D("373.371429")
    # three_nights: 3 runs of 12 h (4 h + 8 h: counted on Tue, Thu, Sat): 3 days < 5.
    # one_stretch: 100 h fill Mon..Thu (24 h each) and 4 h of Fri: 4 days < 5.
    assert set(recs) == {"nightly"}
