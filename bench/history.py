"""A year of nightly history generated straight into a gpucost store, in SQL.

    .venv/bin/python -m bench.history DB [--clusters 1000] [--days 365]

`generate(con, clusters, days)` writes what `days` nightly snapshot runs of `clusters` clusters
x 8 GPUs would have stored (schema of `pipeline/migrations/0001_initial.sql`): one complete run
per night in `meta.runs`, one snapshot per cluster per night (`snap.cluster_snapshots`, its
`cost_components` and `projections`), and every hourly bucket once with its newest value
(`snap.metric_points`, `snap.gpu_metric_points`: the per-GPU series), stamped with the run of
the newest snapshot whose 7-day window held it, as the store keeps them. `append_night(con)`
then adds the next night as a snapshot run would: a new run, its snapshots, and the buckets of
its 7-day window replacing the stored ones.

Everything is made by DuckDB `range()` joins and integer hashing, so the same arguments always
give the same rows (no random generator, no Python loop over rows): 1,000 clusters x 365 days
(70 M per-GPU rows) take well under a minute. The buckets are written in chunks of time, each
its own transaction, so that memory follows the chunk, not the history.

Clusters follow archetypes by `cluster number % 10`: 0-3 busy (55-95 %), 4 idle (0-3 %), 5 idle
but holding memory, 6-7 diurnal (busy 08-20 UTC on weekdays, idle otherwise), 8 half of the GPUs
idle (a downsize), 9 stopped every other 30 days (storage billing only). Every 7th cluster's
GPU price rises by 10 % halfway through the year (a rate change).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

GPUS = 8
# per-GPU rows written per transaction by `generate` (its memory follows this, not the fleet)
CHUNK_GPU_ROWS = 40_000_000
# the night of the last generated snapshot: history runs back from here
LAST_NIGHT = datetime(2026, 11, 13, 3, tzinfo=UTC)
GPU_PRICE = "2.490000"  # per GPU per hour
# cpu, memory, storage, network per hour (storage keeps billing when stopped)
OTHER_COMPONENTS = (
    ("cpu", "0.480000"),
    ("memory", "0.160000"),
    ("storage", "0.120000"),
    ("network", "0.040000"),
)


def _first_night(days: int) -> datetime:
    return LAST_NIGHT - timedelta(days=days - 1)


def run_id_of(night: datetime) -> str:
    """The run id of the night's snapshot run (sorts by time, like the store's)."""
    return f"{night:%Y%m%dT%H%M%SZ}-bench"


# Deterministic pseudo-random integers in [0, m) from integer inputs (Lehmer-style step on a
# mixed key; stays inside BIGINT).
def _rand(expr: str, modulus: int) -> str:
    return f"((({expr}) % 1000003 + 1000003) % 1000003 * 48271 % 2147483647 % {modulus})"


def _setup(con: duckdb.DuckDBPyConnection, first: datetime, nights: int, clusters: int) -> None:
    """Temp tables: the nights to write and the clusters with their archetype."""
    con.execute("set TimeZone = 'UTC'")
    con.execute(
        "create or replace temp table _h_nights as select n as night_no, "
        "cast(? as timestamptz) + to_days(cast(n as integer)) as night_at "
        "from range(?) t(n)",
        [first, nights],
    )
    con.execute(
        "create or replace temp table _h_clusters as select c as cluster_no, "
        "'bench-' || lpad(cast(c as varchar), 6, '0') as cluster_id, "
        "c % 10 as archetype, c % 7 = 0 as rate_rises "
        "from range(?) t(c)",
        [clusters],
    )


def _seconds_since(origin: datetime) -> str:
    """Whole seconds from `origin` to the row's instant `t_at`, as a BIGINT expression."""
    return f"((epoch_ms(t_at) - epoch_ms(timestamptz '{origin.isoformat()}')) // 1000)"


def _state_sql(origin: datetime) -> str:
    """Per cluster and instant `at`: its status (archetype 9 stops every other 30 days)."""
    return (
        "case when c.archetype = 9 and "
        f"({_seconds_since(origin)} // 86400 // 30) % 2 = 1 "
        "then 'stopped' else 'running' end"
    )


def _price_sql(midyear: datetime) -> str:
    return (
        f"case when c.rate_rises and t_at >= timestamptz '{midyear.isoformat()}' "
        f"then cast({GPU_PRICE} * 1.1 as decimal(18, 6)) "
        f"else cast({GPU_PRICE} as decimal(18, 6)) end"
    )


def _other_per_hour() -> str:
    return " + ".join(f"cast({v} as decimal(18, 6))" for _, v in OTHER_COMPONENTS)


def _storage_per_hour() -> str:
    return f"cast({dict(OTHER_COMPONENTS)['storage']} as decimal(18, 6))"


def _write_snapshots(con: duckdb.DuckDBPyConnection, origin: datetime, midyear: datetime) -> None:
    """Runs, snapshots, cost components and projections for every night of `_h_nights`."""
    state, price = _state_sql(origin), _price_sql(midyear)
    con.execute(
        "create or replace temp table _h_snaps as "
        "select n.night_no, n.night_at as t_at, c.cluster_no, c.cluster_id, c.archetype, "
        f"{state} as status, {price} as gpu_price "
        "from _h_nights n cross join _h_clusters c"
    )
    con.execute(
        "insert into meta.runs select strftime(night_at, '%Y%m%dT%H%M%SZ') || '-bench', "
        "night_at, night_at + interval 5 minutes, 'http://127.0.0.1/v1', 'complete', "
        "(select count(*) from _h_clusters), (select count(*) from _h_clusters), "
        "0, 0, 0, 0, 0, null from _h_nights"
    )
    rate = (
        f"case when status = 'stopped' then {_storage_per_hour()} "
        f"else gpu_price * {GPUS} + {_other_per_hour()} end"
    )
    con.execute(
        "insert into snap.cluster_snapshots (run_id, cluster_id, snapshot_at, name, "
        "description, status, last_status_change, created_at, updated_at, gpu_type, gpu_count, "
        "cpu_cores, memory_gb, storage_gb, storage_type, region, project_id, project_name, "
        "gpu_health, storage_health, network_health, docker_health, currency, hourly_rate, "
        "total_cost_to_date, window_cost, metrics_window, interval_seconds, has_metrics, "
        "has_gpu_series, has_cost_breakdown, current_gpu_utilization) "
        "select strftime(t_at, '%Y%m%dT%H%M%SZ') || '-bench', cluster_id, t_at, "
        "'bench cluster ' || cluster_no, null, status, null, "
        f"timestamptz '{origin.isoformat()}', t_at, 'H100', {GPUS}, 64, 512, 2000, 'ssd', "
        "'us-west-' || (cluster_no % 3 + 1), 'p' || (cluster_no % 20), "
        "'project ' || (cluster_no % 20), 'healthy', 'healthy', 'healthy', 'healthy', 'USD', "
        f"{rate}, "
        # a plausible running total: the rate times the hours since the history began
        f"cast(({rate}) * ({_seconds_since(origin)} // 3600) "
        "as decimal(18, 6)), "
        f"cast(({rate}) * 168 as decimal(18, 6)), '7d', 3600, true, true, true, null "
        "from _h_snaps"
    )
    components = [("gpu", f"case when status = 'stopped' then 0 else gpu_price * {GPUS} end")]
    for name, value in OTHER_COMPONENTS:
        stopped = "0" if name != "storage" else value
        keep = f"case when status = 'stopped' then {stopped} else {value} end"
        components.append((name, keep))
    selects = " union all ".join(
        f"select strftime(t_at, '%Y%m%dT%H%M%SZ') || '-bench', cluster_id, t_at, '{name}', "
        f"cast({value} as decimal(18, 6)), 'USD' from _h_snaps"
        for name, value in components
    )
    con.execute(f"insert into snap.cost_components {selects}")
    horizons = (("daily", 24), ("weekly", 168), ("monthly", 720))
    # the provider projects the current rate, off by a few percent either way
    noise = _rand("cluster_no * 31 + night_no * 7 + {hours}", 100)
    selects = " union all ".join(
        f"select strftime(t_at, '%Y%m%dT%H%M%SZ') || '-bench', cluster_id, t_at, '{name}', "
        f"{hours}, cast(({rate}) * {hours} * (0.95 + {noise.format(hours=hours)} / 1000.0) "
        "as decimal(18, 6)), 'USD', 'current_hourly_rate' from _h_snaps"
        for name, hours in horizons
    )
    con.execute(f"insert into snap.projections {selects}")


def _write_buckets(
    con: duckdb.DuckDBPyConnection,
    origin: datetime,
    midyear: datetime,
    since: datetime,
    until: datetime,
    newest_night: datetime,
    hour_offset: int = 0,
) -> None:
    """Buckets starting in [since, until) for every cluster, with their per-GPU series, stamped
    with the newest snapshot (at or before `newest_night`) whose 7-day window held them.

    `hour_offset` numbers the first bucket (its readings are hashed from the number), so that a
    history written in chunks of time gets the same rows as one written whole."""
    hours = int((until - since).total_seconds() // 3600)
    state = _state_sql(origin)
    price = _price_sql(midyear)
    # hour of day and weekday of the bucket drive the diurnal archetype
    con.execute(
        "create or replace temp table _h_buckets as select *, "
        "strftime(snapshot_at, '%Y%m%dT%H%M%SZ') || '-bench' as run_id from ("
        f"select c.cluster_no, c.cluster_id, c.archetype, h + {hour_offset} as hour_no, t_at, "
        f"{state} as status, {price} as gpu_price, "
        "hour(t_at) as hod, isodow(t_at) as dow, "
        # the newest night whose window [night - 168 h, night) holds the bucket
        f"least(timestamptz '{newest_night.isoformat()}', "
        f"timestamptz '{origin.isoformat()}' + to_days(cast("
        f"{_seconds_since(origin)} // 86400 + 7 as integer)))"
        " as snapshot_at "
        "from _h_clusters c cross join ("
        f"select h, timestamptz '{since.isoformat()}' + to_hours(cast(h as integer)) as t_at "
        f"from range({hours}) t(h)) hours) "
        # stored in time order, as nightly runs append them: old row groups then hold old
        # buckets only, and a bound on bucket_at skips them
        "order by t_at, cluster_no"
    )
    # utilization in hundredths of a percent, by archetype; GPU g of the bucket
    g_key = "cluster_no * 7919 + hour_no * 104729 + g * 1299709"
    util = (
        "case "
        "when status = 'stopped' then 0 "
        f"when archetype <= 3 then 5500 + {_rand(g_key, 4000)} "
        f"when archetype in (4, 5) then {_rand(g_key, 300)} "
        "when archetype in (6, 7) then case when dow <= 5 and hod between 8 and 19 "
        f"then 6000 + {_rand(g_key, 3500)} else {_rand(g_key, 300)} end "
        f"when archetype = 8 then case when g < {GPUS // 2} then 7000 + {_rand(g_key, 2500)} "
        f"else {_rand(g_key, 200)} end "
        f"else 3000 + {_rand(g_key, 5000)} end"
    )
    con.execute(
        "insert into snap.gpu_metric_points select run_id, cluster_id, t_at, gpu_id, "
        "snapshot_at, util / 100.0, "
        f"case when archetype = 5 then 12.0 + g when util < 500 then 0.0 "
        f"else 20.0 + {_rand(g_key, 60)} end, "
        "case when util < 500 then 70.0 else 450.0 end "
        f"from (select *, {util} as util from _h_buckets "
        f"cross join (select g, cast(g as varchar) as gpu_id from range({GPUS}) t(g)) gpus "
        "where status <> 'stopped')"
    )
    cost = (
        f"case when status = 'stopped' then {_storage_per_hour()} "
        f"else gpu_price * {GPUS} + {_other_per_hour()} end"
    )
    # the cluster's utilization: the mean of its GPUs, as the provider reports it (the same
    # expression per GPU, summed, rather than an aggregate over 70 M rows)
    mean = (
        "("
        + " + ".join(
            "("
            + util.replace(g_key, g_key.replace("g * ", f"{g} * ")).replace(
                f"when g < {GPUS // 2}", f"when {g} < {GPUS // 2}"
            )
            + ")"
            for g in range(GPUS)
        )
        + f") / {GPUS} / 100.0"
    )
    con.execute(
        "insert into snap.metric_points select "
        "run_id, cluster_id, t_at, 3600, "
        f"snapshot_at, status, case when status = 'stopped' then 0.0 else {mean} end, "
        f"35.0, 35.0, 40.0, {cost}, 'USD', "
        f"case when status = 'stopped' then null else {GPUS} end "
        "from _h_buckets"
    )


def generate(con: duckdb.DuckDBPyConnection, clusters: int, days: int) -> dict[str, int]:
    """Write `days` nights of history for `clusters` clusters into an empty store; row counts.

    Nights run to `LAST_NIGHT` (03:00 UTC); buckets from a week before the first night.
    """
    first = _first_night(days)
    origin = first - timedelta(days=7)
    midyear = first + timedelta(days=days // 2)
    _setup(con, first, days, clusters)
    con.execute("begin")
    _write_snapshots(con, origin, midyear)
    con.execute("commit")
    # the buckets in chunks of time, each its own transaction: 10,000 clusters x a year is
    # 700 M per-GPU rows, far more than one transaction should hold in memory
    chunk_hours = max(24, (CHUNK_GPU_ROWS // (clusters * GPUS)) // 24 * 24)
    since = origin
    while since < LAST_NIGHT:
        until = min(LAST_NIGHT, since + timedelta(hours=chunk_hours))
        hour_offset = int((since - origin).total_seconds() // 3600)
        con.execute("begin")
        _write_buckets(con, origin, midyear, since, until, LAST_NIGHT, hour_offset)
        con.execute("commit")
        since = until
    return _counts(con)


def append_night(con: duckdb.DuckDBPyConnection, clusters: int, days: int) -> str:
    """Add the night after the generated history as the snapshot stage would: a new complete
    run, a snapshot per cluster, and its 7-day window of buckets replacing the stored ones.
    Returns the new run id. Call once per extra night (`days` is the history already there)."""
    first = _first_night(days)
    origin = first - timedelta(days=7)
    midyear = first + timedelta(days=days // 2)
    extra = con.execute("select count(*) from meta.runs").fetchone()[0] - days  # type: ignore[index]
    night = LAST_NIGHT + timedelta(days=extra + 1)
    _setup(con, night, 1, clusters)
    con.execute("begin")
    _write_snapshots(con, origin, midyear)
    since = night - timedelta(hours=168)
    for table in ("metric_points", "gpu_metric_points"):
        con.execute(f"delete from snap.{table} where bucket_at >= ?", [since])
    _write_buckets(con, origin, midyear, since, night, night)
    con.execute("commit")
    return run_id_of(night)


def _counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    tables = (
        "meta.runs",
        "snap.cluster_snapshots",
        "snap.cost_components",
        "snap.projections",
        "snap.metric_points",
        "snap.gpu_metric_points",
    )
    return {t: int(con.execute(f"select count(*) from {t}").fetchone()[0]) for t in tables}  # type: ignore[index]


def main(argv: list[str] | None = None) -> None:
    """Generate a history into DB (created through the store, so schema and modes are right)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--append", type=int, default=0, help="extra nights appended after")
    args = parser.parse_args(argv)
    from pipeline.store import Store

    began = time.perf_counter()
    with Store.open(args.db) as store:
        counts = generate(store.con, args.clusters, args.days)
        for _ in range(args.append):
            append_night(store.con, args.clusters, args.days)
    print(f"{counts} in {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
