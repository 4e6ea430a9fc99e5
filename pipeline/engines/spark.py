"""The same `sql/` models on Apache Spark, over the Parquet lake (`pipeline.lake`).

One source of SQL: every model stays DuckDB SQL and is transpiled here with sqlglot. Every
difference between the engines is handled in this module, nowhere else:

- relations: `layer.name` becomes the temporary view `layer__name` (Spark's session catalog
  has no schemas for temporary views); the lake's tables are registered under the same names;
- variables: `getvariable('x')` becomes the named parameter `:x`, bound by `spark.sql(args=)`
  (thresholds are never pasted into SQL text); a full refresh binds `build_from_at` to
  `FULL_REFRESH_FROM` (Spark has no `-infinity` timestamp) and `_gpucost_scope` holds every
  cluster from then;
- functions: `epoch_ms(timestamp)` -> `unix_millis`, `to_hours / to_seconds /
  to_milliseconds` -> `make_dt_interval`, `quantile_cont` -> `percentile` (both interpolate
  linearly), `x at time zone 'UTC'` -> `x` (the session time zone is UTC);
  `regexp_full_match` -> an anchored `rlike`;
- types: DuckDB's `/` always divides as DOUBLE (DECIMALs too), Spark's keeps DECIMALs: both
  operands of every `/` are cast to DOUBLE; `avg` of a DECIMAL is the DOUBLE of its exact sum
  over the count, as DuckDB's; a division by zero is NULL (ANSI mode off), as on DuckDB.

A full refresh only: each model is computed from all of the lake, once (checkpointed), and each
mart is written as Parquet under `<lake>/marts/<name>/`. The data tests of `sql/tests/` run on
the result as on DuckDB.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from pipeline import duck
from pipeline.config import Config, Thresholds
from pipeline.errors import ConfigError, DataTestError
from pipeline.lake import (
    MANIFEST,
    STATE_TABLES,
    TABLES,
    LakeError,
    raw_view,
    read_manifest,
    source_select,
)
from pipeline.models import (
    MAX_FAILING_ROWS_SHOWN,
    BuildError,
    BuildResult,
    Model,
    discover_models,
    discover_tests,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

DEFAULT_MASTER = "local[2]"
# Two shared cores: a handful of shuffle partitions, not Spark's 200.
SHUFFLE_PARTITIONS = 2
# A full refresh computes from the beginning; Spark's timestamps have no -infinity, and any
# instant long before the data (with room for the models' 720-hour look-backs) does the same.
FULL_REFRESH_FROM = datetime(1900, 1, 1, tzinfo=UTC)

# DuckDB column types of the store -> Spark DDL types (what the lake's Parquet holds)
# the state tables a configuration defines (`build --engine spark --config`)
CONFIG_TABLES = ("meta.cost_centers", "meta.budgets", "meta.recommendation_suppressions")

_SPARK_TYPES = {
    "DATE": "DATE",
    "JSON": "STRING",
    "VARCHAR": "STRING",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMP",
    "INTEGER": "INT",
    "BIGINT": "BIGINT",
    "DOUBLE": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
}


def view_name(relation: str) -> str:
    """The Spark temporary view of a DuckDB relation `schema.name`: `schema__name`."""
    schema, name = relation.split(".", 1)
    return f"{schema}__{name}"


def _interval(*, hours: exp.Expression | None = None, secs: exp.Expression | None = None):
    zero = exp.Literal.number(0)
    return exp.Anonymous(
        this="MAKE_DT_INTERVAL",
        expressions=[zero, hours if hours is not None else zero, zero, secs or zero],
    )


def _is_decimal_typed(node: Any) -> bool:
    """Whether DuckDB types `node` as a DECIMAL we can see in the SQL: a DECIMAL cast or a
    literal with a decimal point (DuckDB reads `100.0` as DECIMAL)."""
    if isinstance(node, exp.Paren):
        return _is_decimal_typed(node.this)
    if isinstance(node, exp.Cast):
        return node.to.this == exp.DataType.Type.DECIMAL
    if isinstance(node, exp.Literal):
        return not node.is_string and "." in node.this
    if isinstance(node, exp.Mul | exp.Sub | exp.Add):
        return _is_decimal_typed(node.left) or _is_decimal_typed(node.right)
    return False


def _rewrite(node: exp.Expression) -> Any:
    if isinstance(node, exp.Table) and node.db:
        return exp.to_table(view_name(f"{node.db}.{node.name}")).as_(
            node.alias_or_name, quoted=False
        )
    if isinstance(node, exp.Anonymous):
        name = node.name.lower()
        args = node.expressions
        if name == "getvariable" and args and isinstance(args[0], exp.Literal):
            return exp.Placeholder(this=args[0].this)
        if name in ("to_hours", "to_seconds", "to_milliseconds"):
            # transform() does not descend into a replacement: rewrite its argument first
            # (`to_hours(getvariable('lookback_days') * 24)`)
            args = [arg.transform(_rewrite) for arg in args]
        if name == "to_hours":
            return _interval(hours=args[0])
        if name == "to_seconds":
            return _interval(secs=args[0])
        if name == "to_milliseconds":
            millis = exp.cast(args[0], exp.DataType.build("DECIMAL(18, 6)"))
            return _interval(secs=exp.Div(this=millis, expression=exp.Literal.number(1000)))
    if isinstance(node, exp.UnixToTime) and node.args.get("scale") is not None:
        # epoch_ms(timestamp): the models only ever turn timestamps into milliseconds
        return exp.Anonymous(this="UNIX_MILLIS", expressions=[node.this])
    if isinstance(node, exp.AtTimeZone):
        zone = node.args.get("zone")
        if isinstance(zone, exp.Literal) and zone.this.upper() == "UTC":
            return node.this
    return node


def _double(node: exp.Expression) -> exp.Expression:
    return exp.cast(node, exp.DataType.build("DOUBLE"))


def _first_pass(node: exp.Expression) -> exp.Expression:
    """Types and function names, before `_rewrite` changes the arguments."""
    if isinstance(node, exp.Div) and not node.args.get("typed"):
        # DuckDB's `/` always divides as DOUBLE (DECIMAL too); Spark divides DECIMALs exactly
        return exp.Div(this=_double(node.this), expression=_double(node.expression))
    if isinstance(node, exp.Avg) and _is_decimal_typed(node.this):
        # DuckDB averages a DECIMAL into a DOUBLE from its exact sum
        arg = node.this
        return exp.Div(
            this=_double(exp.Sum(this=arg.copy())), expression=exp.Count(this=arg.copy())
        )
    if isinstance(node, exp.PercentileCont):
        return exp.Anonymous(this="PERCENTILE", expressions=[node.this, node.expression])
    if isinstance(node, exp.RegexpFullMatch) and isinstance(node.expression, exp.Literal):
        # a full match: anchored at both ends (\z, as $ would also match before a newline)
        pattern = exp.Literal.string(f"^(?:{node.expression.this})\\z")
        return exp.RegexpLike(this=node.this, expression=pattern)
    return node


def transpile_model(sql: str) -> str:
    """A model's DuckDB select as Spark SQL, with the engine differences of this module."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    # the table's alias keeps `staging.metric_points as points` readable as `points`
    for table in list(tree.find_all(exp.Table)):
        if table.db and not table.alias:
            table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
    tree = tree.transform(_first_pass).transform(_rewrite)
    return tree.sql(dialect="spark", comments=False)


def _ddl(columns: list[list[str]]) -> str:
    parts = []
    for name, kind in columns:
        upper = kind.upper()
        spark_type = upper if upper.startswith("DECIMAL") else _SPARK_TYPES.get(upper)
        if spark_type is None:
            raise BuildError(f"the lake holds a column {name} of type {kind}, unknown to Spark")
        parts.append(f"`{name}` {spark_type}")
    return ", ".join(parts)


def spark_session(master: str | None = None) -> SparkSession:
    """A Spark session for the build: UTC, few shuffle partitions, no UI.

    `master` (else env `SPARK_MASTER`, else `local[2]`) is any Spark master URL:
    `local[4]`, `spark://host:7077`, `yarn`, `k8s://https://...`.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError(
            "the Spark engine needs pyspark: pip install 'gpucost[spark]' (and Java 17)"
        ) from None
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise ConfigError("the Spark engine needs Java 17 (e.g. Debian openjdk-17-jre-headless)")
    url = master or os.environ.get("SPARK_MASTER") or DEFAULT_MASTER
    builder = (
        SparkSession.builder.master(url)
        .appName("gpucost-build")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # DuckDB's semantics: a division by zero is NULL, not an error
        .config("spark.sql.ansi.enabled", "false")
        # timestamps written as instants (isAdjustedToUTC), as DuckDB's TIMESTAMPTZ
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    )
    if url.startswith("local"):
        # a real cluster takes its parallelism from spark-defaults.conf
        builder = builder.config("spark.sql.shuffle.partitions", str(SHUFFLE_PARTITIONS))
        builder = builder.config("spark.default.parallelism", str(SHUFFLE_PARTITIONS))
    return builder.getOrCreate()


def _register_lake(spark: SparkSession, lake: str, manifest: dict[str, Any]) -> None:
    """The lake's tables as the views `snap__*` / `meta__*`, read back as the store holds them."""
    for table in TABLES:
        columns = manifest["columns"].get(table)
        if not columns:
            raise BuildError(f"the lake {lake} has no columns for {table}: run `lake export`")
        schema = _ddl(columns)
        files = [f"{lake.rstrip('/')}/{path}" for path in manifest["files"].get(table, [])]
        base = f"{lake.rstrip('/')}/{table.replace('.', '/')}"
        if files:
            frame = spark.read.schema(schema).option("basePath", base).parquet(*files)
        else:
            frame = spark.createDataFrame([], schema)
        frame.createOrReplaceTempView(raw_view(table))
    for table in TABLES:
        select = source_select(table, manifest, "`")
        # read (and deduplicated) once, not again by every model that reads the table
        spark.sql(select).localCheckpoint().createOrReplaceTempView(view_name(table))


def _register_state(
    spark: SparkSession, lake: str, manifest: dict[str, Any], config: Config | None
) -> None:
    """The state tables the models read (`lake.STATE_TABLES`) as views `meta__*`: from the
    lake, except budgets, cost centers and suppressions when a configuration is given (they are
    configuration, as a DuckDB build writes them); an empty table when neither has it. Their
    types come from the migrations, applied to an in-memory DuckDB."""
    from pipeline.finance import write_finance_config
    from pipeline.migrate import migrations
    from pipeline.recs import sync_suppressions

    con = duck.connect(":memory:")
    try:
        for _version, _name, sql in migrations():
            con.execute(sql)
        if config is not None:
            write_finance_config(con, config)
            sync_suppressions(con, config.suppress)
        for table in STATE_TABLES:
            schema, name = table.split(".", 1)
            columns = [
                [str(c), str(k)]
                for c, k in con.execute(
                    "select column_name, data_type from information_schema.columns "
                    "where table_schema = ? and table_name = ? order by ordinal_position",
                    [schema, name],
                ).fetchall()
            ]
            ddl = _ddl(columns)
            entry = manifest.get("state", {}).get(table)
            if entry is not None and not (config is not None and table in CONFIG_TABLES):
                frame = spark.read.schema(ddl).parquet(f"{lake.rstrip('/')}/{entry['file']}")
            else:
                rows = con.execute(f"select * from {table}").fetchall()  # our own names
                frame = spark.createDataFrame(rows, ddl)
            frame.createOrReplaceTempView(view_name(table))
    finally:
        con.close()


def _parameters(thresholds: Thresholds) -> dict[str, Any]:
    values: dict[str, Any] = dataclasses.asdict(thresholds)
    values["build_from_at"] = FULL_REFRESH_FROM
    values["build_from_day_at"] = FULL_REFRESH_FROM
    return values


def build_on_spark(
    lake: str | os.PathLike[str],
    thresholds: Thresholds,
    *,
    config: Config | None = None,
    master: str | None = None,
    root: Path | None = None,
    spark: SparkSession | None = None,
) -> BuildResult:
    """Build every model from the lake on Spark (a full refresh), write each mart as Parquet
    under `<lake>/marts/<name>/`, then run the data tests; `DataTestError` when one fails.

    `lake` is a folder, or a URL that Spark reads and writes (`s3a://bucket/gpucost`, with the
    hadoop-aws package and credentials from the environment; its manifest is then read with
    pyarrow's file systems, `s3a://` as `s3://`). See docs/spark.md.
    """
    started = time.perf_counter()
    lake_text = os.fspath(lake)
    if "://" in lake_text and not lake_text.startswith("file://"):
        base = lake_text.rstrip("/")
        manifest = _read_remote_manifest(base)
    else:
        folder = Path(lake_text.removeprefix("file://"))
        if not (folder / MANIFEST).exists():
            raise ConfigError(f"{folder} is not a lake: run `gpucost lake export` first")
        manifest = read_manifest(folder)
        base = str(folder.resolve())
    if not manifest["runs"]:
        raise BuildError("the lake holds no runs yet: run `gpucost lake export` after a snapshot")
    models = discover_models(root)
    tests = discover_tests(root)
    session = spark or spark_session(master)
    try:
        _register_state(session, base, manifest, config)
        return _build(session, base, manifest, thresholds, models, tests, started)
    finally:
        if spark is None:
            session.stop()


def _build(
    session: SparkSession,
    base: str,
    manifest: dict[str, Any],
    thresholds: Thresholds,
    models: list[Model],
    tests: list[Path],
    started: float,
) -> BuildResult:
    result = BuildResult(full_refresh=True)
    _register_lake(session, base, manifest)
    params = _parameters(thresholds)
    scope = (
        "select cluster_id, :build_from_at as from_at, cast(:build_from_at as date) as from_day "
        "from (select cluster_id from snap__cluster_snapshots "
        "union select cluster_id from snap__metric_points)"
    )
    session.sql(scope, args=params).createOrReplaceTempView("_gpucost_scope")
    for model in models:
        model_started = time.perf_counter()
        try:
            frame = session.sql(transpile_model(model.sql), args=params)
            if model.layer == "marts":
                frame = _write_mart(session, frame, f"{base}/marts/{model.name}")
            else:
                # every model computed once (DuckDB's views are re-read by each consumer, cheap
                # there; on Spark a view read by five models would be computed five times)
                frame = frame.localCheckpoint()
            frame.createOrReplaceTempView(view_name(model.relation))
        except Exception as exc:
            if type(exc).__module__.startswith(("pyspark", "py4j")):
                raise BuildError(
                    f"model {model.relation} ({model.path}) failed on Spark: {exc}"
                ) from exc
            raise
        result.models_built.append(model.relation)
        result.model_seconds[model.relation] = time.perf_counter() - model_started
    failures = []
    for path in tests:
        sql = path.read_text(encoding="utf-8").strip().rstrip(";")
        rows = session.sql(transpile_model(sql), args=params).take(MAX_FAILING_ROWS_SHOWN)
        if rows:
            shown = "\n".join(f"    {row.asDict()}" for row in rows)
            failures.append(f"{path.stem}: failing rows\n{shown}")
        else:
            result.tests_passed += 1
    if failures:
        raise DataTestError(
            f"{len(failures)} data test(s) failed on Spark:\n" + "\n".join(failures)
        )
    for model in models:
        if model.layer == "marts":
            result.rows_per_mart[model.name] = session.table(view_name(model.relation)).count()
    result.seconds = time.perf_counter() - started
    return result


def _read_remote_manifest(url: str) -> dict[str, Any]:
    """The manifest of a lake in an object store (never exercised by the tests: no network)."""
    import json

    from pyarrow import fs

    scheme, rest = url.split("://", 1)
    filesystem, path = fs.FileSystem.from_uri(f"{'s3' if scheme == 's3a' else scheme}://{rest}")
    try:
        with filesystem.open_input_stream(f"{path}/{MANIFEST}") as stream:
            manifest: dict[str, Any] = json.loads(stream.read())
    except (OSError, ValueError) as exc:
        raise LakeError(f"{url}/{MANIFEST}: unreadable manifest: {exc}") from None
    return manifest


def _write_mart(spark: SparkSession, frame: DataFrame, path: str) -> DataFrame:
    """Write a mart as Parquet (replacing the last build's) and read it back."""
    frame.write.mode("overwrite").parquet(path)
    return spark.read.parquet(path)
