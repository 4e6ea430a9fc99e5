"""Finance by hand: chargeback, cost centers, month close with adjustments, the `close`
command and the finance configuration, on hand-written snapshots."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.finance import CloseError, close_month_on, parse_month
from tests.models_fixtures import DAY, HOUR, T0, FixtureDB

D = Decimal
NOV = date(2026, 11, 1)
DEC = date(2026, 12, 1)
DEC_T = datetime(2026, 12, 2, 3, tzinfo=T0.tzinfo)


def _project(db: FixtureDB, cluster_id: str, project_id: str, email: str) -> None:
    db.con.execute(
        "update snap.cluster_snapshots set project_id = ?, owner_id = ?, owner_email = ? "
        "where cluster_id = ?",
        [project_id, "u_" + project_id, email, cluster_id],
    )


def _november(db: FixtureDB) -> None:
    """c1 (proj_a) and c2 (proj_b): two billed hours each at 6.90 before T0 (2026-11-13)."""
    for cid in ("c1", "c2"):
        db.snapshot(cid, T0)
        db.buckets(cid, [T0 - 2 * HOUR, T0 - HOUR], gpus=[(50.0, 0.0)] * 2, cost=D("6.90"))
    _project(db, "c1", "proj_a", "a@example.com")
    _project(db, "c2", "proj_b", "b@example.com")
    db.con.execute("insert into meta.cost_centers values ('proj_a', 'CC-1')")


def test_each_project_pays_for_its_clusters_and_unmapped_ones_say_so():
    db = FixtureDB()
    _november(db)
    db.build()
    rows = db.rows("select * from marts.project_monthly order by project_id")
    assert [(r["month"], r["project_id"], r["cost"], r["cost_center"]) for r in rows] == [
        (NOV, "proj_a", D("13.80"), "CC-1"),
        (NOV, "proj_b", D("13.80"), "unmapped"),
    ]
    # 2 GPUs x 2 hours; the GPU share of 6.90 is 6.20
    assert rows[0]["gpu_hours"] == 4 and rows[0]["gpu_cost"] == D("12.40")
    assert rows[0]["first_data_at"] == T0 - 2 * HOUR and rows[0]["last_data_at"] == T0
    projects = db.rows("select * from marts.projects order by project_id")
    assert [(p["project_id"], p["owner_email"], p["is_unmapped"]) for p in projects] == [
        ("proj_a", "a@example.com", False),
        ("proj_b", "b@example.com", True),
    ]


def test_a_closed_month_stays_frozen_and_its_revision_is_an_adjustment_in_the_next_month():
    db = FixtureDB()
    _november(db)
    db.build()
    result = close_month_on(db.con, NOV)
    assert result.rows == 2 and result.cost_by_currency == {"USD": "27.600000"}
    # the provider revises a closed November bucket (6.90 -> 10.00) and December begins
    db.bucket("c1", T0 - HOUR, gpus=[(50.0, 0.0)] * 2, cost=D("10.00"), snapshot_at=T0 + DAY)
    db.snapshot("c1", T0 + DAY)
    db.snapshot("c1", DEC_T)
    db.snapshot("c2", DEC_T)
    _project(db, "c1", "proj_a", "a@example.com")
    _project(db, "c2", "proj_b", "b@example.com")
    db.bucket("c1", DEC_T - HOUR, gpus=[(50.0, 0.0)] * 2, cost=D("6.90"), snapshot_at=DEC_T)
    db.build()  # the data test (projects add up with adjustments) passes
    rows = {
        (r["month"], r["project_id"]): r for r in db.rows("select * from marts.project_monthly")
    }
    assert rows[(NOV, "proj_a")]["cost"] == D("13.80") and rows[(NOV, "proj_a")]["is_closed"]
    assert rows[(DEC, "proj_a")]["cost"] == D("6.90")
    assert rows[(DEC, "proj_a")]["adjustment_cost"] == D("3.10")
    assert rows[(DEC, "proj_a")]["is_closed"] is False
    assert (DEC, "proj_b") not in rows  # nothing billed, nothing revised
    fleet = db.one("select sum(cost) as cost from marts.fleet_daily")["cost"]
    total = db.one("select sum(cost + adjustment_cost) as cost from marts.project_monthly")
    assert total["cost"] == fleet == D("37.60")


def test_closing_twice_an_empty_month_or_out_of_order_is_a_clear_error():
    db = FixtureDB()
    _november(db)
    db.build()
    with pytest.raises(CloseError, match="no data"):
        close_month_on(db.con, DEC)
    close_month_on(db.con, NOV)
    with pytest.raises(CloseError, match="already closed") as exc:
        close_month_on(db.con, NOV)
    assert exc.value.exit_code == 2
    with pytest.raises(CloseError, match="in order"):
        close_month_on(db.con, date(2026, 10, 1))
    assert db.one("select count(*) as n from meta.closed_months")["n"] == 1


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "nov", "2026-11-01"])
def test_a_month_that_is_not_yyyy_mm_is_a_usage_error(text):
    with pytest.raises(ConfigError, match="YYYY-MM"):
        parse_month(text)


def test_close_command_exits_2_on_a_bad_month_or_a_missing_database(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(cli, ["close", "--month", "2026-13", "--db", str(tmp_path / "x.duckdb")])
    assert bad.exit_code == 2 and "YYYY-MM" in bad.output
    missing = runner.invoke(
        cli, ["close", "--month", "2026-11", "--db", str(tmp_path / "x.duckdb")]
    )
    assert missing.exit_code == 2 and "does not exist" in missing.output


def _config(tmp_path, text: str):
    path = tmp_path / "gpucost.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env={})


def test_cost_centers_and_budgets_load_from_the_config(tmp_path):
    config = _config(
        tmp_path,
        '[cost_centers]\nproj_research = "CC-100"\n\n'
        '[[budgets]]\nname = "research"\nproject_id = "proj_research"\nmonthly = 3000.10\n'
        'currency = "USD"\n\n'
        '[[budgets]]\nname = "cc"\ncost_center = "CC-100"\nmonthly = 5000\ncurrency = "EUR"\n\n'
        '[[budgets]]\nname = "all"\nmonthly = 9000\ncurrency = "USD"\n',
    )
    assert config.cost_centers == {"proj_research": "CC-100"}
    assert [(b.name, b.scope, b.scope_id, b.amount, b.currency) for b in config.budgets] == [
        ("research", "project", "proj_research", D("3000.1"), "USD"),
        ("cc", "cost_center", "CC-100", D("5000"), "EUR"),
        ("all", "fleet", None, D("9000"), "USD"),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'name = "x"\nproject_id = "p"\ncost_center = "c"\nmonthly = 1\ncurrency = "USD"',
            "budgets[0]: set project_id or cost_center, not both",
        ),
        ('name = "x"\nmonthly = -5\ncurrency = "USD"', "budgets[0].monthly must be a positive"),
        ('name = "x"\nmonthly = 0\ncurrency = "USD"', "budgets[0].monthly must be a positive"),
        ('name = "x"\nmonthly = nan\ncurrency = "USD"', "budgets[0].monthly must be a positive"),
        ('name = "x"\nmonthly = inf\ncurrency = "USD"', "budgets[0].monthly must be a positive"),
        ('name = "x"\nmonthly = "lots"\ncurrency = "USD"', "budgets[0].monthly must be a"),
        ('name = "x"\nmonthly = 1\ncurrency = "usd"', "budgets[0].currency must be an ISO"),
        ('name = "x"\nmonthly = 1', "budgets[0].currency must be an ISO"),
        ('monthly = 1\ncurrency = "USD"', "budgets[0].name must be a non-empty string"),
        ('name = "x"\ncurrency = "USD"', "budgets[0].monthly is required"),
        ('name = "x"\nmonthly = 1\ncurrency = "USD"\namount = 2', "budgets[0].amount"),
    ],
)
def test_a_bad_budget_is_a_config_error_naming_the_key(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _config(tmp_path, f"[[budgets]]\n{body}\n")


def test_a_cost_center_named_unmapped_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="cost_centers.p: 'unmapped' is reserved"):
        _config(tmp_path, '[cost_centers]\np = "unmapped"\n')


def test_a_bad_budget_exits_2_from_the_cli(tmp_path):
    path = tmp_path / "gpucost.toml"
    path.write_text('[[budgets]]\nname = "x"\nmonthly = -1\ncurrency = "USD"\n')
    result = CliRunner().invoke(
        cli, ["build", "--config", str(path), "--db", str(tmp_path / "x.duckdb")]
    )
    assert result.exit_code == 2 and "budgets[0].monthly" in result.output


def test_focus_has_one_file_per_period_a_closed_one_is_kept_and_revisions_are_adjustments(
    tmp_path,
):
    import duckdb
    import polars as pl

    from pipeline.config import Config, ReportSettings, StoreSettings
    from pipeline.report import render_report

    path = tmp_path / "gpucost.duckdb"
    out = tmp_path / "out"
    config = Config(store=StoreSettings(db=str(path)), report=ReportSettings(focus_parquet=True))
    db = FixtureDB(path)
    _november(db)
    db.build()
    close_month_on(db.con, NOV)
    db.close()
    render_report(config, out)
    november = out / "focus-2026-11.csv"
    frozen = november.read_bytes()
    stamp = november.stat().st_mtime_ns
    assert pl.read_csv(november)["BilledCost"].sum() == pytest.approx(27.60)
    # the provider revises a closed November bucket (6.90 -> 10.00) and December begins
    db.con = duckdb.connect(str(path))
    db.con.execute("set TimeZone = 'UTC'")
    db.bucket("c1", T0 - HOUR, gpus=[(50.0, 0.0)] * 2, cost=D("10.00"), snapshot_at=T0 + DAY)
    db.snapshot("c1", T0 + DAY)
    for cid in ("c1", "c2"):
        db.snapshot(cid, DEC_T)
    _project(db, "c1", "proj_a", "a@example.com")
    _project(db, "c2", "proj_b", "b@example.com")
    db.bucket("c1", DEC_T - HOUR, gpus=[(50.0, 0.0)] * 2, cost=D("6.90"), snapshot_at=DEC_T)
    db.build()
    db.close()
    result = render_report(config, out)
    # the closed period's file is what was reported; the revision is booked in December
    assert november.read_bytes() == frozen and november.stat().st_mtime_ns == stamp
    december = pl.read_csv(out / "focus-2026-12.csv", infer_schema_length=0)
    adjustment = december.filter(pl.col("ChargeCategory") == "Adjustment")
    assert adjustment["SubAccountId"].to_list() == ["proj_a"]
    assert adjustment["BilledCost"].to_list() == ["3.100000"]
    assert adjustment["ConsumedQuantity"].to_list() == [None]
    usage = december.filter(pl.col("ChargeCategory") == "Usage")
    assert sum(D(v) for v in usage["BilledCost"]) == D("6.90")
    # Parquet beside each CSV, with typed columns
    parquet = pl.read_parquet(out / "focus-2026-12.parquet")
    assert parquet.schema["BilledCost"] == pl.Decimal(18, 6)
    assert parquet.schema["ChargePeriodStart"] == pl.Datetime("us", "UTC")
    assert parquet.height == december.height
    assert {p.name for p in result.files} >= {
        "focus-2026-11.csv",
        "focus-2026-12.csv",
        "focus-2026-12.parquet",
    }
