"""The finance marts end to end against the simulator's ground truth: fourteen simulated nights
of the demo's 40-cluster seed-7 fleet over real HTTP, built as cron does, with cost centers and
budgets configured, compared with `finance_truth` (plain Python over the fleet's own series)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import duckdb
import pytest

from pipeline.config import ApiSettings, Budget, Config, StoreSettings, Thresholds
from pipeline.models import build_models
from pipeline.simulator import Fleet, FleetSpec, Simulator
from pipeline.simulator.truth import finance_truth, ground_truth
from pipeline.snapshot import run_snapshot
from tests.snapshot_helpers import API_KEY, START

NIGHTS = 14
CENT = Decimal("0.01")
COST_CENTERS = {"proj_ml": "CC-100", "proj_search": "CC-100", "proj_vision": "CC-200"}
# amounts chosen so that each status occurs in November (checked against the truth below)
BUDGETS = (
    Budget("ml-small", "project", "proj_ml", Decimal("3000"), "USD"),
    Budget("ml-tight", "project", "proj_ml", Decimal("80000"), "USD"),
    Budget("cc-100", "cost_center", "CC-100", Decimal("150000"), "USD"),
    Budget("fleet-usd", "fleet", None, Decimal("1000000"), "USD"),
    Budget("fleet-eur", "fleet", None, Decimal("9000"), "EUR"),
)


@pytest.fixture(scope="module")
def finance(tmp_path_factory):
    """The database after 14 nights and the truth of the same snapshot times."""
    db = tmp_path_factory.mktemp("finance") / "gpucost.duckdb"
    fleet = Fleet(FleetSpec(seed=7, clusters=40, start=START))
    times = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPUCOST_API_KEY", API_KEY)
        with Simulator(fleet, api_key=API_KEY).run_in_thread(port=0) as url:
            config = Config(
                api=ApiSettings(url=url),
                store=StoreSettings(db=str(db)),
                cost_centers=COST_CENTERS,
                budgets=BUDGETS,
            )
            for night in range(NIGHTS):
                fleet.set_clock(START + timedelta(days=night))
                assert run_snapshot(config).status == "complete"
                times.append(fleet.now)
                if night + 1 >= 7:
                    build_models(config)
    truth = ground_truth(fleet, times)
    return {
        "db": db,
        "fleet": fleet,
        "truth": finance_truth(fleet, truth, cost_centers=COST_CENTERS, budgets=BUDGETS),
    }


def _rows(finance, sql):
    con = duckdb.connect(str(finance["db"]), read_only=True)
    try:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()


def test_project_monthly_equals_the_truth_to_the_cent(finance):
    mine = {
        (r["month"], r["project_id"], r["currency"]): r
        for r in _rows(finance, "select * from marts.project_monthly")
    }
    truth = {(t.month, t.project_id, t.currency): t for t in finance["truth"].project_monthly}
    assert set(mine) == set(truth)
    assert len({t.project_id for t in truth.values()}) >= 4
    for key, t in truth.items():
        m = mine[key]
        assert abs(m["cost"] - t.cost) < CENT, key
        assert m["gpu_hours"] == t.gpu_hours, key
        assert m["idle_gpu_hours"] == t.idle_gpu_hours, key
        assert abs(m["idle_cost"] - t.idle_cost) <= max(CENT, t.idle_cost / 200), key
        assert m["cost_center"] == t.cost_center, key
        assert m["is_closed"] is False and m["adjustment_cost"] == 0
        assert m["first_data_at"] < m["last_data_at"]


def test_projects_add_up_to_fleet_daily_per_month_and_currency(finance):
    fleet = defaultdict(Decimal)
    for r in _rows(finance, "select * from marts.fleet_daily"):
        fleet[(r["day"].replace(day=1), r["currency"])] += r["cost"]
    projects = defaultdict(Decimal)
    for r in _rows(finance, "select * from marts.project_monthly"):
        projects[(r["month"], r["currency"])] += r["cost"]
    assert set(fleet) == set(projects)
    for key, cost in fleet.items():
        assert abs(projects[key] - cost) < CENT, key


def test_unmapped_projects_are_reported_as_unmapped_never_dropped(finance):
    rows = _rows(finance, "select * from marts.projects order by project_id")
    by_id = {r["project_id"]: r for r in rows}
    assert by_id["proj_ads"]["cost_center"] == "unmapped"
    assert by_id["proj_ads"]["is_unmapped"] is True
    assert by_id["proj_ml"]["cost_center"] == "CC-100"
    assert by_id["proj_vision"]["is_unmapped"] is False
    cost = _rows(
        finance,
        "select sum(cost) as cost from marts.project_monthly where cost_center = 'unmapped'",
    )[0]["cost"]
    assert cost > 0


def test_projects_carry_the_owner_e_mail_the_provider_sent(finance):
    fleet = finance["fleet"]
    owners = {}
    for cid in fleet.cluster_ids():
        plan = fleet.plan(cid)
        owners[plan.project_id] = plan.owner_email
    rows = _rows(finance, "select project_id, owner_email, owner_id from marts.projects")
    assert {r["project_id"]: r["owner_email"] for r in rows} == owners
    assert all(r["owner_id"].startswith("user_") for r in rows)


def test_budget_status_equals_the_truth_with_the_run_rate_forecast(finance):
    mine = {
        (r["budget_name"], r["month"]): r
        for r in _rows(finance, "select * from marts.budget_status")
    }
    truth = {(t.budget_name, t.month): t for t in finance["truth"].budget_status}
    assert set(mine) == set(truth)
    assert {t.status for t in truth.values()} == {"over", "at_risk", "ok"}
    for key, t in truth.items():
        m = mine[key]
        assert (m["scope"], m["scope_id"], m["currency"]) == (t.scope, t.scope_id, t.currency)
        assert m["amount"] == t.amount, key
        assert abs(m["actual_to_date"] - t.actual_to_date) < CENT, key
        assert abs(m["forecast_month_end"] - t.forecast_month_end) < CENT, key
        assert m["forecast_month_end"] > m["actual_to_date"], key  # November is still running
        assert m["status"] == t.status, key
        assert m["pct_of_budget"] == pytest.approx(float(t.actual_to_date / t.amount * 100))


def test_spend_anomalies_equal_the_truth(finance):
    mine = {
        (r["day"], r["scope"], r["scope_id"], r["currency"]): r
        for r in _rows(finance, "select * from marts.spend_anomalies")
    }
    truth = {(t.day, t.scope, t.scope_id, t.currency): t for t in finance["truth"].anomalies}
    assert truth  # the fleet grows: there is something to flag
    assert set(mine) == set(truth)
    # a move of a few % of a steady baseline is not news, however small its MAD
    assert all(abs(m["deviation_pct"]) >= Thresholds().anomaly_min_pct for m in mine.values())
    for key, t in truth.items():
        m = mine[key]
        assert abs(m["cost"] - t.cost) < CENT, key
        assert abs(m["baseline"] - t.baseline) < CENT, key
        assert m["cause"] == t.cause, key
        assert tuple((m["cluster_ids"] or "").split(",")) == t.cluster_ids, key


def test_report_writes_the_finance_csvs_with_the_marts_columns(finance, tmp_path):
    import polars as pl

    from pipeline.report import render_report

    result = render_report(Config(store=StoreSettings(db=str(finance["db"]))), tmp_path)
    names = {p.name for p in result.files}
    assert {"project_monthly.csv", "budget_status.csv", "spend_anomalies.csv"} <= names
    for mart in ("project_monthly", "budget_status", "spend_anomalies"):
        rows = _rows(finance, f"select * from marts.{mart}")
        frame = pl.read_csv(tmp_path / f"{mart}.csv", infer_schema_length=0)
        assert frame.columns == list(rows[0]), mart
        assert frame.height == len(rows), mart
    csv_cost = sum(
        Decimal(v)
        for v in pl.read_csv(tmp_path / "project_monthly.csv", infer_schema_length=0)["cost"]
    )
    assert csv_cost == sum(r["cost"] for r in _rows(finance, "select * from marts.project_monthly"))
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert 'id="finance"' in html and "Spend by project" in html


ENDED_NIGHTS = 21  # 13 Nov to 3 Dec: November ends inside the data and its forecasts are scored


@pytest.fixture(scope="module")
def ended(tmp_path_factory):
    """21 nights, built every night from the 7th on: November's forecasts can be scored."""
    from pipeline.simulator.truth import budget_forecast_truth

    db = tmp_path_factory.mktemp("ended") / "gpucost.duckdb"
    fleet = Fleet(FleetSpec(seed=7, clusters=40, start=START))
    times = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPUCOST_API_KEY", API_KEY)
        with Simulator(fleet, api_key=API_KEY).run_in_thread(port=0) as url:
            config = Config(
                api=ApiSettings(url=url),
                store=StoreSettings(db=str(db)),
                cost_centers=COST_CENTERS,
                budgets=BUDGETS,
            )
            for night in range(ENDED_NIGHTS):
                fleet.set_clock(START + timedelta(days=night))
                assert run_snapshot(config).status == "complete"
                times.append(fleet.now)
                if night + 1 >= 7:
                    build_models(config)
    truth = ground_truth(fleet, times)
    forecasts = budget_forecast_truth(fleet, truth, cost_centers=COST_CENTERS, budgets=BUDGETS)
    return {"db": db, "forecasts": forecasts}


def test_every_nights_run_rate_forecast_equals_the_truth_and_is_scored_once_the_month_ends(
    ended,
):
    mine = {
        (r["budget_name"], r["forecast_at"]): r
        for r in _rows(ended, "select * from marts.budget_forecasts")
    }
    truth = {(t.budget_name, t.forecast_at): t for t in ended["forecasts"]}
    assert set(mine) == set(truth)
    scored = [t for t in truth.values() if t.actual_month_end is not None]
    assert {t.month.month for t in scored} == {11}  # November ended, December has not
    for key, t in truth.items():
        m = mine[key]
        assert m["month"] == t.month, key
        assert abs(m["forecast_month_end"] - t.forecast_month_end) < CENT, key
        if t.actual_month_end is None:
            assert m["actual_month_end"] is None and m["error_pct"] is None, key
        else:
            assert abs(m["actual_month_end"] - t.actual_month_end) < CENT, key
            error = float((t.forecast_month_end - t.actual_month_end) / t.actual_month_end * 100)
            assert m["error_pct"] == pytest.approx(error, abs=1e-6), key


def test_forecast_accuracy_is_the_mape_and_bias_of_the_scored_forecasts(ended):
    rows = _rows(ended, "select * from marts.budget_forecast_accuracy")
    by_budget = defaultdict(list)
    for t in ended["forecasts"]:
        if t.actual_month_end is not None and t.actual_month_end != 0:
            by_budget[(t.budget_name, t.month)].append(
                float((t.forecast_month_end - t.actual_month_end) / t.actual_month_end * 100)
            )
    assert {(r["budget_name"], r["month"]) for r in rows} == set(by_budget)
    for r in rows:
        errors = by_budget[(r["budget_name"], r["month"])]
        assert r["forecasts"] == len(errors) >= 17
        assert r["mape_pct"] == pytest.approx(sum(abs(e) for e in errors) / len(errors))
        assert r["bias_pct"] == pytest.approx(sum(errors) / len(errors))
        assert r["method"] == "run_rate"


def test_the_report_shows_the_forecast_accuracy_of_an_ended_month(ended, tmp_path):
    from pipeline.report import render_report

    result = render_report(Config(store=StoreSettings(db=str(ended["db"]))), tmp_path)
    html = result.index_html.read_text(encoding="utf-8")
    assert 'id="forecast-accuracy"' in html and "November 2026" in html
