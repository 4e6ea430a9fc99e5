"""The `schedule` recommendation end to end: which days count, over real HTTP, against truth.

The clusters are the hand-computed ones of tests/simulator/test_truth.py: a notebook idle every
night (15 h, across midnight), one idle three nights a week, and one idle in a single 100-h
stretch. Only the first idles on >= 5 of 7 days; a night across midnight counts once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import duckdb

from pipeline.models import build_models
from pipeline.simulator import Fleet, FleetSpec, Simulator
from pipeline.simulator.truth import ground_truth
from pipeline.snapshot import run_snapshot
from tests.simulator.test_truth import _schedule_plan
from tests.snapshot_helpers import API_KEY, make_config

AT = datetime(2026, 11, 9, 0, tzinfo=UTC)  # window: Mon 11-02 00:00 .. Sun 11-08 23:59


def test_schedule_counts_days_as_the_truth_does(tmp_path, monkeypatch):
    plans = [
        _schedule_plan("nightly", lambda t: t.hour >= 18 or t.hour < 9),
        _schedule_plan(
            "three_nights",
            lambda t: (
                (t.weekday() in (0, 2, 4) and t.hour >= 20)
                or (t.weekday() in (1, 3, 5) and t.hour < 8)
            ),
        ),
        _schedule_plan(
            "one_stretch",
            lambda t: datetime(2026, 11, 2, tzinfo=UTC) <= t < datetime(2026, 11, 6, 4, tzinfo=UTC),
        ),
    ]
    fleet = Fleet(FleetSpec(plans=plans, start=AT))
    monkeypatch.setenv("GPUCOST_API_KEY", API_KEY)
    db = tmp_path / "gpucost.duckdb"
    with Simulator(fleet, api_key=API_KEY).run_in_thread(port=0) as url:
        config = make_config(db, url)
        assert run_snapshot(config).status == "complete"
        build_models(config, full_refresh=True)
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "select cluster_id, monthly_savings, reason from marts.recommendations "
        "where kind = 'schedule' and status = 'open'"
    ).fetchall()
    con.close()
    truth = {
        r.cluster_id: r.monthly_savings
        for r in ground_truth(fleet, [AT]).recommendations
        if r.kind == "schedule"
    }
    # 99 idle hours in qualifying runs: 99 / 7 x 30 x (0.90 - 0.02) = 373.371429 a month
    assert truth == {"nightly": Decimal("373.371429")}
    assert {cid: savings for cid, savings, _ in rows} == truth
    assert "on 7 UTC days" in rows[0][2]
