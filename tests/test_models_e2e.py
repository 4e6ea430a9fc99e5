"""The marts end to end against the simulator's ground truth: fourteen simulated nights of a
40-cluster seed-7 fleet, snapshotted over real HTTP, built as cron would (incrementally), then
compared with `ground_truth` (computed from the fleet's generative series, not from JSON).
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import duckdb
import pytest

from pipeline.config import Config, StoreSettings, Thresholds
from pipeline.models import build_models, build_on_connection
from pipeline.simulator import Fleet, FleetSpec, Simulator
from pipeline.simulator.truth import ground_truth
from pipeline.snapshot import run_snapshot
from tests.snapshot_helpers import API_KEY, START, make_config

NIGHTS = 14
CENT = Decimal("0.01")
HALF_PERCENT = Decimal("0.005")
MARTS = (
    "idle_waste_daily",
    "idle_waste_gpu_daily",
    "fleet_daily",
    "projection_drift",
    "recommendations",
    "clusters",
    "cluster_drift_accuracy",
)


def _marts(path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {m: con.execute(f"select * from marts.{m} order by all").fetchall() for m in MARTS}
    finally:
        con.close()


def _every_mart(path) -> dict[str, list[tuple]]:
    """Every mart (tables and views, not the build's own ledger), every row."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = [
            row[0]
            for row in con.execute(
                "select table_name from information_schema.tables "
                "where table_schema = 'marts' and not starts_with(table_name, 'build_') "
                "order by table_name"
            ).fetchall()
        ]
        return {n: con.execute(f'select * from marts."{n}" order by all').fetchall() for n in names}
    finally:
        con.close()


def _simulate(db, clusters: int) -> dict:
    """The database after 14 nights (built incrementally after every night from the 7th on, as
    cron does), and the truth."""
    fleet = Fleet(FleetSpec(seed=7, clusters=clusters, start=START))
    times = []
    builds = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPUCOST_API_KEY", API_KEY)
        with Simulator(fleet, api_key=API_KEY).run_in_thread(port=0) as url:
            config = make_config(db, url)
            for night in range(NIGHTS):
                fleet.set_clock(START + timedelta(days=night))
                assert run_snapshot(config).status == "complete"
                times.append(fleet.now)
                if night + 1 >= 7:
                    builds.append(build_models(config))
    incremental = _marts(db)
    incremental_every_mart = _every_mart(db)
    full = build_models(Config(store=StoreSettings(db=str(db))), full_refresh=True)
    truth = ground_truth(fleet, times)
    return {
        "db": db,
        "truth": truth,
        "builds": builds,
        "incremental": incremental,
        "incremental_every_mart": incremental_every_mart,
        "full": full,
        "full_marts": _marts(db),
        "full_every_mart": _every_mart(db),
    }


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """The demo's fleet: 40 clusters, seed 7, every archetype and event."""
    return _simulate(tmp_path_factory.mktemp("e2e") / "gpucost.duckdb", 40)


def _rows(e2e, sql):
    con = duckdb.connect(str(e2e["db"]), read_only=True)
    try:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()


def _close(mine: Decimal, truth: Decimal, relative: Decimal) -> bool:
    return abs(mine - truth) <= max(CENT, abs(truth) * relative)


def test_idle_gpu_hours_equal_the_truth_exactly(e2e):
    rows = _rows(e2e, "select * from marts.idle_waste_daily")
    mine = {(r["cluster_id"], r["day"]): r for r in rows}
    truth = {(t.cluster_id, t.day): t for t in e2e["truth"].daily}
    assert set(mine) == set(truth)
    for key, t in truth.items():
        m = mine[key]
        assert m["currency"] == t.currency, key
        assert m["gpu_hours"] == t.gpu_hours, key
        assert m["idle_gpu_hours"] == t.idle_gpu_hours, key
        assert m["memory_held_idle_gpu_hours"] == t.memory_held_idle_gpu_hours, key
        assert m["per_gpu"] == t.per_gpu, key
        if t.avg_gpu_utilization is None:
            assert m["avg_gpu_utilization"] is None, key
        else:
            assert m["avg_gpu_utilization"] == pytest.approx(t.avg_gpu_utilization, abs=1e-6)
    assert sum(t.idle_gpu_hours for t in truth.values()) > 0  # the fleet has idle GPUs


def test_idle_and_unused_cost_within_half_a_percent_per_cluster_and_fleet(e2e):
    mine: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for r in _rows(e2e, "select * from marts.idle_waste_daily"):
        mine[r["cluster_id"]][0] += r["idle_cost"]
        mine[r["cluster_id"]][1] += r["unused_capacity_cost"]
    truth: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for t in e2e["truth"].daily:
        truth[t.cluster_id][0] += t.idle_cost
        truth[t.cluster_id][1] += t.unused_capacity_cost
    assert set(mine) == set(truth)
    for cid in truth:
        assert _close(mine[cid][0], truth[cid][0], HALF_PERCENT), cid
        assert _close(mine[cid][1], truth[cid][1], HALF_PERCENT), cid
    fleet = {(r["day"], r["currency"]): r for r in _rows(e2e, "select * from marts.fleet_daily")}
    expected = {(r["day"], r["currency"]): r for r in e2e["truth"].fleet_daily()}
    assert set(fleet) == set(expected)
    assert {c for _, c in fleet} == {"USD", "EUR"}  # currencies kept apart
    for key, t in expected.items():
        assert abs(fleet[key]["cost"] - t["cost"]) <= CENT, key
        assert fleet[key]["gpu_hours"] == t["gpu_hours"], key
        assert fleet[key]["idle_gpu_hours"] == t["idle_gpu_hours"], key
        assert _close(fleet[key]["idle_cost"], t["idle_cost"], HALF_PERCENT), key


def test_every_projection_actual_within_one_cent(e2e):
    mine = {
        (r["cluster_id"], r["projected_at"], r["horizon"]): r
        for r in _rows(e2e, "select * from marts.projection_drift")
    }
    truth = {(p.cluster_id, p.projected_at, p.horizon): p for p in e2e["truth"].projections}
    assert set(mine) == set(truth)
    assert {h for _, _, h in truth} >= {"daily", "weekly"}
    for key, p in truth.items():
        assert mine[key]["projected_cost"] == p.projected_cost, key
        assert abs(mine[key]["actual_cost"] - p.actual_cost) <= CENT, key
    assert any(r["is_flagged"] for r in mine.values())


def test_recommendation_kinds_and_savings_equal_the_truth(e2e):
    mine = {
        (r["cluster_id"], r["kind"]): r["monthly_savings"]
        for r in _rows(e2e, "select * from marts.recommendations where status = 'open'")
    }
    truth = {(r.cluster_id, r.kind): r.monthly_savings for r in e2e["truth"].recommendations}
    assert set(mine) == set(truth)
    assert {k for _, k in truth} == {
        "stop_idle",
        "downsize",
        "schedule",
        "delete_storage",
        "investigate_error",
    }
    for key, savings in truth.items():
        assert _close(mine[key], savings, Decimal("0.01")), key


def test_recommendation_lifecycle_equals_the_truth(e2e):
    mine = {
        (r["cluster_id"], r["kind"]): r for r in _rows(e2e, "select * from marts.recommendations")
    }
    truth = {(h.cluster_id, h.kind): h for h in e2e["truth"].recommendation_history}
    assert set(mine) == set(truth)
    for key, h in truth.items():
        m = mine[key]
        assert m["status"] == h.status, key
        assert (m["first_seen_at"], m["last_seen_at"]) == (h.first_seen_at, h.last_seen_at), key
        assert _close(m["monthly_savings"], h.monthly_savings, Decimal("0.01")), key
        if h.realized_monthly_savings is None:
            assert m["realized_monthly_savings"] is None, key
        else:
            assert _close(m["realized_monthly_savings"], h.realized_monthly_savings, CENT), key
    assert {h.status for h in truth.values()} >= {"open", "resolved"}


def test_incremental_nightly_builds_equal_a_full_refresh(e2e):
    assert "marts.idle_waste_daily" in e2e["builds"][-1].incremental_marts
    assert e2e["full"].incremental_marts == []
    for mart in MARTS:
        assert e2e["incremental"][mart] == e2e["full_marts"][mart], mart
    # every mart, the views over tables kept night by night included (cluster_cost_daily)
    assert len(e2e["full_every_mart"]) >= 20
    for mart, rows in e2e["full_every_mart"].items():
        assert e2e["incremental_every_mart"][mart] == rows, mart


def test_a_full_refresh_in_batches_of_clusters_equals_one_in_one_piece(e2e, tmp_path):
    """The bounded-memory full refresh (per-cluster models batch by batch) gives the same
    marts, every row, as the one-piece full refresh; here with batches of ~3 clusters."""
    copy = tmp_path / "batched.duckdb"
    shutil.copyfile(e2e["db"], copy)
    con = duckdb.connect(str(copy))
    try:
        result = build_on_connection(con, Thresholds(), full_refresh=True, batch_buckets=1500)
    finally:
        con.close()
    assert result.batches >= 10
    assert e2e["full"].batches == 1
    batched = _marts(copy)
    for mart in MARTS:
        assert batched[mart] == e2e["full_marts"][mart], mart
        assert batched[mart], mart
    every = _every_mart(copy)
    assert len(every) >= 20
    for mart, rows in e2e["full_every_mart"].items():
        assert every[mart] == rows, mart


def test_an_incremental_build_in_batches_of_clusters_equals_one_in_one_piece(e2e, tmp_path):
    """A night of a large fleet is built incrementally in batches of the scope's clusters
    (bounded memory): the same marts, every row, as the same incremental build in one piece and
    as the full refresh; here the last three nights are built again, in batches of ~2
    clusters' recent buckets."""
    results, marts, every = {}, {}, {}
    for name, batch_buckets in (("batched", 400), ("one piece", 10**9)):
        copy = tmp_path / f"{name}.duckdb"
        shutil.copyfile(e2e["db"], copy)
        con = duckdb.connect(str(copy))
        try:
            con.execute(
                "delete from marts.build_runs where run_id in "
                "(select run_id from marts.build_runs order by run_id desc limit 3)"
            )
            # rows of the newest day the build must compute again (a build that skipped a
            # batch would leave them missing)
            con.execute(
                "delete from intermediate.buckets where bucket_at >= "
                "(select max(bucket_at) from intermediate.buckets) - interval 1 day"
            )
            con.execute(
                "delete from marts.idle_waste_daily where day >= "
                "(select max(day) from marts.idle_waste_daily) - 1"
            )
            results[name] = build_on_connection(con, Thresholds(), batch_buckets=batch_buckets)
        finally:
            con.close()
        marts[name] = _marts(copy)
        every[name] = _every_mart(copy)
    batched, whole = results["batched"], results["one piece"]
    assert not batched.full_refresh and not whole.full_refresh
    assert batched.batches >= 10 and whole.batches == 1
    assert "marts.idle_waste_daily" in batched.incremental_marts
    assert sorted(batched.incremental_marts) == sorted(whole.incremental_marts)
    for mart in MARTS:
        assert marts["batched"][mart] == marts["one piece"][mart], mart
        assert marts["batched"][mart] == e2e["full_marts"][mart], mart
        assert marts["batched"][mart], mart
    # every other mart too: those rebuilt whole after the batches read the staging views whole
    # again (utilization_heatmap reads every cluster's points)
    assert len(every["batched"]) >= 20
    for mart, rows in every["one piece"].items():
        assert every["batched"][mart] == rows, mart


@pytest.mark.slow
def test_a_250_cluster_fleet_agrees_with_the_truth(tmp_path):
    """The same checks on a fleet large enough to hold rarer combinations of events."""
    run = _simulate(tmp_path / "gpucost.duckdb", 250)
    test_idle_gpu_hours_equal_the_truth_exactly(run)
    test_idle_and_unused_cost_within_half_a_percent_per_cluster_and_fleet(run)
    test_every_projection_actual_within_one_cent(run)
    test_recommendation_kinds_and_savings_equal_the_truth(run)
    test_recommendation_lifecycle_equals_the_truth(run)
    test_incremental_nightly_builds_equal_a_full_refresh(run)


def test_off_hour_snapshots_of_another_fleet_agree_with_the_truth(tmp_path):
    """Cron does not fire on the hour: snapshots at 03:15:07, 03:15:20, ... of a seed-11 fleet.

    The documents go through pipeline.normalize and the store directly (HTTP is covered above),
    so this checks the horizons and windows that start inside an hour.
    """
    import json

    from pipeline.normalize import normalize_detail, parse_json
    from pipeline.store import LoadBatch, Store

    db = tmp_path / "gpucost.duckdb"
    fleet = Fleet(FleetSpec(seed=11, clusters=30, start=START))
    times = []
    with Store.open(db) as store:
        for night in range(9):
            fleet.set_clock(START + timedelta(days=night, minutes=15, seconds=7 + 13 * night))
            times.append(fleet.now)
            run_id = store.start_run("http://127.0.0.1/v1")
            batch = LoadBatch(run_id)
            for summary in fleet.list_summaries():
                doc = fleet.detail(summary["id"])
                if doc is not None:
                    batch.add_detail(normalize_detail(parse_json(json.dumps(doc))))
            store.write_batch(batch)
            store.finish_run(run_id, "complete")
    build_models(Config(store=StoreSettings(db=str(db))))
    run = {"db": db, "truth": ground_truth(fleet, times)}
    assert not any(t.minute == 0 and t.second == 0 for t in times)
    test_idle_gpu_hours_equal_the_truth_exactly(run)
    test_idle_and_unused_cost_within_half_a_percent_per_cluster_and_fleet(run)
    test_every_projection_actual_within_one_cent(run)
    test_recommendation_kinds_and_savings_equal_the_truth(run)
    test_recommendation_lifecycle_equals_the_truth(run)
