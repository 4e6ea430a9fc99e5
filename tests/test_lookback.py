"""`thresholds.lookback_days` (7, 14 or 30) evaluates recommendations over the stored history,
and each says how many hours of evidence it stands on: fourteen nights of a 20-cluster fleet
over real HTTP, built nightly with a 14-day lookback, against the ground truth."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal

import duckdb
import pytest

from pipeline.config import Thresholds
from pipeline.models import build_models
from pipeline.simulator import Fleet, FleetSpec, Simulator
from pipeline.simulator.truth import ground_truth
from pipeline.snapshot import run_snapshot
from tests.snapshot_helpers import API_KEY, START, make_config

NIGHTS = 14
CENT = Decimal("0.01")


def _open(db) -> dict:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "select cluster_id, kind, monthly_savings, evidence_hours "
            "from marts.recommendation_states where status = 'open'"
        ).fetchall()
    return {(c, k): (s, int(h)) for c, k, s, h in rows}


def test_a_14_day_lookback_matches_the_truth_and_counts_its_hours(tmp_path):
    fleet = Fleet(FleetSpec(seed=7, clusters=20, start=START))
    db = tmp_path / "gpucost.duckdb"
    th = Thresholds(lookback_days=14)
    times = [START + timedelta(days=n) for n in range(NIGHTS)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPUCOST_API_KEY", API_KEY)
        with Simulator(fleet, api_key=API_KEY).run_in_thread(port=0) as url:
            config = dataclasses.replace(make_config(db, url), thresholds=th)
            for night in range(NIGHTS):
                fleet.set_clock(times[night])
                assert run_snapshot(config).status == "complete"
                build_models(config)
    incremental = _open(db)
    build_models(config, full_refresh=True)
    assert _open(db) == incremental

    truth = {(r.cluster_id, r.kind): r for r in ground_truth(fleet, times, th).recommendations}
    assert set(incremental) == set(truth)
    for key, (savings, hours) in incremental.items():
        assert abs(savings - truth[key].monthly_savings) <= CENT, key
        assert hours == truth[key].evidence_hours, key
    # the history is longer than the API's 7-day window: evidence beyond 168 h
    assert max(hours for _s, hours in incremental.values()) == 14 * 24
    week = {(r.cluster_id, r.kind) for r in ground_truth(fleet, times).recommendations}
    assert week != set(truth)  # a longer look changes what is recommended
