"""The build stage: run the SQL models of `sql/` in dependency order, then their data tests.

A model is one file holding one `select`; its folder is its layer and its DuckDB schema, its
file name the relation's name (`sql/marts/fleet_daily.sql` -> `marts.fleet_daily`). Staging and
intermediate models are views, marts are tables; a first-line comment `-- materialized: table`
makes any model a table. The build order comes from the models' own table references (parsed
with sqlglot), never from a hand-kept list: a cycle, or a reference to a model that does not
exist, is a `BuildError` naming the files.

Thresholds reach SQL as DuckDB variables named after `pipeline.config.Thresholds` fields
(`getvariable('idle_threshold_pct')`), set through bound parameters, never pasted into SQL text.

The whole build, data tests included, is one transaction: when a data test in `sql/tests/`
returns rows, the transaction is rolled back (the marts stay as the last good build) and
`DataTestError` shows the failing rows.

Incremental builds: a mart whose file starts with `-- incremental: day` is rebuilt only for the
UTC days touched by runs not yet built (recorded in `marts.build_runs`); `full_refresh=True`, a
new mart, or a changed model file rebuilds it from all history. Both give identical tables.
"""

from __future__ import annotations

import dataclasses
import graphlib
import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import sqlglot
from sqlglot import exp

from pipeline.config import Config, Thresholds
from pipeline.errors import ConfigError, DataTestError, GpucostError
from pipeline.resources import sql_dir

log = logging.getLogger(__name__)

LAYERS = ("staging", "intermediate", "marts")
SOURCE_SCHEMAS = ("snap", "meta")
MAX_FAILING_ROWS_SHOWN = 10


class BuildError(GpucostError):
    """The models cannot be built: a cycle, an unknown reference, or a model that fails."""


@dataclass(frozen=True)
class Model:
    """One SQL model: `layer.name`, its select, how it is materialized and what it reads."""

    layer: str
    name: str
    path: Path
    sql: str
    materialized: str  # view | table
    incremental_key: str | None  # e.g. "day" for `-- incremental: day`
    depends_on: frozenset[str]
    lineage: str = ""  # hash of this model's text and of everything it reads, transitively

    @property
    def relation(self) -> str:
        """The DuckDB relation the model creates, `layer.name`."""
        return f"{self.layer}.{self.name}"


@dataclass
class BuildResult:
    """What a build did: models in order, data tests passed, rows per mart, seconds."""

    models_built: list[str] = field(default_factory=list)
    tests_passed: int = 0
    rows_per_mart: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    full_refresh: bool = False
    incremental_marts: list[str] = field(default_factory=list)
    model_seconds: dict[str, float] = field(default_factory=dict)

    def summary_line(self) -> str:
        """One line for the log: counts, rows per mart and elapsed time."""
        rows = ", ".join(f"{name}={count}" for name, count in sorted(self.rows_per_mart.items()))
        mode = "full refresh" if self.full_refresh else "incremental"
        return (
            f"build ({mode}): {len(self.models_built)} models, {self.tests_passed} data tests "
            f"passed, marts: {rows} in {self.seconds:.1f} s"
        )


def _header_value(sql: str, key: str) -> str | None:
    """The value of a `-- key: value` comment among the file's leading comment lines."""
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        body = stripped[2:].strip()
        if body.lower().startswith(f"{key}:"):
            return body.split(":", 1)[1].strip().lower()
    return None


def _references(sql: str, path: Path) -> set[str]:
    """Every `schema.table` the select reads (CTE names have no schema and are skipped)."""
    cached = _REFERENCES_CACHE.get(sql)
    if cached is None:
        cached = _parse_references(sql, path)
        _REFERENCES_CACHE[sql] = cached
    return set(cached)


# parsing is the slow part of planning a build; a model's text decides its references
_REFERENCES_CACHE: dict[str, frozenset[str]] = {}


def _parse_references(sql: str, path: Path) -> frozenset[str]:
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise BuildError(f"{path}: does not parse: {exc}") from None
    refs = set()
    for table in tree.find_all(exp.Table):
        if table.db:
            refs.add(f"{table.db.lower()}.{table.name.lower()}")
    return frozenset(refs)


def discover_models(root: Path | None = None) -> list[Model]:
    """Read every model under `root` (default: the project's `sql/`), in build order.

    Raises `BuildError` on a cycle or on a reference to a model or schema that does not exist.
    """
    root = sql_dir() if root is None else root
    found: dict[str, tuple[str, str, Path, str]] = {}
    for layer in LAYERS:
        for path in sorted((root / layer).glob("*.sql")):
            sql = path.read_text(encoding="utf-8")
            found[f"{layer}.{path.stem}"] = (layer, path.stem, path, sql)
    models: dict[str, Model] = {}
    for relation, (layer, name, path, sql) in found.items():
        refs = _references(sql, path)
        deps = set()
        for ref in refs:
            schema = ref.split(".", 1)[0]
            if schema in SOURCE_SCHEMAS:
                continue
            if ref not in found:
                raise BuildError(f"{path}: reads {ref}, which is neither a model nor a source")
            deps.add(ref)
        default = "table" if layer == "marts" else "view"
        materialized = _header_value(sql, "materialized") or default
        if materialized not in ("view", "table"):
            raise BuildError(f"{path}: materialized must be view or table, got {materialized}")
        models[relation] = Model(
            layer=layer,
            name=name,
            path=path,
            sql=sql,
            materialized=materialized,
            incremental_key=_header_value(sql, "incremental"),
            depends_on=frozenset(deps),
        )
    sorter = graphlib.TopologicalSorter({r: sorted(m.depends_on) for r, m in models.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise BuildError(f"the models form a cycle: {cycle}") from None
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order.extend(ready)
        sorter.done(*ready)
    ordered: list[Model] = []
    lineages: dict[str, str] = {}
    for relation in order:
        model = models[relation]
        text = model.sql + "".join(lineages[d] for d in sorted(model.depends_on))
        lineages[relation] = hashlib.sha256(text.encode()).hexdigest()[:16]
        ordered.append(dataclasses.replace(model, lineage=lineages[relation]))
    return ordered


def discover_tests(root: Path | None = None) -> list[Path]:
    """The data tests under `root/tests` (default: the project's `sql/tests/`)."""
    root = sql_dir() if root is None else root
    return sorted((root / "tests").glob("*.sql"))


def set_threshold_variables(con: duckdb.DuckDBPyConnection, thresholds: Thresholds) -> None:
    """Make every threshold a DuckDB variable, `getvariable('<field name>')`, as a parameter."""
    for item in dataclasses.fields(thresholds):
        # names come from our own dataclass, values are bound: nothing from outside is pasted
        con.execute(f"set variable {item.name} = ?", [getattr(thresholds, item.name)])


def _strip_trailing_semicolon(sql: str) -> str:
    return sql.strip().rstrip(";").strip()


def _relation_exists(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    row = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, name],
    ).fetchone()
    return bool(row and row[0])


def _ensure_state_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "create table if not exists marts.build_runs ("
        "run_id varchar primary key, built_at timestamptz not null)"
    )
    con.execute(
        "create table if not exists marts.build_models ("
        "relation varchar primary key, checksum varchar not null, built_at timestamptz not null)"
    )


def _unbuilt_runs(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "select distinct run_id from snap.cluster_snapshots "
        "where run_id not in (select run_id from marts.build_runs) order by run_id"
    ).fetchall()
    return [r[0] for r in rows]


def _touched_days_sql() -> str:
    """The UTC days whose buckets or snapshots were written by runs not built yet."""
    return (
        "select distinct day from staging.metric_points "
        "where run_id in (select run_id from _gpucost_new_runs) "
        "union select distinct snapshot_day from staging.cluster_snapshots "
        "where run_id in (select run_id from _gpucost_new_runs)"
    )


def _checksum(model: Model, thresholds: Thresholds) -> str:
    """What an incremental mart was built from: its SQL lineage and the thresholds."""
    text = model.lineage + repr(dataclasses.astuple(thresholds))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _build_model(
    con: duckdb.DuckDBPyConnection,
    model: Model,
    *,
    full_refresh: bool,
    checksum: str,
    built: dict[str, str],
    existing: dict[str, str],
) -> bool:
    """Create or refresh one model; True when an incremental mart was updated in place."""
    select = _strip_trailing_semicolon(model.sql)
    target = f'"{model.layer}"."{model.name}"'
    if model.materialized == "view":
        _create_or_replace(
            con, "view", model, f"create or replace view {target} as {select}", existing
        )
        return False
    incremental = (
        model.incremental_key is not None
        and not full_refresh
        and built.get(model.relation) == checksum
        and existing.get(model.relation) == "table"
    )
    if incremental:
        key = model.incremental_key
        con.execute(f'delete from {target} where "{key}" in (select day from _gpucost_days)')
        con.execute(
            f"insert into {target} select * from ({select}) as model "
            f'where model."{key}" in (select day from _gpucost_days)'
        )
        return True
    _create_or_replace(
        con, "table", model, f"create or replace table {target} as {select}", existing
    )
    return False


def _existing_relations(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """`schema.name` -> "table" | "view" for every relation of the model layers."""
    rows = con.execute(
        "select schema_name || '.' || table_name, 'table' from duckdb_tables() "
        "union all select schema_name || '.' || view_name, 'view' from duckdb_views() "
        "where not internal"
    ).fetchall()
    return {name: kind for name, kind in rows}


def _create_or_replace(
    con: duckdb.DuckDBPyConnection,
    kind: str,
    model: Model,
    statement: str,
    existing: dict[str, str],
) -> None:
    """Run a `create or replace`, first dropping a relation of the other kind by that name
    (a failed statement would abort the build's transaction, so ask before, not after)."""
    other = existing.get(model.relation)
    if other is not None and other != kind:
        con.execute(f'drop {other} "{model.layer}"."{model.name}"')
    con.execute(statement)
    existing[model.relation] = kind


def _run_tests(con: duckdb.DuckDBPyConnection, tests: Iterable[Path]) -> tuple[int, list[str]]:
    passed = 0
    failures = []
    for path in tests:
        sql = _strip_trailing_semicolon(path.read_text(encoding="utf-8"))
        try:
            cursor = con.execute(sql)
        except duckdb.Error as exc:
            # the error aborts the build's transaction: the remaining tests cannot run
            failures.append(f"{path.stem}: the test itself fails: {exc}")
            break
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchmany(MAX_FAILING_ROWS_SHOWN + 1)
        if not rows:
            passed += 1
            continue
        total = con.execute(f"select count(*) from ({sql}) as failing").fetchone()
        shown = "\n".join(
            "    " + ", ".join(f"{c}={v!r}" for c, v in zip(columns, row, strict=True))
            for row in rows[:MAX_FAILING_ROWS_SHOWN]
        )
        count = total[0] if total else len(rows)
        failures.append(f"{path.stem}: {count} failing rows\n{shown}")
    return passed, failures


def build_on_connection(
    con: duckdb.DuckDBPyConnection,
    thresholds: Thresholds,
    *,
    full_refresh: bool = False,
    root: Path | None = None,
) -> BuildResult:
    """Build every model and run the data tests on an open connection, in one transaction."""
    started = time.perf_counter()
    models = discover_models(root)
    tests = discover_tests(root)
    result = BuildResult(full_refresh=full_refresh)
    if not _relation_exists(con, "snap", "cluster_snapshots"):
        raise BuildError("the database has no snapshots yet: run `gpucost snapshot` first")
    con.execute("set TimeZone = 'UTC'")
    set_threshold_variables(con, thresholds)
    con.execute("begin transaction")
    try:
        for layer in LAYERS:
            con.execute(f'create schema if not exists "{layer}"')
        _ensure_state_tables(con)
        built = dict(con.execute("select relation, checksum from marts.build_models").fetchall())
        new_runs = _unbuilt_runs(con)
        existing = _existing_relations(con)
        con.execute("create or replace temp table _gpucost_new_runs (run_id varchar)")
        if new_runs:
            con.executemany("insert into _gpucost_new_runs values (?)", [[r] for r in new_runs])
        days_ready = False
        for model in models:
            if model.materialized == "table" and model.incremental_key and not days_ready:
                con.execute(f"create or replace temp table _gpucost_days as {_touched_days_sql()}")
                days_ready = True
            checksum = _checksum(model, thresholds)
            model_started = time.perf_counter()
            try:
                if _build_model(
                    con,
                    model,
                    full_refresh=full_refresh,
                    checksum=checksum,
                    built=built,
                    existing=existing,
                ):
                    result.incremental_marts.append(model.relation)
            except duckdb.Error as exc:
                raise BuildError(f"model {model.relation} ({model.path}) failed: {exc}") from exc
            result.models_built.append(model.relation)
            result.model_seconds[model.relation] = time.perf_counter() - model_started
            con.execute(
                "insert or replace into marts.build_models values (?, ?, now())",
                [model.relation, checksum],
            )
        if new_runs:
            con.executemany(
                "insert or replace into marts.build_runs values (?, now())",
                [[r] for r in new_runs],
            )
        passed, failures = _run_tests(con, tests)
        if failures:
            raise DataTestError(
                f"{len(failures)} data test(s) failed; the marts keep the last good build:\n"
                + "\n".join(failures)
            )
        result.tests_passed = passed
        for model in models:
            if model.layer == "marts":
                row = con.execute(f'select count(*) from "marts"."{model.name}"').fetchone()
                result.rows_per_mart[model.name] = int(row[0]) if row else 0
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        con.execute("drop table if exists _gpucost_new_runs")
        con.execute("drop table if exists _gpucost_days")
    result.seconds = time.perf_counter() - started
    # the CLI prints the summary line; the log keeps the per-model timings for diagnosis
    log.debug("%s; slowest models: %s", result.summary_line(), _slowest(result.model_seconds))
    return result


def _slowest(seconds: dict[str, float], count: int = 3) -> str:
    ranked = sorted(seconds.items(), key=lambda item: -item[1])[:count]
    return ", ".join(f"{name} {value:.2f} s" for name, value in ranked)


def build_models(config: Config, *, full_refresh: bool = False) -> BuildResult:
    """Build the marts from the snapshots in `config.store.db`, then run the data tests.

    Incremental by default (only the days touched by runs not yet built); `full_refresh`
    rebuilds every mart from all history. Raises `DataTestError` (marts unchanged) when a data
    test returns rows, `BuildError` when a model cannot be built, `ConfigError` (exit 2) when
    the database does not exist, `LockedError` (exit 5) when another run holds its lock.
    """
    from pipeline.store import Store

    path = Path(config.store.db)
    if not path.exists():
        raise ConfigError(f"database {path} does not exist: run `gpucost snapshot` first")
    # the store's lock keeps a snapshot from writing while the marts are rebuilt (exit 5 if
    # one is running); it is held for the build only
    with Store.open(path) as store:
        return build_on_connection(store.con, config.thresholds, full_refresh=full_refresh)
