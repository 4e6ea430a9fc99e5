"""The same models on Apache Spark: transpiled from the one DuckDB source, run in local mode
over the lake of the 14-night demo, and every mart (whatever sql/marts holds) equal to
DuckDB's, row for row, money to the cent."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import date
from decimal import Decimal

import duckdb
import pytest
import sqlglot
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config import Thresholds, load_config
from pipeline.demo import DEMO_START, run_demo
from pipeline.engines.spark import transpile_model
from pipeline.finance import close_month
from pipeline.lake import export_lake
from pipeline.models import build_models, discover_models, discover_tests
from pipeline.recs import decide, sync_suppressions
from pipeline.simulator.fleet import Fleet, FleetSpec
from pipeline.store import Store

CENT = Decimal("0.01")
# doubles: the engines add in different orders (and DuckDB averages DECIMALs in long double)
RELATIVE = 1e-9


def test_every_model_and_data_test_transpiles_to_spark_sql():
    for model in discover_models():
        spark_sql = transpile_model(model.sql)
        sqlglot.parse_one(spark_sql, read="spark")
        assert "getvariable" not in spark_sql.lower(), model.relation
        assert "to_hours(" not in spark_sql.lower(), model.relation
    for path in discover_tests():
        sqlglot.parse_one(transpile_model(path.read_text()), read="spark")


def test_thresholds_become_bound_parameters_never_values_in_the_text():
    sql = transpile_model(
        "select * from staging.metric_points "
        "where gpu_utilization < getvariable('idle_threshold_pct')"
    )
    assert ":idle_threshold_pct" in sql
    assert str(Thresholds().idle_threshold_pct) not in sql


def test_relations_become_views_and_keep_their_names_as_aliases():
    sql = transpile_model(
        "select metric_points.cluster_id from staging.metric_points "
        "join marts.clusters as c on c.cluster_id = metric_points.cluster_id"
    )
    assert "staging__metric_points AS metric_points" in sql
    assert "marts__clusters AS c" in sql


def test_duckdb_functions_become_their_spark_equivalents():
    sql = transpile_model(
        "select epoch_ms(bucket_at) // 86400000 as d, bucket_at + to_hours(168) as h, "
        "bucket_at + to_seconds(interval_seconds) as s, "
        "quantile_cont(busy_gpus, 0.95) as p, cast(bucket_at at time zone 'UTC' as date) as day, "
        "cost / hours as rate from staging.metric_points"
    )
    assert "UNIX_MILLIS(bucket_at) DIV 86400000" in sql
    assert "MAKE_DT_INTERVAL(0, 168, 0, 0)" in sql
    assert "MAKE_DT_INTERVAL(0, 0, 0, interval_seconds)" in sql
    assert "PERCENTILE(busy_gpus, 0.95)" in sql
    assert "CAST(bucket_at AS DATE)" in sql
    # DuckDB divides as DOUBLE, DECIMALs too
    assert "CAST(cost AS DOUBLE) / CAST(hours AS DOUBLE)" in sql


def _marts():
    return [m for m in discover_models() if m.layer == "marts"]


def _same(a, b) -> bool:
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return abs(a - b) < CENT
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= RELATIVE * max(abs(a), abs(b), 1.0)
    return a == b


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's fleet over 21 nights (40 clusters, seed 7: past the end of November, so a
    month's forecasts are scored), with cost centers, budgets of every scope, a dismissed
    recommendation, a suppression and a closed month; fully refreshed on DuckDB, exported."""
    root = tmp_path_factory.mktemp("spark")
    db = root / "demo.duckdb"
    fleet = Fleet(FleetSpec(seed=7, clusters=40, start=DEMO_START))
    projects = sorted({fleet.plan(cid).project_id for cid in fleet.cluster_ids()})
    toml = root / "gpucost.toml"
    toml.write_text(
        f'[cost_centers]\n"{projects[0]}" = "CC-100"\n"{projects[1]}" = "CC-100"\n\n'
        '[[budgets]]\nname = "fleet"\nmonthly = 20000.00\ncurrency = "USD"\n\n'
        f'[[budgets]]\nname = "team"\nproject_id = "{projects[0]}"\nmonthly = 900.50\n'
        'currency = "USD"\n\n'
        '[[budgets]]\nname = "cc"\ncost_center = "CC-100"\nmonthly = 4000\ncurrency = "USD"\n\n'
        f'[[suppress]]\nproject = "{projects[-1]}"\nkind = "schedule"\nreason = "batch jobs"\n',
        encoding="utf-8",
    )
    config = load_config(
        str(toml),
        overrides={"store": {"db": str(db)}, "report": {"out_dir": str(root / "out")}},
    )
    run_demo(config, nights=21)
    with Store.open(db) as store:
        (rec_id,) = store.con.execute(
            "select rec_id from marts.recommendations where status = 'open' "
            "order by monthly_savings desc limit 1"
        ).fetchone()
        decide(store.con, rec_id, "dismiss", reason="on purpose", who="test")
        sync_suppressions(store.con, config.suppress)
    close_month(config, date(2026, 11, 1))
    build_models(config, full_refresh=True)
    export_lake(db, root / "lake")
    return {"db": db, "lake": root / "lake", "config": toml}


@pytest.mark.spark
@pytest.mark.timeout(1200)
def test_every_mart_on_spark_equals_duckdb_row_for_row(demo):
    if shutil.which("java") is None:
        pytest.skip("Apache Spark needs Java 17 (.ci/run installs openjdk-17-jre-headless)")
    result = CliRunner().invoke(
        cli,
        [
            "build",
            "--engine",
            "spark",
            "--lake",
            str(demo["lake"]),
            "--spark-master",
            "local[2]",
            "--config",
            str(demo["config"]),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "data tests passed" in result.output
    con = duckdb.connect(str(demo["db"]), read_only=True)
    con.execute("set TimeZone = 'UTC'")
    marts = _marts()
    assert len(marts) >= 7
    for mart in marts:
        duck = con.execute(f"select * from marts.{mart.name} order by all")
        columns = [(d[0], str(d[1])) for d in duck.description]
        mine = duck.fetchall()
        names = ", ".join(f'"{name}"' for name, _ in columns)
        path = demo["lake"] / "marts" / mart.name
        spark = con.execute(f"select {names} from read_parquet('{path}/*.parquet') order by all")
        assert [(d[0], str(d[1])) for d in spark.description] == columns, mart.name
        theirs = spark.fetchall()
        assert len(theirs) == len(mine), mart.name
        assert mine, f"{mart.name} is empty: the comparison proves nothing"
        for left, right in zip(mine, theirs, strict=True):
            assert all(_same(a, b) for a, b in zip(left, right, strict=True)), (
                mart.name,
                left,
                right,
            )
    con.close()


def test_spark_build_without_a_lake_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["build", "--engine", "spark", "--db", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "--lake" in result.output


def test_a_folder_that_is_not_a_lake_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["build", "--engine", "spark", "--lake", str(tmp_path)])
    assert result.exit_code == 2
    assert "lake export" in result.output


def test_lake_options_without_the_spark_engine_are_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["build", "--lake", str(tmp_path)])
    assert result.exit_code == 2


def test_thresholds_reach_spark_from_the_config():
    # the same dataclass feeds both engines: a field added to Thresholds is a parameter here
    from pipeline.engines.spark import _parameters

    params = _parameters(dataclasses.replace(Thresholds(), idle_threshold_pct=7.5))
    assert params["idle_threshold_pct"] == 7.5
    assert set(dataclasses.asdict(Thresholds())) <= set(params)
