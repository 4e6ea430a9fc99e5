"""The simulator's fleet: determinism, the contract's document shape, archetypes and events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from pipeline.simulator.fleet import (
    CANARY,
    LATE_HOURS,
    ClusterEvent,
    ClusterPlan,
    Fleet,
    FleetSpec,
)
from tests.shared import api_example

from .conftest import START

EXAMPLE = api_example("cluster_detail.json")


def _keys(obj: object, prefix: str = "") -> set[str]:
    """Every key path of a JSON document (list items merged under `[]`)."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.add(prefix + k)
            out |= _keys(v, prefix + k + ".")
    elif isinstance(obj, list):
        for item in obj:
            out |= _keys(item, prefix + "[].")
    return out


def _points_by_ts(doc: dict) -> dict[str, dict]:
    return {p["timestamp"]: p for p in doc["metrics"]["historical"]["data_points"]}


def test_same_spec_gives_identical_documents(fleet40: Fleet) -> None:
    other = Fleet(FleetSpec(seed=7, clusters=40, start=START))
    assert other.cluster_ids() == fleet40.cluster_ids()
    for cid in fleet40.cluster_ids():
        assert other.detail(cid, include_logs=True) == fleet40.detail(cid, include_logs=True)
    assert other.list_summaries() == fleet40.list_summaries()


def test_other_seed_gives_another_fleet(fleet40: Fleet) -> None:
    other = Fleet(FleetSpec(seed=8, clusters=40, start=START))
    assert set(other.cluster_ids()).isdisjoint(fleet40.cluster_ids())


def test_detail_has_every_key_of_the_contract_example(fleet40: Fleet) -> None:
    example = json.loads(EXAMPLE.read_text())["data"]
    # variable names are the cluster's own; every other key is the contract's
    wanted = {k for k in _keys(example) if not k.startswith("environment.variables.")}
    # the example's first cluster is running, with per-GPU series and alerts
    running = [
        c
        for c in fleet40.cluster_ids()
        if fleet40.exists(c)
        and fleet40.plan(c).per_gpu_series
        and fleet40.plan(c).point_cost
        and fleet40.plan(c).archetype == "forgotten"
    ]
    doc = fleet40.detail(running[0])
    assert doc is not None
    missing = wanted - _keys(doc)
    assert not missing
    json.dumps(doc)  # JSON-ready: no Decimal, no datetime


def test_summary_has_every_key_of_the_contract_list_example(fleet40: Fleet) -> None:
    example = json.loads(api_example("cluster_list.json").read_text())
    wanted = set(example["data"]["clusters"][0])
    for summary in fleet40.list_summaries():
        assert set(summary) == wanted


def test_seven_day_window_is_168_hourly_buckets_before_now(fleet40: Fleet) -> None:
    fleet40.set_clock(START + timedelta(minutes=25))
    old = [
        c
        for c in fleet40.cluster_ids()
        if fleet40.exists(c) and fleet40.plan(c).created_at < START - timedelta(days=8)
    ]
    doc = fleet40.detail(old[0])
    assert doc is not None
    points = doc["metrics"]["historical"]["data_points"]
    assert doc["metrics"]["interval_seconds"] == 3600
    assert len(points) == 168
    assert points[0]["timestamp"] == "2026-11-06T03:00:00Z"
    assert points[-1]["timestamp"] == "2026-11-13T02:00:00Z"
    assert doc["metrics"]["current"]["timestamp"] == "2026-11-13T03:25:00Z"


@pytest.mark.parametrize(
    ("window", "interval", "count"), [("24h", 900, 96), ("6h", 300, 72), ("1h", 60, 60)]
)
def test_finer_windows_have_finer_buckets(
    fleet40: Fleet, window: str, interval: int, count: int
) -> None:
    cid = next(
        c
        for c in fleet40.cluster_ids()
        if fleet40.plan(c).archetype == "training"
        and fleet40.exists(c)
        and fleet40.plan(c).created_at < START - timedelta(days=2)
    )
    doc = fleet40.detail(cid, window=window)
    assert doc is not None
    metrics = doc["metrics"]
    assert metrics["interval_seconds"] == interval
    assert len(metrics["historical"]["data_points"]) == count
    total = sum(Decimal(p["cost"]) for p in metrics["historical"]["data_points"])
    assert Decimal(doc["cost"]["cost_breakdown"]["window_cost"]) == total


def test_same_bucket_is_identical_on_later_nights_except_late_revisions(fleet40: Fleet) -> None:
    first = {c: fleet40.detail(c) for c in fleet40.cluster_ids() if fleet40.exists(c)}
    fleet40.advance(timedelta(days=1))
    revised = 0
    compared = 0
    for cid, doc in first.items():
        later = fleet40.detail(cid)
        if later is None or doc is None:
            continue
        before, after = _points_by_ts(doc), _points_by_ts(later)
        for ts in set(before) & set(after):
            compared += 1
            age = START - datetime.fromisoformat(ts.replace("Z", "+00:00"))
            if before[ts] != after[ts]:
                # only the declared preliminary buckets of late-data clusters may change
                assert fleet40.plan(cid).late_data, (cid, ts)
                assert age <= timedelta(hours=LATE_HOURS), (cid, ts)
                assert before[ts]["cost"] == after[ts]["cost"]
                revised += 1
    assert compared > 3000
    assert revised > 0


def test_forty_cluster_fleet_holds_every_archetype_and_event(fleet40: Fleet) -> None:
    plans = [fleet40.plan(c) for c in fleet40.cluster_ids()]
    archetypes = {p.archetype for p in plans}
    assert archetypes == {
        "training",
        "inference",
        "notebook",
        "forgotten",
        "partial",
        "stopped",
        "error",
    }
    kinds = {e.kind for p in plans for e in p.events}
    assert {"price", "resize", "stop", "start", "error"} <= kinds
    end = START + timedelta(days=14)
    assert any(p.deleted_at is not None and START < p.deleted_at < end for p in plans)
    assert any(START < p.created_at < end for p in plans)
    assert any(p.created_at < START - timedelta(days=20) for p in plans)
    assert {p.currency for p in plans} == {"USD", "EUR"}
    assert sum(p.currency == "EUR" for p in plans) <= 5
    assert any(not p.per_gpu_series for p in plans)
    assert any(not p.point_cost for p in plans)
    assert any(p.late_data for p in plans)
    assert any(e.kind == "resize" and e.gpu_count == 4 for p in plans for e in p.events)


def test_hostile_content_is_planted(fleet40: Fleet) -> None:
    names = {fleet40.plan(c).name for c in fleet40.cluster_ids()}
    for hostile in (
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        '=HYPERLINK("http://evil.example","x")',
        "+1+1",
        "-2+3",
        "@SUM(A1)",
    ):
        assert hostile in names
    found: set[str] = set()
    for cid in fleet40.cluster_ids():
        fleet40.set_clock(max(START, fleet40.plan(cid).created_at))
        doc = fleet40.detail(cid, include_logs=True)
        assert doc is not None
        ssh = doc["network"]["ssh_connection"]
        if any(CANARY in v for v in doc["environment"]["variables"].values()):
            found.add("env")
        if CANARY in ssh.get("password", "") and CANARY in ssh.get("private_key", ""):
            found.add("ssh")
        if CANARY in ssh["connection_string"] or any(
            CANARY in m["url"] for m in doc["network"]["port_mappings"]
        ):
            found.add("url")
        if any(CANARY in line["message"] for line in doc["logs"]):
            found.add("logs")
    assert found == {"env", "ssh", "url", "logs"}


def _hand_plan(**kw: object) -> ClusterPlan:
    base: dict[str, object] = dict(
        id="cls_hand",
        name="hand",
        created_at=datetime(2026, 11, 1, 0, tzinfo=UTC),
        gpu_type="H100",
        gpu_count=2,
        gpu_price=Decimal("3.00"),
        cpu_rate=Decimal("0.20"),
        memory_rate=Decimal("0.10"),
        storage_rate=Decimal("0.05"),
        network_rate=Decimal("0.05"),
        utilization=lambda t, g: (50.0 if g == 0 else 0.0, 10.0),
    )
    base.update(kw)
    return ClusterPlan(**base)  # type: ignore[arg-type]


def test_bucket_cost_follows_status_and_events() -> None:
    plan = _hand_plan(
        events=(
            ClusterEvent(datetime(2026, 11, 2, 10, tzinfo=UTC), "price", gpu_price=Decimal("2.00")),
            ClusterEvent(datetime(2026, 11, 3, 0, tzinfo=UTC), "stop"),
            ClusterEvent(datetime(2026, 11, 3, 6, tzinfo=UTC), "start"),
            ClusterEvent(datetime(2026, 11, 4, 0, tzinfo=UTC), "resize", gpu_count=1),
        )
    )
    fleet = Fleet(FleetSpec(plans=[plan], start=datetime(2026, 11, 5, 0, tzinfo=UTC)))
    doc = fleet.detail("cls_hand")
    assert doc is not None
    pts = _points_by_ts(doc)
    # 2 x 3.00 + 0.20 + 0.10 + 0.05 + 0.05 = 6.40
    assert pts["2026-11-02T09:00:00Z"]["cost"] == "6.4000"
    # 2 x 2.00 + 0.40 = 4.40
    assert pts["2026-11-02T10:00:00Z"]["cost"] == "4.4000"
    # stopped: storage only, 0 utilization
    assert pts["2026-11-03T05:00:00Z"]["cost"] == "0.0500"
    assert pts["2026-11-03T05:00:00Z"]["status"] == "stopped"
    assert pts["2026-11-03T05:00:00Z"]["gpu_utilization"] == 0.0
    assert pts["2026-11-03T06:00:00Z"]["cost"] == "4.4000"
    # one GPU of 2.00 + 0.40 = 2.40, and only one GPU reported
    assert pts["2026-11-04T00:00:00Z"]["cost"] == "2.4000"
    assert len(pts["2026-11-04T00:00:00Z"]["gpus"]) == 1
    assert pts["2026-11-02T09:00:00Z"]["gpu_utilization"] == 25.0  # (50 + 0) / 2
    cost = doc["cost"]
    assert cost["current_hourly_rate"] == "2.4000"
    assert cost["cost_breakdown"]["gpu_cost_per_hour"] == "2.0000"
    assert cost["cost_projections"]["monthly"] == "1728.0000"  # 2.40 x 720
    # since creation: 34 h x 6.40 + 14 h x 4.40 + 6 h x 0.05 + 18 h x 4.40 + 24 h x 2.40
    # = 217.60 + 61.60 + 0.30 + 79.20 + 57.60
    assert cost["cost_breakdown"]["total_cost_to_date"] == "416.3000"
    # window 2026-10-29 00:00 .. 11-05 00:00 starts before creation: the same sum
    assert cost["cost_breakdown"]["window_cost"] == "416.3000"
    assert len(pts) == 96


def test_deleted_cluster_is_gone_from_list_and_details() -> None:
    plan = _hand_plan(deleted_at=datetime(2026, 11, 2, 0, tzinfo=UTC))
    fleet = Fleet(FleetSpec(plans=[plan], start=datetime(2026, 11, 1, 12, tzinfo=UTC)))
    assert [s["id"] for s in fleet.list_summaries()] == ["cls_hand"]
    fleet.advance(timedelta(hours=12))
    assert fleet.list_summaries() == []
    assert fleet.detail("cls_hand") is None


def test_stopped_cluster_bills_storage_only_now() -> None:
    plan = _hand_plan(events=(ClusterEvent(datetime(2026, 11, 1, 5, tzinfo=UTC), "stop"),))
    fleet = Fleet(FleetSpec(plans=[plan], start=datetime(2026, 11, 1, 12, tzinfo=UTC)))
    doc = fleet.detail("cls_hand")
    assert doc is not None
    breakdown = doc["cost"]["cost_breakdown"]
    assert breakdown["gpu_cost_per_hour"] == "0.0000"
    assert breakdown["cpu_cost_per_hour"] == "0.0000"
    assert breakdown["storage_cost_per_hour"] == "0.0500"
    assert doc["cost"]["current_hourly_rate"] == "0.0500"
    assert doc["status"] == "stopped"
    # 5 h x 6.40 + 7 h x 0.05
    assert breakdown["total_cost_to_date"] == "32.3500"


def test_utilization_table_drives_the_series_hour_by_hour() -> None:
    # created 10:20 -> first bucket 11:00 reads row 0; rows past the table read (0, 0)
    table = [[(12.0, 3.0), (0.0, 7.5)], [(90.0, 70.0), (40.0, 20.0)]]
    plan = _hand_plan(
        created_at=datetime(2026, 11, 1, 10, 20, tzinfo=UTC),
        utilization=table,
        events=(
            ClusterEvent(datetime(2026, 11, 1, 12, tzinfo=UTC), "price", gpu_price=Decimal("2.50")),
        ),
    )
    fleet = Fleet(FleetSpec(plans=[plan], start=datetime(2026, 11, 1, 14, 5, tzinfo=UTC)))
    doc = fleet.detail("cls_hand")
    assert doc is not None
    pts = doc["metrics"]["historical"]["data_points"]
    assert [p["timestamp"] for p in pts] == [
        "2026-11-01T11:00:00Z",
        "2026-11-01T12:00:00Z",
        "2026-11-01T13:00:00Z",
    ]
    assert [(g["utilization"], g["memory_used_gb"]) for g in pts[0]["gpus"]] == [
        (12.0, 3.0),
        (0.0, 7.5),
    ]
    assert pts[1]["gpu_utilization"] == 65.0  # (90 + 40) / 2
    assert [g["utilization"] for g in pts[2]["gpus"]] == [0.0, 0.0]
    # a price change is not a status change
    assert doc["status_details"]["last_status_change"] == "2026-11-01T10:20:00Z"
    # 11:00 at 6.40, then 2 x 2.50 + 0.40 = 5.40 for 12:00 and 13:00
    assert doc["cost"]["cost_breakdown"]["total_cost_to_date"] == "17.2000"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "paused"}, "status 'paused'"),
        ({"gpu_count": 0}, "gpu_count"),
        ({"deleted_at": datetime(2026, 10, 1, tzinfo=UTC)}, "deleted_at"),
        ({"currency": "usd"}, "ISO 4217"),
    ],
)
def test_impossible_plan_is_refused_with_its_reason(change: dict, message: str) -> None:
    fleet = Fleet(FleetSpec(plans=[_hand_plan(**change)]))
    with pytest.raises(ValueError, match=message):
        fleet.cluster_ids()


# Public on-demand prices per GPU-hour in USD, as the simulator issue states them (written here
# by hand, not read from the simulator's own table).
_PUBLIC_USD = {
    "H100": (2.5, 7.0),
    "A100": (1.3, 4.0),
    "L40S": (1.0, 2.0),
    "L4": (0.0, 1.0),
    "T4": (0.0, 1.0),
}


def test_generated_fleet_has_realistic_proportions_and_public_prices() -> None:
    fleet = Fleet(FleetSpec(seed=3, clusters=400))
    plans = [fleet.plan(cid) for cid in fleet.cluster_ids()]
    share = {
        a: sum(p.archetype == a for p in plans) / len(plans) for a in {p.archetype for p in plans}
    }
    # Most clusters do work (training, inference, notebooks); waste is a minority, as in a
    # real estate, but every kind of it is there.
    assert share["training"] + share["inference"] + share["notebook"] >= 0.6
    assert 0.05 <= share["forgotten"] <= 0.2
    assert 0.05 <= share["partial"] <= 0.15
    assert 0.0 < share["stopped"] <= 0.1 and 0.0 < share["error"] <= 0.1
    for plan in plans:
        lo, hi = _PUBLIC_USD[plan.gpu_type]
        usd = float(plan.gpu_price) / (0.93 if plan.currency == "EUR" else 1.0)
        assert lo - 0.01 <= usd <= hi + 0.01, (plan.id, plan.gpu_type, plan.gpu_price)
    assert {p.currency for p in plans} == {"USD", "EUR"}
    assert sum(p.currency == "EUR" for p in plans) / len(plans) < 0.2
