"""The store with hand-made canonical details: keys, revisions, resizes, money, modes, lock."""

from __future__ import annotations

import os
import stat
from decimal import Decimal

import duckdb
import pytest

from pipeline import writer
from pipeline.errors import LockedError
from pipeline.normalize import normalize_detail
from pipeline.store import (
    LoadBatch,
    LoadError,
    Store,
    StoreError,
    code_schema_version,
    migrations,
)
from tests.store_fixtures import HOUR, T0, detail, point

DAY = 24 * HOUR


@pytest.fixture
def db(tmp_path):
    return tmp_path / "g.duckdb"


@pytest.fixture
def store(db):
    s = Store.open(db)
    yield s
    s.close()


def _load(store: Store, *details, run_id: str | None = None) -> str:
    run_id = store.start_run("http://127.0.0.1/v1", run_id=run_id)
    batch = LoadBatch(run_id)
    for d in details:
        batch.add_detail(normalize_detail(d), raw_body=b"{}")
    store.write_batch(batch)
    store.finish_run(run_id, "complete")
    return run_id


def _count(store: Store, table: str) -> int:
    return store.con.execute(f"select count(*) from snap.{table}").fetchall()[0][0]


def _dup_keys(store: Store) -> list:
    return store.con.execute(
        "select cluster_id, bucket_at, count(*) from snap.metric_points group by all"
        " having count(*) > 1 union all "
        "select cluster_id || '/' || gpu_id, bucket_at, count(*) from snap.gpu_metric_points"
        " group by cluster_id, gpu_id, bucket_at having count(*) > 1"
    ).fetchall()


def test_new_database_and_lock_file_are_owner_only(db):
    with Store.open(db):
        assert stat.S_IMODE(os.stat(f"{db}.lock").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600


def test_wal_written_while_open_is_owner_only(db, store):
    store.load_detail("r1", normalize_detail(detail()))
    wal = f"{db}.wal"
    assert os.path.exists(wal), "DuckDB wrote no WAL: the test proves nothing"
    assert stat.S_IMODE(os.stat(wal).st_mode) == 0o600


def test_umask_is_restored_after_close(db):
    before = os.umask(0o022)
    os.umask(before)
    with Store.open(db):
        pass
    after = os.umask(before)
    assert after == before


def test_migrations_recorded_and_reopen_is_a_no_op(db):
    shipped = [(version,) for version, _name, _sql in migrations()]
    with Store.open(db) as s:
        versions = s.con.execute("select version from meta.schema_version order by 1").fetchall()
    assert versions == shipped and versions[-1] == (code_schema_version(),)
    with Store.open(db) as s:
        assert s.schema_version() == code_schema_version()
        assert len(s.con.execute("select * from meta.schema_version").fetchall()) == len(shipped)


def test_database_newer_than_code_is_refused(db):
    with Store.open(db) as s:
        s.con.execute("insert into meta.schema_version values (999, '0999_future.sql', now())")
    with pytest.raises(StoreError, match="newer than this gpucost"):
        Store.open(db)
    # and the refusal released the lock: a later open gets the same clear error, not LockedError
    with pytest.raises(StoreError):
        Store.open(db)


def test_second_writer_gets_locked_error_and_touches_nothing(db, store):
    with pytest.raises(LockedError) as exc:
        Store.open(db)
    assert exc.value.exit_code == 5
    assert store.con.execute("select count(*) from meta.runs").fetchall() == [(0,)]


def test_loads_every_table_of_a_detail(store):
    run_id = _load(store, detail(hours=3, gpu_count=2))
    counts = {
        t: _count(store, t)
        for t in (
            "cluster_snapshots",
            "cost_components",
            "projections",
            "alerts",
            "gpu_current",
            "metric_points",
            "gpu_metric_points",
        )
    }
    assert counts == {
        "cluster_snapshots": 1,
        "cost_components": 4,
        "projections": 3,
        "alerts": 1,
        "gpu_current": 2,
        "metric_points": 3,
        "gpu_metric_points": 6,
    }
    row = store.con.execute(
        "select run_id, snapshot_at, hourly_rate, has_gpu_series, docker_health, interval_seconds"
        " from snap.cluster_snapshots"
    ).fetchall()[0]
    assert row == (run_id, T0, Decimal("6.900000"), True, "degraded", 3600)
    comps = dict(
        store.con.execute("select component, cost_per_hour from snap.cost_components").fetchall()
    )
    assert comps == {
        "gpu": Decimal("6.2"),
        "cpu": Decimal("0.32"),
        "storage": Decimal("0.14"),
        "network": Decimal("0.24"),
    }
    proj = dict(store.con.execute("select horizon, horizon_hours from snap.projections").fetchall())
    assert proj == {"daily": 24, "weekly": 168, "monthly": 720}


def test_money_round_trips_as_exact_decimal(store):
    pts = [
        point(T0 - (3 - h) * HOUR, cost=c, gpus=[1.0])
        for h, c in enumerate(["0.1", "0.2", "0.123456"])
    ]
    _load(store, detail(points=pts, gpu_count=1, rate="0.1"))
    total = store.con.execute("select sum(cost) from snap.metric_points").fetchall()[0][0]
    assert isinstance(total, Decimal)
    assert total == Decimal("0.423456")  # a float sum would give 0.42345600000000003
    types = dict(
        store.con.execute(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = 'snap' and column_name in ('cost', 'hourly_rate')"
        ).fetchall()
    )
    assert set(types.values()) == {"DECIMAL(18,6)"}


def test_more_than_six_decimal_places_round_half_even(store):
    pts = [
        point(T0 - HOUR, cost="0.00000050", gpus=[1.0]),
        point(T0 - 2 * HOUR, cost="0.00000150", gpus=[1.0]),
    ]
    _load(store, detail(points=pts, gpu_count=1))
    costs = sorted(
        r[0] for r in store.con.execute("select cost from snap.metric_points").fetchall()
    )
    assert costs == [Decimal("0.000000"), Decimal("0.000002")]


def test_revised_bucket_keeps_the_newest_snapshots_value(store):
    b = T0 - HOUR
    older = detail(at=T0, points=[point(b, util=10.0, cost="1.0000", gpus=[10.0, 10.0])])
    newer = detail(at=T0 + HOUR, points=[point(b, util=80.0, cost="2.0000", gpus=[80.0, 70.0])])
    _load(store, older)
    _load(store, newer)
    assert store.con.execute(
        "select gpu_utilization, cost, snapshot_at from snap.metric_points"
    ).fetchall() == [(80.0, Decimal("2"), T0 + HOUR)]
    assert sorted(
        store.con.execute("select gpu_id, utilization from snap.gpu_metric_points").fetchall()
    ) == [("0", 80.0), ("1", 70.0)]


def test_older_snapshot_loaded_later_does_not_overwrite_a_newer_bucket(store):
    b = T0 - HOUR
    _load(store, detail(at=T0 + HOUR, points=[point(b, util=80.0, gpus=[80.0])], gpu_count=1))
    _load(store, detail(at=T0, points=[point(b, util=10.0, gpus=[10.0])], gpu_count=1))
    assert store.con.execute("select gpu_utilization from snap.metric_points").fetchall() == [
        (80.0,)
    ]
    assert store.con.execute("select utilization from snap.gpu_metric_points").fetchall() == [
        (80.0,)
    ]
    # the older snapshot's own snapshot-grain rows are still kept (its projections are history)
    assert _count(store, "cluster_snapshots") == 2


def test_resize_replaces_the_per_gpu_rows_of_a_bucket_as_a_set(store):
    b = T0 - HOUR
    _load(store, detail(at=T0, points=[point(b, gpus=[50.0] * 8)], gpu_count=8))
    _load(store, detail(at=T0 + HOUR, points=[point(b, gpus=[60.0] * 4)], gpu_count=4))
    assert store.con.execute(
        "select count(*), max(utilization) from snap.gpu_metric_points"
    ).fetchall() == [(4, 60.0)]
    assert store.con.execute("select gpu_series_count from snap.metric_points").fetchall() == [(4,)]


def test_overlapping_windows_store_each_bucket_once(store):
    # night 1 covers [T0-168h, T0); night 2 covers [T0-144h, T0+24h): union is 192 buckets
    _load(store, detail(at=T0, hours=168, gpu_count=2))
    _load(store, detail(at=T0 + DAY, hours=168, gpu_count=2))
    assert _count(store, "metric_points") == 192
    assert _count(store, "gpu_metric_points") == 192 * 2
    assert _dup_keys(store) == []
    by_snap = dict(
        store.con.execute(
            "select snapshot_at, count(*) from snap.metric_points group by all"
        ).fetchall()
    )
    assert by_snap == {T0: 24, T0 + DAY: 168}


def test_rerun_of_the_same_night_adds_no_rows(store):
    tables = (
        "cluster_snapshots",
        "cost_components",
        "projections",
        "alerts",
        "gpu_current",
        "metric_points",
        "gpu_metric_points",
    )
    _load(store, detail("cls_a", hours=24), detail("cls_b", hours=24, gpu_count=4))
    first = {t: _count(store, t) for t in tables}
    snapshot = store.con.execute(
        "select * exclude (run_id) from snap.gpu_metric_points order by all"
    ).fetchall()
    second_run = _load(store, detail("cls_a", hours=24), detail("cls_b", hours=24, gpu_count=4))
    assert {t: _count(store, t) for t in tables} == first
    assert (
        store.con.execute(
            "select * exclude (run_id) from snap.gpu_metric_points order by all"
        ).fetchall()
        == snapshot
    )
    # the rows now belong to the run that wrote them last
    assert store.con.execute("select distinct run_id from snap.metric_points").fetchall() == [
        (second_run,)
    ]


def test_same_cluster_twice_in_one_batch_keeps_the_later_detail(store):
    run_id = store.start_run(None)
    batch = LoadBatch(run_id)
    batch.add_detail(normalize_detail(detail(util=10.0, gpu_count=2, hours=2)))
    batch.add_detail(normalize_detail(detail(util=90.0, gpu_count=1, hours=2)))
    store.write_batch(batch)
    assert store.con.execute(
        "select distinct gpu_utilization from snap.metric_points"
    ).fetchall() == [(90.0,)]
    assert _count(store, "gpu_metric_points") == 2
    assert _count(store, "gpu_current") == 1
    assert _dup_keys(store) == []


def test_a_batch_takes_per_gpu_columns_as_arrow_or_as_lists_in_detail_order(store):
    # normalize gives the per-GPU columns as Arrow arrays; a detail made by hand may give
    # lists. Both kinds in one batch keep each GPU row with its own point.
    first = normalize_detail(detail("cls_a", gpu_count=2, hours=3, util=10.0))
    second = normalize_detail(detail("cls_b", gpu_count=1, hours=3, util=50.0))
    own = second.columns["gpu_metric_points"]
    second.columns["gpu_metric_points"] = {name: values.to_pylist() for name, values in own.items()}
    third = normalize_detail(detail("cls_c", gpu_count=3, hours=3, util=90.0))
    run_id = store.start_run(None)
    batch = LoadBatch(run_id)
    for d in (second, first, third):
        batch.add_detail(d)
    store.write_batch(batch)
    columns = ("cluster_id", "bucket_at", "gpu_id", "utilization", "memory_used_gb", "power_draw_w")
    stored = store.con.execute(
        f"select {', '.join(columns)} from snap.gpu_metric_points"
    ).fetchall()
    expected = [
        tuple(row[c] for c in columns)
        for d in (first, second, third)
        for row in d.rows("gpu_metric_points")
    ]
    assert len(expected) == 3 * (2 + 1 + 3)
    assert sorted(stored) == sorted(expected)


def test_bad_detail_is_a_load_failure_and_the_others_load(store):
    bad = detail("cls_bad")
    bad["metrics"]["historical"]["data_points"][1]["gpus"][1]["gpu_id"] = "0"  # "0" twice
    run_id = store.start_run(None)
    batch = LoadBatch(run_id)
    batch.add_detail(normalize_detail(detail("cls_ok")))
    batch.add_detail(normalize_detail(bad), raw_body=b'{"id": "cls_bad"}')
    store.write_batch(batch)
    assert store.con.execute("select distinct cluster_id from snap.metric_points").fetchall() == [
        ("cls_ok",)
    ]
    failure = store.con.execute(
        "select cluster_id, stage, outcome, reason, raw_body from meta.run_failures"
    ).fetchall()
    assert failure == [
        (
            "cls_bad",
            "load",
            "failed",
            "cannot load: metrics.historical.data_points[1].gpus: a gpu_id sent twice",
            b'{"id": "cls_bad"}',
        )
    ]
    run = store.run(run_id)
    assert (run["clusters_fetched"], run["clusters_failed"]) == (1, 1)


def test_amount_too_large_for_the_column_is_a_load_failure(store):
    huge = detail("cls_huge", rate="1000000000000")
    with pytest.raises(LoadError, match="exceeds DECIMAL"):
        store.load_detail("r1", normalize_detail(huge))
    assert _count(store, "cluster_snapshots") == 0


def test_detail_without_snapshot_instant_is_refused(store):
    d = detail()
    del d["metrics"]
    del d["updated_at"]
    with pytest.raises(LoadError, match="no snapshot instant"):
        store.load_detail("r1", normalize_detail(d))


def test_snapshot_instant_falls_back_to_updated_at_without_metrics(store):
    d = detail(at=T0)
    del d["metrics"]
    d["updated_at"] = T0 - HOUR
    store.load_detail("r1", normalize_detail(d))
    assert store.con.execute(
        "select snapshot_at, has_metrics, has_gpu_series from snap.cluster_snapshots"
    ).fetchall() == [(T0 - HOUR, False, False)]
    assert _count(store, "metric_points") == 0


def test_stale_running_run_is_marked_failed_interrupted(store):
    stale = store.start_run("http://127.0.0.1/v1")
    assert store.mark_interrupted_runs() == 1
    run = store.run(stale)
    assert run["status"] == "failed" and run["message"].startswith("interrupted")
    assert run["finished_at"] is None


def test_batch_counters_and_failures_commit_with_the_rows(store):
    run_id = store.start_run(None)
    batch = LoadBatch(run_id)
    batch.add_detail(normalize_detail(detail("cls_a")))
    batch.add_failure("cls_b", "gone", "404 RESOURCE_NOT_FOUND", http_status=404)
    batch.add_failure("cls_c", "skipped", "request budget exhausted")
    batch.add_failure("cls_d", "failed", "invalid JSON", http_status=200, raw_body=b"{oops")
    store.write_batch(batch, requests_made=7, retries=2)
    run = store.run(run_id)
    assert [
        run[k]
        for k in (
            "clusters_fetched",
            "clusters_failed",
            "clusters_gone",
            "clusters_skipped",
            "requests_made",
            "retries",
            "status",
        )
    ] == [1, 1, 1, 1, 7, 2, "running"]
    assert store.con.execute(
        "select count(*) from meta.run_failures where run_id = ?", [run_id]
    ).fetchall() == [(3,)]


def test_a_refused_batch_writes_nothing(store, monkeypatch):
    run_id = store.start_run(None)
    batch = LoadBatch(run_id)
    batch.add_detail(normalize_detail(detail("cls_a")))
    batch.add_failure("cls_b", "gone", "404")

    def boom(con, rows):
        raise duckdb.IOException("disk full")

    monkeypatch.setattr(writer, "_write_buckets", boom)
    with pytest.raises(StoreWriteError, match="disk full"):
        store.write_batch(batch)
    assert _count(store, "cluster_snapshots") == 0
    assert store.run(run_id)["clusters_fetched"] == 0
    assert store.con.execute("select count(*) from meta.run_failures").fetchall() == [(0,)]


def test_raw_bodies_are_compressed_read_back_and_pruned(store):
    body = b'{"id": "cls_a", "padding": "' + b"x" * 5000 + b'"}'
    run_id = store.start_run(None)
    batch = LoadBatch(run_id)
    batch.add_detail(normalize_detail(detail("cls_a")), raw_body=body)
    store.write_batch(batch)
    stored = store.con.execute("select octet_length(body) from raw.responses").fetchall()[0][0]
    assert stored < len(body) / 10
    assert [(r, c, b) for r, c, _, b in store.iter_raw()] == [(run_id, "cls_a", body)]
    assert store.raw_run_ids() == [run_id]
    assert store.prune_raw(1) == 0
    store.con.execute("update raw.responses set fetched_at = fetched_at - interval 2 day")
    assert store.prune_raw(1) == 1
    assert list(store.iter_raw()) == []


def test_raw_is_not_kept_when_retention_is_zero(store):
    run_id = store.start_run(None)
    batch = LoadBatch(run_id, keep_raw=False)
    batch.add_detail(normalize_detail(detail("cls_a")), raw_body=b"{}")
    store.write_batch(batch)
    assert list(store.iter_raw()) == []
    assert _count(store, "metric_points") == 3


def test_read_only_open_of_a_missing_database_is_a_clear_error(tmp_path):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="no gpucost database"):
        Store.open(tmp_path / "none.duckdb", read_only=True)


def test_points_of_the_fast_and_the_general_path_store_the_same_rows(tmp_path):
    import json
    from datetime import UTC, datetime

    import orjson

    from pipeline.normalize import parse_json
    from pipeline.simulator.fleet import Fleet, FleetSpec

    fleet = Fleet(FleetSpec(seed=7, clusters=6, start=datetime(2026, 11, 13, 3, tzinfo=UTC)))
    docs = [json.dumps(fleet.detail(s["id"], window="7d")) for s in fleet.list_summaries()]
    tables = {}
    # orjson gives floats (the columns' fast path); parse_json gives Decimals, which the fast
    # path declines: the points are converted one by one.
    for name, parse in (("fast", orjson.loads), ("general", parse_json)):
        with Store.open(tmp_path / f"{name}.duckdb") as s:
            batch = LoadBatch("r1")
            for text in docs:
                batch.add_detail(normalize_detail(parse(text)))
            s.write_batch(batch)
            tables[name] = {
                t: s.con.execute(f"select * from snap.{t} order by all").fetchall()
                for t in ("metric_points", "gpu_metric_points", "cluster_snapshots")
            }
    assert tables["fast"] == tables["general"]
    assert len(tables["fast"]["gpu_metric_points"]) > 1000


from pipeline.store import StoreWriteError  # noqa: E402 - beside the tests that use it


class _FullDiskConnection:
    """A DuckDB connection whose commit fails as DuckDB's does on a full disk: the transaction
    is ended first, so a rollback afterwards raises "no transaction is active"."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def commit(self) -> None:
        self._con.rollback()
        raise duckdb.TransactionException(
            'TransactionContext Error: Failed to commit: Could not write file "g.duckdb.wal": '
            "No space left on device"
        )

    def __getattr__(self, name: str):
        return getattr(self._con, name)


def test_a_full_disk_is_named_not_hidden_by_the_failed_rollback(store):
    run_id = store.start_run(None)
    batch = LoadBatch(run_id)
    batch.add_detail(normalize_detail(detail("cls_a")))
    real = store.con
    store.con = _FullDiskConnection(real)
    try:
        with pytest.raises(StoreWriteError, match="no space left on device") as caught:
            store.write_batch(batch)
    finally:
        store.con = real
    assert "no transaction is active" not in str(caught.value)
    assert _count(store, "cluster_snapshots") == 0


def test_an_oserror_enospc_at_the_write_layer_is_named(store, monkeypatch):
    import errno
    import os as _os

    run_id = store.start_run(None)
    batch = LoadBatch(run_id)
    batch.add_detail(normalize_detail(detail("cls_a")))

    def boom(con, rows):
        raise OSError(errno.ENOSPC, _os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer, "_write_buckets", boom)
    with pytest.raises(StoreWriteError, match="no space left on device"):
        store.write_batch(batch)


def test_finishing_a_run_on_a_full_disk_names_the_cause(store):
    run_id = store.start_run(None)
    real = store.con
    store.con = _FullDiskConnection(real)
    try:
        with pytest.raises(StoreWriteError, match="no space left on device"):
            store.finish_run(run_id, "failed", message="x")
    finally:
        store.con = real
    assert store.run(run_id)["status"] == "running"


def test_the_project_owner_e_mail_is_stored_beside_the_owner_id(store):
    doc = detail()
    doc["project_info"] = {
        "project_id": "proj_1",
        "project_name": "ML",
        "owner_id": "u1",
        "owner_email": "ada@example.com",
    }
    _load(store, doc)
    row = store.con.execute(
        "select project_id, owner_id, owner_email from snap.cluster_snapshots"
    ).fetchall()
    assert row == [("proj_1", "u1", "ada@example.com")]
