"""The monthly (720 h) horizon and the per-cluster accuracy mart, end to end.

A generated 8-cluster seed-11 fleet is snapshotted on 32 nights over real HTTP (03:00 UTC each
night, as cron would), built once with a full refresh, and compared with the simulator's ground
truth: every row of `marts.projection_drift` (monthly ones included: only the first two nights'
720 h horizons have elapsed by the 32nd night) against `ground_truth(...).projections`, and every
row of `marts.cluster_drift_accuracy` against MAPE and bias computed here from those truth
projections, following DESIGN "Definitions": drift_pct = (actual - projected) / projected x 100,
MAPE = mean |drift_pct|, bias = mean drift_pct, over the cluster's last 14 scored days (UTC days
of projected_at; docs/marts.md: per cluster, horizon and currency). A scored day is a day with
a scored projection (horizon elapsed and covered), whether or not its projection is 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipeline.config import Thresholds
from pipeline.models import build_models
from pipeline.simulator import Fleet, FleetSpec, Simulator
from pipeline.simulator.fleet import ClusterEvent, ClusterPlan
from pipeline.simulator.truth import GroundTruth, ProjectionTruth, ground_truth
from pipeline.snapshot import run_snapshot
from tests.snapshot_helpers import API_KEY, START, make_config

NIGHTS = 32
CENT = Decimal("0.01")
MAPE_DAYS = Thresholds().mape_days
RESTARTED_AT = START + timedelta(days=20, hours=5)
REPRICED_AT = START + timedelta(days=25, hours=10)
DELETED_AT = START + timedelta(days=29, hours=7)
# the mart averages drift_pct rounded to 6 decimals; the truth's is exact
PCT_TOLERANCE = 1e-5


def _rows(db: Path, sql: str) -> list[dict[str, Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()


def _fleet() -> Fleet:
    """The seed-11 clusters with their events spread over the month, plus one cluster whose
    projections go from zero (stopped, no storage rate) to too low (started, then a price rise)
    inside the last 14 days, so that the accuracy mart meets drift of both signs and a
    projection of 0 (drift_pct undefined)."""
    generated = Fleet(FleetSpec(seed=11, clusters=8, start=START, days=NIGHTS))
    plans = [generated.plan(cid) for cid in generated.cluster_ids()]
    restarted = ClusterPlan(
        id="cls_month_restart",
        name="restarted-in-month",
        created_at=START - timedelta(days=40),
        status="stopped",
        gpu_count=2,
        gpu_price=Decimal("2.0000"),
        storage_rate=Decimal("0.0000"),
        events=(
            ClusterEvent(RESTARTED_AT, "start"),
            ClusterEvent(REPRICED_AT, "price", gpu_price=Decimal("2.6")),
        ),
    )
    # deleted 7 h after the 30th night: its last 24 h are never seen, so the first night's month
    # is 696 of 720 h covered (scored, cause `deleted`) and the second night's 671 h (not scored)
    deleted = ClusterPlan(
        id="cls_month_deleted",
        name="deleted-in-month",
        created_at=START - timedelta(days=3),
        gpu_count=1,
        deleted_at=DELETED_AT,
    )
    return Fleet(FleetSpec(seed=11, start=START, plans=[*plans, restarted, deleted]))


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """32 nightly snapshots over HTTP, one full build, and the truth."""
    fleet = _fleet()
    db = tmp_path_factory.mktemp("monthly") / "gpucost.duckdb"
    times: list[datetime] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPUCOST_API_KEY", API_KEY)
        with Simulator(fleet, api_key=API_KEY).run_in_thread(port=0) as url:
            config = make_config(db, url)
            for night in range(NIGHTS):
                fleet.set_clock(START + timedelta(days=night))
                assert run_snapshot(config).status == "complete"
                times.append(fleet.now)
        build_models(config, full_refresh=True)
    yield {"db": db, "truth": ground_truth(fleet, times), "times": times}


def _drift_pct(p: ProjectionTruth) -> Decimal | None:
    if p.projected_cost == 0:
        return None  # DESIGN's ratio is undefined for a projection of 0
    return (p.actual_cost - p.projected_cost) / p.projected_cost * 100


def _is_flagged(p: ProjectionTruth) -> bool:
    """DESIGN: |drift_pct| >= 15 and |actual - projected| >= 1 currency unit; a projection of 0
    has an unbounded drift_pct, so only the amount decides."""
    pct = _drift_pct(p)
    return (pct is None or abs(pct) >= 15) and abs(p.actual_cost - p.projected_cost) >= 1


def _accuracy(truth: GroundTruth) -> dict[tuple[str, str], dict[str, Any]]:
    """(cluster, horizon) -> DESIGN's accuracy over the last 14 scored days.

    A scored projection is one whose horizon has elapsed and is covered (every one the truth
    lists, as in `projection_drift`); its day is the UTC date of projected_at. MAPE and bias
    average the projections of those days that have a drift_pct; `flagged` counts all of them.
    `zero_projections` says whether a projection of 0 (no drift_pct) falls in those days.
    """
    by_key: dict[tuple[str, str], list[ProjectionTruth]] = defaultdict(list)
    for p in truth.projections:
        by_key[(p.cluster_id, p.horizon)].append(p)
    out = {}
    for key, scored in by_key.items():
        days = sorted({p.projected_at.date() for p in scored})[-MAPE_DAYS:]
        kept = [p for p in scored if p.projected_at.date() in days]
        pcts = [pct for pct in map(_drift_pct, kept) if pct is not None]
        out[key] = {
            "scored_days": len(days),
            "first_day": days[0],
            "last_day": days[-1],
            "mape_pct": float(sum(map(abs, pcts)) / len(pcts)) if pcts else None,
            "bias_pct": float(sum(pcts) / len(pcts)) if pcts else None,
            "flagged": sum(map(_is_flagged, kept)),
            "zero_projections": len(pcts) < len(kept),
        }
    return out


def _accuracy_rows(db: Path) -> dict[tuple[str, str], dict[str, Any]]:
    rows = _rows(db, "select * from marts.cluster_drift_accuracy")
    return {(r["cluster_id"], r["horizon"]): r for r in rows}


def _assert_accuracy(mine: dict[str, Any], e: dict[str, Any], key: tuple[str, str]) -> None:
    assert mine["scored_days"] == e["scored_days"], key
    assert (mine["first_day"], mine["last_day"]) == (e["first_day"], e["last_day"]), key
    assert mine["mape_pct"] == pytest.approx(e["mape_pct"], abs=PCT_TOLERANCE), key
    assert mine["bias_pct"] == pytest.approx(e["bias_pct"], abs=PCT_TOLERANCE), key
    assert mine["flagged"] == e["flagged"], key


def test_every_projection_of_every_horizon_is_scored_as_the_truth_scores_it(month):
    mine = {
        (r["cluster_id"], r["projected_at"], r["horizon"]): r
        for r in _rows(month["db"], "select * from marts.projection_drift")
    }
    truth = {(p.cluster_id, p.projected_at, p.horizon): p for p in month["truth"].projections}
    assert set(mine) == set(truth)
    for key, p in truth.items():
        m = mine[key]
        assert m["projected_cost"] == p.projected_cost, key
        assert abs(m["actual_cost"] - p.actual_cost) <= CENT, key
        assert m["currency"] == p.currency, key
        pct = _drift_pct(p)
        if pct is None:
            assert m["drift_pct"] is None, key
        else:
            assert m["drift_pct"] == pytest.approx(float(pct), abs=PCT_TOLERANCE), key
        assert m["is_flagged"] == _is_flagged(p), key


def test_monthly_horizons_are_scored_once_720_hours_have_elapsed(month):
    times = month["times"]
    monthly = [p for p in month["truth"].projections if p.horizon == "monthly"]
    # only the snapshots at least 30 days before the last one have an elapsed month
    assert {p.projected_at for p in monthly} == {times[0], times[1]}
    assert {p.horizon_hours for p in monthly} == {720}
    rows = _rows(month["db"], "select * from marts.projection_drift where horizon = 'monthly'")
    assert {(r["cluster_id"], r["projected_at"]) for r in rows} == {
        (p.cluster_id, p.projected_at) for p in monthly
    }
    assert all(r["projected_at"] + timedelta(hours=720) <= times[-1] for r in rows)
    # a month spans the fleet's events: some monthly actual differs from rate x 720
    assert any(abs(p.actual_cost - p.projected_cost) >= 1 for p in monthly)


def test_cluster_drift_accuracy_equals_mape_and_bias_over_the_last_14_scored_days(month):
    expected = _accuracy(month["truth"])
    mine = _accuracy_rows(month["db"])
    assert set(mine) == set(expected)
    assert {h for _, h in expected} == {"daily", "weekly", "monthly"}
    # projections of 0 (the restarted cluster) are scored days too: its monthly projections
    # were all 0, scored and flagged, so its row has scored days but no MAPE
    with_zero = {key for key, e in expected.items() if e["zero_projections"]}
    assert with_zero == {("cls_month_restart", h) for h in ("daily", "weekly", "monthly")}
    for key, e in expected.items():
        _assert_accuracy(mine[key], e, key)
    # 31 daily scored days are cut to the last 14; errors of both signs exist
    assert max(e["scored_days"] for e in expected.values()) == MAPE_DAYS
    assert any(e["bias_pct"] > 0.5 for e in expected.values() if e["bias_pct"] is not None)
    assert any(e["bias_pct"] < -0.5 for e in expected.values() if e["bias_pct"] is not None)


def test_hand_made_clusters_get_the_cause_of_their_one_event(month):
    causes = {
        (r["cluster_id"], r["projected_at"], r["horizon"]): r
        for r in _rows(month["db"], "select * from marts.projection_drift")
    }
    restarted = causes[("cls_month_restart", START + timedelta(days=20), "daily")]
    assert restarted["cause"] == "started"
    assert restarted["projected_cost"] == 0 and restarted["drift_pct"] is None
    assert restarted["is_flagged"]  # 19 h of 4.20 accrued against a projection of 0
    assert restarted["actual_cost"] == 19 * Decimal("4.20")
    repriced = causes[("cls_month_restart", START + timedelta(days=25), "daily")]
    assert repriced["cause"] == "rate_change"
    # 10 h at 4.20 and 14 h at 5.40 (2 GPUs at 2.60 + 0.20) against 24 h at 4.20
    assert repriced["actual_cost"] == 10 * Decimal("4.20") + 14 * Decimal("5.40")
    month_of_deleted = causes[("cls_month_deleted", START, "monthly")]
    assert month_of_deleted["cause"] == "deleted"
    assert month_of_deleted["actual_cost"] == 696 * Decimal("2.25")
    assert ("cls_month_deleted", START + timedelta(days=1), "monthly") not in causes
