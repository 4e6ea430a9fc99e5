"""The build stage: run the SQL models of `sql/` in dependency order, then their data tests.

A model is one file holding one `select`; its folder is its layer and its DuckDB schema, its
file name the relation's name (`sql/marts/fleet_daily.sql` -> `marts.fleet_daily`). Staging and
intermediate models are views, marts are tables; a first-line comment `-- materialized: table`
makes any model a table. The build order comes from the models' own table references (parsed
with sqlglot), never from a hand-kept list: a cycle, or a reference to a model that does not
exist, is a `BuildError` naming the files.

Thresholds reach SQL as DuckDB variables named after `pipeline.config.Thresholds` fields
(`getvariable('idle_threshold_pct')`), set through bound parameters, never pasted into SQL text.

Each mart declares its columns beside its file (`sql/marts/<name>.toml`, `pipeline.contracts`):
a mart built with other names, order or types fails the build, naming the mart and the column.

The whole build, data tests included, is one transaction: when a data test in `sql/tests/`
returns rows, the transaction is rolled back (the marts stay as the last good build) and
`DataTestError` shows the failing rows.

Incremental builds: the runs not yet built (not in `marts.build_runs`) decide a scope, the
temporary table `_gpucost_scope(cluster_id, from_at, from_day)`: per cluster, the first instant
whose rows may have changed (the first bucket the new runs wrote, and the span of buckets whose
nearest snapshot a new snapshot changed, and at least its latest 7-day window); every cluster is
in it from the newest snapshot already built, so that projections whose horizon has just elapsed
are scored. A table model whose file starts with

    -- incremental: per cluster where <predicate>     (or `fleet where <predicate>`)

keeps its rows outside the scope and recomputes the rest: the rows of a scoped cluster (or, for
`fleet`, the rows at all) for which the predicate over the model's columns and the scope's
`from_at` / `from_day` holds are deleted, and the model's rows for which it holds are inserted.
A model may read `_gpucost_scope` and the variables `build_from_at` / `build_from_day_at` (the
earliest `from_at` / `from_day` of the scope) to compute only what is needed; only tables may,
as they exist only during a build. `full_refresh=True`, a new model or a changed model file or
threshold rebuilds from all history (the scope is then every cluster from -infinity). Both give
identical tables.

Bounded memory: a full refresh of more than `BATCH_BUCKETS` buckets runs the per-cluster
tables batch by batch of clusters through the same scope, the staging views over
`BATCHED_SOURCES` reading only the batch's rows, then the fleet-wide and other tables once
(`_build_batched`). Linear time: the history is stored night by night, so every row group holds
every cluster and a filter by batch would read the whole history once per batch; instead the
batched sources are written once, in one pass, as Parquet partitioned by batch number into a
private temporary folder beside the database, and each batch reads its own partition; the
intermediate views that read no batched source (the nearest-snapshot ranges of the whole fleet)
are computed once, as tables, for all batches. An incremental build whose scope holds more
than `INCREMENTAL_BATCH_BUCKETS` buckets (a large fleet's night) updates the per-cluster tables
batch by batch of the scope's clusters the same way, the scope narrowed to the batch and the
staging views over `BATCHED_SOURCES` filtered to the batch's clusters, reading the sources
themselves (its scope is recent: the time-ordered row groups before it are skipped)
(`_build_incremental_batched`). Either way a per-cluster model reads only views and
other per-cluster tables (`_check_batchable`), and must take its fleet-wide figures from
sources other than `BATCHED_SOURCES` (as `projection_actuals` takes the fleet's newest snapshot
from `cluster_snapshots`); tests/test_models_e2e.py compares both ways mart by mart. The build runs
under DuckDB's `memory_limit` (`BUILD_MEMORY_LIMIT`), spilling past it.
"""

from __future__ import annotations

import dataclasses
import graphlib
import hashlib
import logging
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import sqlglot
from sqlglot import exp

from pipeline import contracts
from pipeline.config import Config, Thresholds
from pipeline.errors import ConfigError, DataTestError, GpucostError
from pipeline.resources import sql_dir

log = logging.getLogger(__name__)

LAYERS = ("staging", "intermediate", "marts")
SOURCE_SCHEMAS = ("snap", "meta")
MAX_FAILING_ROWS_SHOWN = 10
# DuckDB settings of the build stage. Insertion order is not preserved: no mart relies on the
# order rows were written in (readers sort), and keeping it holds rows in memory. The memory
# limit holds because a full refresh runs in batches of clusters: on 1,000 clusters x 365 days
# it peaked at 7.1 GB RSS in one piece, and under a 1.5 GB cap spilled more than 10 GB to
# `<db>.tmp` without finishing; in batches, 1.8 GB RSS under the cap, 2.7 GB without it
# (bench/build.py, bench/README.md). DuckDB spills past the limit to `<db>.tmp`.
BUILD_MEMORY_LIMIT = "1536MB"
BUILD_SETTINGS: tuple[tuple[str, object], ...] = (
    ("preserve_insertion_order", False),
    ("memory_limit", BUILD_MEMORY_LIMIT),
)
# A build runs the per-cluster models in batches of clusters holding at most this many buckets
# (`snap.metric_points` rows; for an incremental build, the buckets of its scope), so that its
# memory follows the batch, not the fleet: a year of 1,000 clusters (8.9 M buckets, 68 M per-GPU
# rows) peaked at 7.1 GB fully refreshed in one piece, and the nightly incremental build of
# 10,000 clusters (1.7 M buckets in its scope) failed in one piece under the 1.5 GB limit.
BATCH_BUCKETS = 1_500_000
# An incremental build's batches are smaller: each batch reads the sources themselves (filtered
# to its clusters), not a partition written for it. Measured on 1,000 clusters x 365 days, the
# night's scope (192,000 buckets) needs 150-200 MB in one piece; 10,000 clusters' scope (1.7 M
# buckets) failed in one piece under the 1.5 GB limit.
INCREMENTAL_BATCH_BUCKETS = 500_000
# The source tables whose staging views a batch restricts to its clusters: the volume of the
# history (every bucket, every GPU reading, every projection). Fleet-wide figures the models
# take from other tables (the newest snapshot of the fleet, the runs) stay whole.
BATCHED_SOURCES = frozenset({"snap.metric_points", "snap.gpu_metric_points", "snap.projections"})


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
    incremental_key: str | None  # e.g. "per cluster where day >= from_day"
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
    batches: int = 1  # a full refresh of a large history runs in batches of clusters

    def summary_line(self) -> str:
        """One line for the log: counts, rows per mart and elapsed time."""
        rows = ", ".join(f"{name}={count}" for name, count in sorted(self.rows_per_mart.items()))
        mode = "full refresh" if self.full_refresh else "incremental"
        return (
            f"build ({mode}): {len(self.models_built)} models, {self.tests_passed} data tests "
            f"passed, marts: {rows} in {self.seconds:.1f} s"
        )


def _header_value(sql: str, key: str, *, lower: bool = True) -> str | None:
    """The value of a `-- key: value` comment among the file's leading comment lines."""
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        body = stripped[2:].strip()
        if body.lower().startswith(f"{key}:"):
            value = body.split(":", 1)[1].strip()
            return value.lower() if lower else value
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


_BUILD_ONLY_NAMES = (
    "_gpucost_scope",
    "build_from_at",
    "build_from_day_at",
    "build_batch_from",
    "build_batch_to",
)
_INCREMENTAL = re.compile(r"^(per cluster|fleet) where (.+)$", re.IGNORECASE)


def _incremental_header(sql: str, path: Path) -> str | None:
    value = _header_value(sql, "incremental", lower=False)
    if value is None:
        return None
    if not _INCREMENTAL.match(value):
        raise BuildError(
            f"{path}: `-- incremental:` must be `per cluster where <predicate>` or "
            f"`fleet where <predicate>`, got {value!r}"
        )
    return value


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
        if materialized == "view" and any(name in sql for name in _BUILD_ONLY_NAMES):
            # a view is read after the build too, when the scope no longer exists
            raise BuildError(f"{path}: only a table may read the build's scope")
        models[relation] = Model(
            layer=layer,
            name=name,
            path=path,
            sql=sql,
            materialized=materialized,
            incremental_key=_incremental_header(sql, path),
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
        "run_id varchar primary key, built_at timestamptz not null, fingerprint varchar)"
    )
    # databases built before fingerprints: their runs count as not built once
    con.execute("alter table marts.build_runs add column if not exists fingerprint varchar")
    con.execute(
        "create table if not exists marts.build_models ("
        "relation varchar primary key, checksum varchar not null, built_at timestamptz not null)"
    )


# What a run wrote, in one number per table: a run rewritten after it was built (a replay,
# `snapshot --from-raw`) counts as not built. XOR of row hashes does not depend on row order.
_FINGERPRINT_SQL = """
create or replace temp table _gpucost_fingerprints as
select run_id, string_agg(part, '/' order by part) as fingerprint
from (
    select run_id, 's' || count(*) || ':' || bit_xor(hash(
        cluster_id, snapshot_at, status, gpu_count, hourly_rate, total_cost_to_date
    )) as part
    from snap.cluster_snapshots group by run_id
    union all
    select run_id, 'p' || count(*) || ':' || bit_xor(hash(
        cluster_id, bucket_at, snapshot_at, status, gpu_utilization, cost, gpu_series_count
    )) as part
    from snap.metric_points group by run_id
)
group by run_id
"""


def _unbuilt_runs(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Runs with snapshots that were not built, or were rewritten since they were."""
    con.execute(_FINGERPRINT_SQL)
    rows = con.execute(
        "select f.run_id from _gpucost_fingerprints as f "
        "where f.run_id in (select run_id from snap.cluster_snapshots) "
        "and not exists (select 1 from marts.build_runs as b "
        "where b.run_id = f.run_id and b.fingerprint = f.fingerprint) order by f.run_id"
    ).fetchall()
    return [r[0] for r in rows]


# The scope of an incremental build (see the module docstring). DuckDB SQL over the `snap`
# tables, as the views of `staging` may not exist yet when it runs. `bills_gpus` follows
# sql/intermediate/snapshot_rates.sql: a GPU component above 0 and GPUs.
_SCOPE_SQL = """
with

new_runs as (select run_id from _gpucost_new_runs),

touched as (
    select distinct cluster_id from snap.cluster_snapshots
    where run_id in (select run_id from new_runs)
),

gpu_rates as (
    select cluster_id, snapshot_at, sum(cost_per_hour) as gpu_per_hour
    from snap.cost_components
    where lower(component) = 'gpu' and cluster_id in (select cluster_id from touched)
    group by cluster_id, snapshot_at
),

snapshots as (
    select
        s.cluster_id,
        s.snapshot_at,
        s.run_id in (select run_id from new_runs) as is_new,
        coalesce(g.gpu_per_hour > 0, false) and s.gpu_count > 0 as bills_gpus,
    from snap.cluster_snapshots as s
    left join gpu_rates as g
        on g.cluster_id = s.cluster_id and g.snapshot_at = s.snapshot_at
    where s.cluster_id in (select cluster_id from touched)
),

ordered as (
    select
        *,
        lag(snapshot_at) over w as previous_at,
        max(case when bills_gpus then snapshot_at end) over (
            w rows between unbounded preceding and 1 preceding
        ) as previous_billing_at,
        max(snapshot_at) over (partition by cluster_id) as last_at,
        max(case when not is_new then snapshot_at end) over (
            partition by cluster_id
        ) as last_built_at,
    from snapshots
    window w as (partition by cluster_id order by snapshot_at)
),

-- a new snapshot changes which snapshot is nearest from the midpoint with the previous one
-- (of its family); the latest 7-day window is always recomputed
from_snapshots as (
    select
        cluster_id,
        min(least(
            case
                when bills_gpus then coalesce(previous_billing_at, '-infinity'::timestamptz)
                else coalesce(previous_at, '-infinity'::timestamptz)
            end,
            date_trunc('hour', last_at) - to_hours(168),
            -- the evidence of the latest snapshot built before is replaced
            coalesce(date_trunc('hour', last_built_at) - to_hours(1), 'infinity'::timestamptz)
        )) as from_at,
        min(date_trunc('hour', snapshot_at)) - to_hours(1) as first_new_hour,
    from ordered
    where is_new
    group by cluster_id
),

-- without an earlier snapshot the new one reaches back to the cluster's first bucket
first_buckets as (
    select cluster_id, min(bucket_at) as first_bucket_at
    from snap.metric_points
    where cluster_id in (
        select cluster_id from from_snapshots where from_at = '-infinity'::timestamptz
    )
    group by cluster_id
),

from_new_snapshots as (
    select
        f.cluster_id,
        case
            when f.from_at = '-infinity'::timestamptz and b.first_bucket_at is not null
                then least(b.first_bucket_at, f.first_new_hour)
            else f.from_at
        end as from_at,
    from from_snapshots as f
    left join first_buckets as b on b.cluster_id = f.cluster_id
),

from_points as (
    select cluster_id, min(bucket_at) as from_at
    from snap.metric_points
    where run_id in (select run_id from new_runs)
    group by cluster_id
),

-- every cluster from the newest snapshot built before: horizons that elapse now get scored,
-- a cluster a new run no longer sees gets its deletion
everyone as (
    select distinct cluster_id, cast(? as timestamptz) as from_at
    from snap.cluster_snapshots
),

combined as (
    select * from from_new_snapshots
    union all select * from from_points
    union all select * from everyone
)

select cluster_id, min(from_at) as from_at, cast(min(from_at) as date) as from_day
from combined
group by cluster_id
"""

# Every cluster from the beginning: what a full refresh computes.
_FULL_SCOPE_SQL = """
select cluster_id, '-infinity'::timestamptz as from_at, '-infinity'::date as from_day
from (
    select cluster_id from snap.cluster_snapshots
    union select cluster_id from snap.metric_points
)
"""


def _make_scope(con: duckdb.DuckDBPyConnection, *, full: bool) -> None:
    """Create `_gpucost_scope` and the variables `build_from_at` / `build_from_day_at`."""
    if full:
        con.execute(f"create or replace temp table _gpucost_scope as {_FULL_SCOPE_SQL}")
    else:
        row = con.execute(
            "select max(snapshot_at) from snap.cluster_snapshots "
            "where run_id in (select run_id from marts.build_runs)"
        ).fetchone()
        built_until = "-infinity" if row is None or row[0] is None else row[0]
        con.execute(f"create or replace temp table _gpucost_scope as {_SCOPE_SQL}", [built_until])
    # an empty scope: nothing to recompute
    con.execute(
        "set variable build_from_at = (select coalesce(min(from_at), 'infinity'::timestamptz) "
        "from _gpucost_scope)"
    )
    con.execute(
        "set variable build_from_day_at = (select coalesce(cast(cast(min(from_at) as date) "
        "as timestamptz), 'infinity'::timestamptz) from _gpucost_scope)"
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
        assert model.incremental_key is not None
        match = _INCREMENTAL.match(model.incremental_key)
        assert match is not None
        kind, predicate = match.group(1).lower(), match.group(2)
        if kind == "per cluster":
            con.execute(
                f"delete from {target} using _gpucost_scope "
                f"where {target}.cluster_id = _gpucost_scope.cluster_id and ({predicate})"
            )
            con.execute(
                f"insert into {target} select model.* from ({select}) as model "
                "semi join _gpucost_scope "
                f"on model.cluster_id = _gpucost_scope.cluster_id and ({predicate})"
            )
        else:
            bounds = (
                "(select min(from_at) as from_at, min(from_day) as from_day "
                "from _gpucost_scope) as _gpucost_bounds"
            )
            con.execute(f"delete from {target} using {bounds} where ({predicate})")
            con.execute(
                f"insert into {target} select model.* from ({select}) as model, {bounds} "
                f"where ({predicate})"
            )
        return True
    _create_or_replace(
        con, "table", model, f"create or replace table {target} as {select}", existing
    )
    return False


def _cluster_batches(
    con: duckdb.DuckDBPyConnection, limit: int, *, scoped: bool = False
) -> list[tuple[str, str]]:
    """The clusters cut into contiguous ranges `(first, last)` of sorted ids, each holding at
    most `limit` buckets (or one cluster, when one alone holds more); `scoped`: the clusters of
    `_gpucost_scope` and their buckets from the scope's `from_at` on (an incremental build)."""
    if scoped:
        rows = con.execute(
            "select scope.cluster_id, count(points.bucket_at) from _gpucost_scope as scope "
            "left join (select cluster_id, bucket_at from snap.metric_points "
            "where bucket_at >= getvariable('build_from_at')) as points "
            "on points.cluster_id = scope.cluster_id and points.bucket_at >= scope.from_at "
            "group by scope.cluster_id order by scope.cluster_id"
        ).fetchall()
    else:
        rows = con.execute(
            "select cluster_id, coalesce(count(bucket_at), 0) from ("
            "select cluster_id, null::timestamptz as bucket_at from snap.cluster_snapshots "
            "union all select cluster_id, bucket_at from snap.metric_points) "
            "group by cluster_id order by cluster_id"
        ).fetchall()
    batches: list[tuple[str, str]] = []
    first: str | None = None
    last = ""
    held = 0
    for cluster_id, buckets in rows:
        if first is not None and held + buckets > limit:
            batches.append((first, last))
            first, held = None, 0
        if first is None:
            first = cluster_id
        last = cluster_id
        held += buckets
    if first is not None:
        batches.append((first, last))
    return batches


_SOURCE_REFERENCE = {
    source: re.compile(rf"\b{re.escape(source)}\b", re.IGNORECASE) for source in BATCHED_SOURCES
}


def _batch_source(source: str, number: int, folder: Path | None) -> str:
    """What a batched staging view reads instead of `source` in batch `number`: the batch's
    Parquet partition (`_partition_sources`), or no rows when the batch has none; without a
    folder (an incremental build's batches), the source itself, which the batch's range of
    clusters then filters."""
    if folder is None:
        return source
    part = folder / source.split(".", 1)[1] / f"_gpucost_batch={number}"
    if part.is_dir():
        glob = _sql_text(str(part / "*.parquet"))
        return f"read_parquet('{glob}', hive_partitioning = false)"
    return f"(select * from {source} where false)"


def _batched_select(model: Model, number: int = 0, folder: Path | None = None) -> str:
    """A staging model over a batched source, reading batch `number`'s rows only: the source
    is replaced by the batch's partition (or, without a folder, kept), and the batch's range
    of clusters is kept as a filter too."""
    select = _strip_trailing_semicolon(model.sql)
    for source, reference in _SOURCE_REFERENCE.items():
        # a replacement string, not a template: backslashes in a path stay as they are
        select = reference.sub(_batch_source(source, number, folder).replace("\\", "\\\\"), select)
    return (
        f"select * from ({select}) as batched where batched.cluster_id "
        "between getvariable('build_batch_from') and getvariable('build_batch_to')"
    )


def _database_folder(con: duckdb.DuckDBPyConnection) -> Path | None:
    row = con.execute(
        "select path from duckdb_databases() where database_name = current_database()"
    ).fetchone()
    return Path(row[0]).resolve().parent if row and row[0] else None


def _partition_sources(
    con: duckdb.DuckDBPyConnection, batches: list[tuple[str, str]], folder: Path
) -> None:
    """Write every batched source once as Parquet partitioned by batch number (one pass, no
    sort), so that each batch then reads its own rows only: filtering the whole source for
    every batch would read the history once per batch (quadratic in the fleet, as the history
    is stored night by night and every row group holds every cluster)."""
    con.execute(
        "create or replace temp table _gpucost_batch_ranges "
        "(batch_no integer, first_id varchar, last_id varchar)"
    )
    con.executemany(
        "insert into _gpucost_batch_ranges values (?, ?, ?)",
        [[number, first, last] for number, (first, last) in enumerate(batches)],
    )
    # every cluster of every batched source, with its batch (a range join of a few thousand
    # ids, not of the history)
    ids = " union ".join(f"select distinct cluster_id from {s}" for s in sorted(BATCHED_SOURCES))
    con.execute(
        "create or replace temp table _gpucost_batch_of as "
        "select ids.cluster_id, ranges.batch_no "
        f"from ({ids}) as ids join _gpucost_batch_ranges as ranges "
        "on ids.cluster_id between ranges.first_id and ranges.last_id"
    )
    for source in sorted(BATCHED_SOURCES):
        target = folder / source.split(".", 1)[1]
        con.execute(
            f"copy (select rows.*, batch_of.batch_no as _gpucost_batch from {source} as rows "
            "join _gpucost_batch_of as batch_of on rows.cluster_id = batch_of.cluster_id) "
            f"to '{_sql_text(str(target))}' (format parquet, partition_by (_gpucost_batch))"
        )


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def _is_batched_staging(model: Model) -> bool:
    return model.layer == "staging" and bool(_references(model.sql, model.path) & BATCHED_SOURCES)


def _is_per_cluster(model: Model) -> bool:
    return (
        model.materialized == "table"
        and model.incremental_key is not None
        and model.incremental_key.lower().startswith("per cluster")
    )


def _fleet_views(models: list[Model]) -> set[str]:
    """The intermediate views that read no batched source, not even through another model: in
    a batched refresh they would compute the same fleet-wide rows again for every batch (the
    nearest-snapshot ranges over every snapshot of the fleet, say), so they are computed once."""
    batched: set[str] = set()
    for model in models:  # dependency order: what a model reads comes before it
        if _is_batched_staging(model) or any(d in batched for d in model.depends_on):
            batched.add(model.relation)
    return {
        m.relation
        for m in models
        if m.layer == "intermediate" and m.materialized == "view" and m.relation not in batched
    }


def _build_batched(
    con: duckdb.DuckDBPyConnection,
    models: list[Model],
    batches: list[tuple[str, str]],
    existing: dict[str, str],
    result: BuildResult,
) -> None:
    """A full refresh in batches of clusters (see `BATCH_BUCKETS`).

    Every table is first created empty (its columns); then, batch by batch, the scope is the
    batch's clusters (from -infinity) and the staging views over `BATCHED_SOURCES` see only
    them, and each per-cluster table inserts the batch's rows, as an incremental build would;
    last, with every view whole again, the other tables (fleet-wide, or not incremental) are
    built from the complete per-cluster tables. Gives the tables of a build in one piece.
    """
    seconds = dict.fromkeys((m.relation for m in models), 0.0)
    # beside the database (its disk was chosen to hold the history), private (mode 0700)
    with tempfile.TemporaryDirectory(prefix="gpucost-build-", dir=_database_folder(con)) as work:
        folder = Path(work)
        began = time.perf_counter()
        _partition_sources(con, batches, folder)
        result.model_seconds["(partition the history by batch)"] = time.perf_counter() - began
        _build_batches(con, models, batches, existing, folder, seconds)
    fleet_views = _fleet_views(models)
    for model in models:
        if not _is_batched_staging(model) and model.relation not in fleet_views:
            continue
        select = _strip_trailing_semicolon(model.sql)
        _create_or_replace(
            con,
            "view",
            model,
            f'create or replace view "{model.layer}"."{model.name}" as {select}',
            existing,
        )
    for model in models:
        if model.materialized != "table" or _is_per_cluster(model):
            continue
        began = time.perf_counter()
        select = _strip_trailing_semicolon(model.sql)
        con.execute(f'create or replace table "{model.layer}"."{model.name}" as {select}')
        seconds[model.relation] += time.perf_counter() - began
    result.models_built.extend(m.relation for m in models)
    result.model_seconds.update(seconds)
    result.batches = len(batches)


def _build_batches(
    con: duckdb.DuckDBPyConnection,
    models: list[Model],
    batches: list[tuple[str, str]],
    existing: dict[str, str],
    folder: Path,
    seconds: dict[str, float],
) -> None:
    """Create every model (tables empty), then insert each batch's rows of the per-cluster
    tables, batch by batch (see `_build_batched`)."""
    con.execute("set variable build_batch_from = ?", [batches[0][0]])
    con.execute("set variable build_batch_to = ?", [batches[0][1]])
    fleet_views = _fleet_views(models)
    for model in models:
        began = time.perf_counter()
        target = f'"{model.layer}"."{model.name}"'
        select = _strip_trailing_semicolon(model.sql)
        if model.relation in fleet_views:
            _create_fleet_table(con, model, existing)
        elif model.materialized == "view":
            body = _batched_select(model, 0, folder) if _is_batched_staging(model) else select
            _create_or_replace(
                con, "view", model, f"create or replace view {target} as {body}", existing
            )
        else:
            # the columns only: a constant-false filter is planned, never run
            _create_or_replace(
                con,
                "table",
                model,
                f"create or replace table {target} as select * from ({select}) where false",
                existing,
            )
        seconds[model.relation] += time.perf_counter() - began
    con.execute("create or replace temp table _gpucost_all_scope as select * from _gpucost_scope")
    for number, (first, last) in enumerate(batches):
        con.execute("set variable build_batch_from = ?", [first])
        con.execute("set variable build_batch_to = ?", [last])
        for model in models if number else []:
            # the batch's rows: views, not tables, so a batch leaves nothing behind that the
            # build's one transaction would keep (and spill) until it commits
            if _is_batched_staging(model):
                con.execute(
                    f'create or replace view "{model.layer}"."{model.name}" as '
                    + _batched_select(model, number, folder)
                )
        con.execute(
            "create or replace temp table _gpucost_scope as select * from _gpucost_all_scope "
            "where cluster_id between ? and ?",
            [first, last],
        )
        for model in models:
            if not _is_per_cluster(model):
                continue
            began = time.perf_counter()
            select = _strip_trailing_semicolon(model.sql)
            con.execute(
                f'insert into "{model.layer}"."{model.name}" select model.* from ({select}) '
                "as model semi join _gpucost_scope on model.cluster_id = _gpucost_scope.cluster_id"
            )
            seconds[model.relation] += time.perf_counter() - began
    con.execute("create or replace temp table _gpucost_scope as select * from _gpucost_all_scope")
    con.execute("drop table _gpucost_all_scope")


def _create_fleet_table(
    con: duckdb.DuckDBPyConnection, model: Model, existing: dict[str, str]
) -> None:
    """A fleet-wide view (`_fleet_views`) computed once for every batch, as a table ordered by
    cluster (so that a batch's join can skip the other clusters' row groups); a view again
    after the batches."""
    select = _strip_trailing_semicolon(model.sql)
    columns = [c[0] for c in con.execute(f"select * from ({select}) limit 0").description]
    order = " order by cluster_id" if "cluster_id" in columns else ""
    target = f'"{model.layer}"."{model.name}"'
    _create_or_replace(
        con,
        "table",
        model,
        f"create or replace table {target} as select * from ({select}){order}",
        existing,
    )


def _check_batchable(models: list[Model]) -> None:
    """A per-cluster table is computed batch by batch before the other tables are rebuilt: it
    may read views and other per-cluster tables only (a fleet-wide or whole table would still
    hold the previous build's rows, or none). A model that breaks this is a `BuildError`."""
    by_relation = {m.relation: m for m in models}

    def read(relation: str) -> set[str]:
        found: set[str] = set()
        for dependency in by_relation[relation].depends_on:
            found.add(dependency)
            if by_relation[dependency].materialized == "view":
                found |= read(dependency)
        return found

    for model in models:
        if not _is_per_cluster(model):
            continue
        for dependency in sorted(read(model.relation)):
            other = by_relation[dependency]
            if other.materialized == "table" and not _is_per_cluster(other):
                raise BuildError(
                    f"{model.path}: a per-cluster incremental model reads {dependency}, a table "
                    "that is not per cluster; batched builds compute it after the per-cluster "
                    "tables"
                )


def _build_incremental_batched(
    con: duckdb.DuckDBPyConnection,
    models: list[Model],
    batches: list[tuple[str, str]],
    thresholds: Thresholds,
    built: dict[str, str],
    existing: dict[str, str],
    result: BuildResult,
) -> None:
    """An incremental build in batches of the scope's clusters (`INCREMENTAL_BATCH_BUCKETS`):
    the views first (the fleet-wide ones as tables, for the batches), then each per-cluster
    table updated batch by batch (its rows of the batch's scope deleted and computed again,
    `_gpucost_scope` narrowed to the batch and the staging views over `BATCHED_SOURCES` to the
    batch's clusters; the variables `build_from_at` / `build_from_day_at` keep the whole
    scope's bounds), then, every view whole again, the other tables with the whole scope.
    Gives the tables of the incremental build in one piece."""
    seconds = dict.fromkeys((m.relation for m in models), 0.0)
    incremental: set[str] = set()

    def build(model: Model) -> None:
        began = time.perf_counter()
        try:
            if _build_model(
                con,
                model,
                full_refresh=False,
                checksum=_checksum(model, thresholds),
                built=built,
                existing=existing,
            ):
                incremental.add(model.relation)
        except duckdb.Error as exc:
            raise BuildError(f"model {model.relation} ({model.path}) failed: {exc}") from exc
        seconds[model.relation] += time.perf_counter() - began

    # the fleet-wide views once, as tables: in each batch they would compute the whole fleet
    # again (the nearest-snapshot ranges' window over every snapshot held memory in proportion
    # to the fleet, whatever the batch)
    fleet_views = _fleet_views(models)
    for model in models:
        if model.relation in fleet_views:
            _create_fleet_table(con, model, existing)
        elif model.materialized == "view":
            build(model)
    con.execute("create or replace temp table _gpucost_all_scope as select * from _gpucost_scope")
    for number, (first, last) in enumerate(batches):
        con.execute("set variable build_batch_from = ?", [first])
        con.execute("set variable build_batch_to = ?", [last])
        con.execute(
            "create or replace temp table _gpucost_scope as select * from _gpucost_all_scope "
            "where cluster_id between ? and ?",
            [first, last],
        )
        for model in models if number == 0 else []:
            # the staging views over the batched sources see the batch's clusters only (the
            # variables above), as in a batched full refresh: a per-cluster model computes
            # the batch, not the fleet (projection_drift's horizons of every cluster, say)
            if _is_batched_staging(model):
                con.execute(
                    f'create or replace view "{model.layer}"."{model.name}" as '
                    + _batched_select(model)
                )
        for model in models:
            if _is_per_cluster(model):
                build(model)
    con.execute("create or replace temp table _gpucost_scope as select * from _gpucost_all_scope")
    con.execute("drop table _gpucost_all_scope")
    for model in models:
        if model.relation in fleet_views or _is_batched_staging(model):
            build(model)  # a view again, whole
    for model in models:
        if model.materialized == "table" and not _is_per_cluster(model):
            build(model)
    result.models_built.extend(m.relation for m in models)
    result.incremental_marts.extend(m.relation for m in models if m.relation in incremental)
    result.model_seconds.update(seconds)
    result.batches = len(batches)


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


def _check_contracts(con: duckdb.DuckDBPyConnection, models: list[Model]) -> None:
    """Each mart must be built with exactly the columns its declaration beside it lists
    (`sql/marts/<name>.toml`, see `pipeline.contracts`): names, order and types."""
    for model in models:
        path = contracts.contract_path(model.path)
        if model.layer != "marts" or not path.is_file():
            continue
        try:
            contract = contracts.load_contract(path)
        except contracts.ContractFileError as exc:
            raise BuildError(str(exc)) from None
        problems = contracts.mismatches(
            contract, contracts.actual_columns(con, model.layer, model.name)
        )
        if problems:
            raise BuildError(
                f"mart {model.relation} does not match its declaration {path}: "
                + "; ".join(problems)
            )


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
    batch_buckets: int | None = None,
) -> BuildResult:
    """Build every model and run the data tests on an open connection, in one transaction.

    A full refresh of more than `batch_buckets` buckets (default `BATCH_BUCKETS`), or an
    incremental build whose scope holds more (default `INCREMENTAL_BATCH_BUCKETS`), runs in
    batches of clusters."""
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
        # An incremental model rebuilt whole (new, changed, thresholds changed) needs the whole
        # scope, and so do the models it feeds: one such model makes the build a full one.
        full_scope = full_refresh or any(
            model.incremental_key is not None
            and (
                built.get(model.relation) != _checksum(model, thresholds)
                or existing.get(model.relation) != "table"
            )
            for model in models
        )
        _make_scope(con, full=full_scope)
        result.full_refresh = full_scope
        if batch_buckets is None:
            batch_buckets = BATCH_BUCKETS if full_scope else INCREMENTAL_BATCH_BUCKETS
        batches = _cluster_batches(con, batch_buckets, scoped=not full_scope)
        if len(batches) > 1:
            _check_batchable(models)
            kind = "full refresh" if full_scope else "incremental build"
            try:
                if full_scope:
                    _build_batched(con, models, batches, existing, result)
                else:
                    _build_incremental_batched(
                        con, models, batches, thresholds, built, existing, result
                    )
            except duckdb.Error as exc:
                raise BuildError(f"the {kind} (in {len(batches)} batches) failed: {exc}") from exc
            for model in models:
                con.execute(
                    "insert or replace into marts.build_models values (?, ?, now())",
                    [model.relation, _checksum(model, thresholds)],
                )
        for model in models if len(batches) <= 1 else []:
            checksum = _checksum(model, thresholds)
            model_started = time.perf_counter()
            try:
                if _build_model(
                    con,
                    model,
                    full_refresh=full_scope,
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
            con.execute(
                "insert or replace into marts.build_runs (run_id, built_at, fingerprint) "
                "select run_id, now(), fingerprint from _gpucost_fingerprints "
                "where run_id in (select run_id from _gpucost_new_runs)"
            )
        _check_contracts(con, models)
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
        con.execute("drop table if exists _gpucost_scope")
        con.execute("drop table if exists _gpucost_all_scope")
        con.execute("drop table if exists _gpucost_fingerprints")
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
        for name, value in BUILD_SETTINGS:
            # names are our own constants; values are bound
            store.con.execute(f"set {name} = ?", [value])
        # configuration the models read as tables: [cost_centers], [[budgets]], [[suppress]]
        from pipeline.finance import write_finance_config
        from pipeline.recs import sync_suppressions

        write_finance_config(store.con, config)
        sync_suppressions(store.con, config.suppress)
        return build_on_connection(store.con, config.thresholds, full_refresh=full_refresh)
