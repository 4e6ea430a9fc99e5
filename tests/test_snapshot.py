"""The snapshot stage end to end, in process, against the simulator over real HTTP."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pytest

from pipeline.config import ApiSettings, Config, StoreSettings
from pipeline.errors import AuthError
from pipeline.simulator import FaultSpec, Fleet, FleetSpec, Simulator, VariantSpec
from pipeline.snapshot import run_snapshot
from pipeline.store import Store, StoreWriteError
from tests.snapshot_helpers import (
    API_KEY,
    SNAP_TABLES,
    START,
    dump,
    duplicate_keys,
    fleet_buckets,
    make_config,
    stored_buckets,
)

DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def _api_key(monkeypatch):
    monkeypatch.setenv("GPUCOST_API_KEY", API_KEY)


@pytest.fixture(scope="module")
def fleet40():
    return Fleet(FleetSpec(seed=7, clusters=40, start=START))


def _serve(fleet, **options):
    return Simulator(fleet, api_key=API_KEY, **options).run_in_thread(port=0)


def _api_requests(sim: Simulator) -> int:
    return sum(sum(c.values()) for p, c in sim.stats()["requests"].items() if p.startswith("/v1"))


def test_every_cluster_is_stored_with_the_fleets_bucket_values(tmp_path, fleet40):
    fleet40.set_clock(START)
    sim = Simulator(fleet40, api_key=API_KEY)
    with sim.run_in_thread(port=0) as url:
        result = run_snapshot(make_config(tmp_path / "g.duckdb", url))
        api_requests = _api_requests(sim)
    listed = {s["id"] for s in fleet40.list_summaries()}
    assert (result.status, result.exit_code) == ("complete", 0)
    assert (result.listed, result.fetched, result.failed, result.gone) == (
        len(listed),
        len(listed),
        0,
        0,
    )
    assert result.requests == api_requests
    with Store.open(tmp_path / "g.duckdb", read_only=True) as store:
        con = store.con
        stored = {
            r[0] for r in con.execute("select cluster_id from snap.cluster_snapshots").fetchall()
        }
        assert stored == listed
        for cid in sorted(listed):
            assert stored_buckets(con, cid) == fleet_buckets(fleet40.detail(cid)), cid
        run = store.run(result.run_id)
        assert (
            run["status"],
            run["clusters_listed"],
            run["clusters_fetched"],
            run["requests_made"],
        ) == ("complete", len(listed), len(listed), api_requests)
        rates = dict(
            con.execute("select cluster_id, hourly_rate from snap.cluster_snapshots").fetchall()
        )
        some = sorted(listed)[0]
        assert str(rates[some].normalize()) == str(
            __import__("decimal")
            .Decimal(fleet40.detail(some)["cost"]["current_hourly_rate"])
            .normalize()
        )


def test_nightly_snapshots_keep_each_bucket_once_with_the_newest_value(tmp_path, fleet40):
    db = tmp_path / "g.duckdb"
    fleet40.set_clock(START)
    expected: dict[str, dict] = {}
    sim = Simulator(fleet40, api_key=API_KEY)
    with sim.run_in_thread(port=0) as url:
        for _night in range(2):
            assert run_snapshot(make_config(db, url)).status == "complete"
            for s in fleet40.list_summaries():
                expected.setdefault(s["id"], {}).update(fleet_buckets(fleet40.detail(s["id"])))
            fleet40.advance(DAY)
        with Store.open(db) as store:
            before = {t: len(dump(store.con, t)) for t in SNAP_TABLES}
        # the same night again (clock back to the last snapshot): no new rows
        fleet40.advance(-DAY)
        run_snapshot(make_config(db, url))
    fleet40.set_clock(START)
    with Store.open(db, read_only=True) as store:
        assert duplicate_keys(store.con) == []
        assert {t: len(dump(store.con, t)) for t in SNAP_TABLES} == before
        for cid, buckets in sorted(expected.items()):
            assert stored_buckets(store.con, cid) == buckets, cid


@pytest.mark.parametrize(
    "kind",
    [
        "error_500",
        "error_502",
        "error_503",
        "drop",
        "truncated",
        "invalid_json",
        "slow",
        "timeout",
        "storm_429",
        "duplicate",
    ],
)
def test_transient_fault_is_retried_and_every_cluster_is_stored(tmp_path, kind):
    fleet = Fleet(FleetSpec(seed=11, clusters=16, start=START))
    # storms hold every request while they last: a few are enough
    rate = {"storm_429": 0.1, "duplicate": 0.9}.get(kind, 0.3)
    faults = FaultSpec(
        rates={kind: rate}, seed=3, timeout_seconds=1.0, slow_seconds=0.05, storm_seconds=0.2
    )
    sim = Simulator(fleet, api_key=API_KEY, faults=faults)
    with sim.run_in_thread(port=0) as url:
        # small pages: list pages get faults too, and page boundaries exist to duplicate across
        config = make_config(
            tmp_path / "g.duckdb", url, timeout_seconds=0.5, retry_max_seconds=20.0, page_size=5
        )
        result = run_snapshot(config)
        stats = sim.stats()
    listed = {s["id"] for s in fleet.list_summaries()}
    assert stats["faults"].get(kind, 0) > 0, "the fault never fired: the test proves nothing"
    assert (result.status, result.listed, result.fetched) == ("complete", len(listed), len(listed))
    if kind not in ("slow", "duplicate"):
        assert result.retries >= 1
    assert result.requests == sum(
        sum(c.values()) for p, c in stats["requests"].items() if p.startswith("/v1")
    )
    with Store.open(tmp_path / "g.duckdb", read_only=True) as store:
        assert duplicate_keys(store.con) == []
        for cid in sorted(listed):
            assert stored_buckets(store.con, cid) == fleet_buckets(fleet.detail(cid)), cid


@pytest.mark.parametrize("kind", ["invalid_json", "truncated", "error_500", "deleted"])
def test_permanent_fault_is_recorded_with_its_reason_and_the_rest_stored(tmp_path, kind):
    fleet = Fleet(FleetSpec(seed=11, clusters=16, start=START))
    faults = FaultSpec(rates={kind: 0.25}, permanent=frozenset({kind}), seed=5)
    listed = [s["id"] for s in fleet.list_summaries()]
    hit = set(faults.affected(kind, listed))
    assert hit and len(hit) < len(listed)
    sim = Simulator(fleet, api_key=API_KEY, faults=faults)
    with sim.run_in_thread(port=0) as url:
        result = run_snapshot(make_config(tmp_path / "g.duckdb", url, retry_max_seconds=3.0))
    outcome = "gone" if kind == "deleted" else "failed"
    assert result.status == ("complete" if kind == "deleted" else "partial")
    assert result.exit_code == (0 if kind == "deleted" else 3)
    assert (result.fetched, getattr(result, outcome)) == (len(listed) - len(hit), len(hit))
    with Store.open(tmp_path / "g.duckdb", read_only=True) as store:
        failures = store.con.execute(
            "select cluster_id, outcome, reason, http_status, raw_body from meta.run_failures"
        ).fetchall()
        stored = {
            r[0]
            for r in store.con.execute("select cluster_id from snap.cluster_snapshots").fetchall()
        }
        run = store.run(result.run_id)
    assert {f[0] for f in failures} == hit
    assert stored == set(listed) - hit
    assert all(f[1] == outcome and f[2] for f in failures)
    if kind in ("invalid_json", "truncated"):
        assert all(f[4] for f in failures), "the malformed body is kept for diagnosis"
    assert run[f"clusters_{outcome}"] == len(hit)
    assert run["clusters_fetched"] + run["clusters_failed"] + run["clusters_gone"] == len(listed)


# Each lossless variant, two at a time (a run per pair keeps the suite inside its budget).
LOSSLESS = [
    ["bare", "camel"],
    ["string_numbers", "epoch_ms"],
    ["money_numbers", "extra_fields"],
    ["mixed"],
]


@pytest.fixture(scope="module")
def plain_dump(tmp_path_factory, fleet40):
    fleet40.set_clock(START)
    db = tmp_path_factory.mktemp("plain") / "g.duckdb"
    with _serve(fleet40) as url, pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPUCOST_API_KEY", API_KEY)
        run_snapshot(make_config(db, url))
    with Store.open(db, read_only=True) as store:
        return {t: dump(store.con, t, with_run_id=False) for t in SNAP_TABLES}


@pytest.mark.parametrize("variants", LOSSLESS, ids="+".join)
def test_lossless_variants_store_the_same_tables(tmp_path, fleet40, plain_dump, variants):
    fleet40.set_clock(START)
    with _serve(fleet40, variants=VariantSpec.parse(variants, seed=1)) as url:
        result = run_snapshot(make_config(tmp_path / "g.duckdb", url))
    assert result.status == "complete"
    with Store.open(tmp_path / "g.duckdb", read_only=True) as store:
        for table in SNAP_TABLES:
            assert dump(store.con, table, with_run_id=False) == plain_dump[table], table


@pytest.mark.parametrize(
    "variants", [["no_stopped_metrics", "no_gpus", "no_breakdown"], ["empty_points"]], ids="+".join
)
def test_variants_with_missing_parts_load_what_is_there(tmp_path, fleet40, plain_dump, variants):
    fleet40.set_clock(START)
    with _serve(fleet40, variants=VariantSpec.parse(variants, seed=1)) as url:
        result = run_snapshot(make_config(tmp_path / "g.duckdb", url))
    assert (result.status, result.fetched) == ("complete", result.listed)
    with Store.open(tmp_path / "g.duckdb", read_only=True) as store:
        con = store.con
        flags = con.execute(
            "select count(*), sum(has_metrics::int), sum(has_gpu_series::int),"
            " sum(has_cost_breakdown::int) from snap.cluster_snapshots"
        ).fetchall()[0]
        counts = {t: len(dump(con, t)) for t in SNAP_TABLES}
        # what is there equals the plain run's values for the same keys
        kept = con.execute(
            "select * exclude (run_id) from snap.projections order by all"
        ).fetchall()
    plain = {t: len(v) for t, v in plain_dump.items()}
    snapshots, with_metrics, with_gpus, with_breakdown = flags
    assert snapshots == plain["cluster_snapshots"]
    assert kept == plain_dump["projections"]
    if "no_gpus" in variants:
        assert (with_gpus, counts["gpu_metric_points"]) == (0, 0)
        assert (with_breakdown, counts["cost_components"]) == (0, 0)
        stopped = sum(1 for r in plain_dump["cluster_snapshots"] if r[4] == "stopped")
        assert stopped > 0 and with_metrics == snapshots - stopped
        assert 0 < counts["metric_points"] < plain["metric_points"]
    else:
        assert counts["metric_points"] == counts["gpu_metric_points"] == 0
        assert with_metrics == snapshots


def test_from_raw_rebuilds_identical_tables(tmp_path, fleet40):
    db = tmp_path / "g.duckdb"
    fleet40.set_clock(START)
    with _serve(fleet40, variants=VariantSpec.parse(["mixed"], seed=2)) as url:
        for _night in range(2):
            run_snapshot(make_config(db, url))
            fleet40.advance(DAY)
    fleet40.set_clock(START)
    with Store.open(db) as store:
        before = {t: dump(store.con, t) for t in SNAP_TABLES}
        # damage: what a normalization bug might have left behind
        store.con.execute("delete from snap.gpu_metric_points where gpu_id = '0'")
        store.con.execute("update snap.metric_points set cost = cost * 2")
    result = run_snapshot(make_config(db, "http://127.0.0.1:9/v1"), from_raw=True)
    assert (result.status, result.exit_code) == ("complete", 0)
    assert result.fetched == len(before["cluster_snapshots"])
    with Store.open(db, read_only=True) as store:
        after = {t: dump(store.con, t) for t in SNAP_TABLES}
    for table in SNAP_TABLES:
        assert after[table] == before[table], table


def test_wrong_key_raises_auth_error_and_records_the_run_failed(tmp_path, fleet40, monkeypatch):
    fleet40.set_clock(START)
    monkeypatch.setenv("GPUCOST_API_KEY", "not-the-key")
    with _serve(fleet40) as url, pytest.raises(AuthError) as exc:
        run_snapshot(make_config(tmp_path / "g.duckdb", url))
    assert exc.value.exit_code == 4
    assert "not-the-key" not in str(exc.value)
    with Store.open(tmp_path / "g.duckdb", read_only=True) as store:
        runs = store.con.execute("select status, message from meta.runs").fetchall()
    assert len(runs) == 1 and runs[0][0] == "failed" and "AuthError" in runs[0][1]
    assert "not-the-key" not in runs[0][1]


def test_clusters_beyond_the_request_budget_are_recorded_skipped_and_the_run_partial(tmp_path):
    from pipeline.simulator import RateLimit

    fleet = Fleet(FleetSpec(seed=11, clusters=16, start=START))
    listed = {s["id"] for s in fleet.list_summaries()}
    # 10 requests an hour: the list and 9 details fit, the rest cannot within the 1 s allowed
    sim = Simulator(fleet, api_key=API_KEY, rate_limit=RateLimit(10, 3600))
    with sim.run_in_thread(port=0) as url:
        result = run_snapshot(make_config(tmp_path / "g.duckdb", url, retry_max_seconds=1.0))
    assert (result.status, result.exit_code) == ("partial", 3)
    assert result.skipped > 0 and result.fetched > 0
    assert (result.failed, result.fetched + result.skipped) == (0, len(listed))
    with Store.open(tmp_path / "g.duckdb", read_only=True) as store:
        skipped = store.con.execute(
            "select cluster_id, reason from meta.run_failures where outcome = 'skipped'"
        ).fetchall()
        stored = {
            r[0]
            for r in store.con.execute("select cluster_id from snap.cluster_snapshots").fetchall()
        }
    assert len(skipped) == result.skipped and all("budget" in r for _, r in skipped)
    assert stored | {c for c, _ in skipped} == listed


def test_progress_bar_run_completes_and_reports(tmp_path, capsys):
    fleet = Fleet(FleetSpec(seed=11, clusters=5, start=START))
    with _serve(fleet) as url:
        result = run_snapshot(make_config(tmp_path / "g.duckdb", url), progress=True)
    assert (result.status, result.fetched) == ("complete", result.listed)
    assert "snapshot" in capsys.readouterr().err


def test_unreadable_list_records_a_failed_run_with_the_reason(tmp_path):
    import httpx

    from pipeline.errors import ApiError

    def provider(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400, json={"error": "VALIDATION_ERROR", "message": "bad page", "code": 400}
        )

    config = make_config(tmp_path / "g.duckdb", "http://127.0.0.1:9/v1")
    with pytest.raises(ApiError):
        run_snapshot(config, transport=httpx.MockTransport(provider))
    with Store.open(tmp_path / "g.duckdb", read_only=True) as store:
        runs = store.con.execute("select status, message from meta.runs").fetchall()
        failures = store.con.execute(
            "select cluster_id, stage, outcome, reason from meta.run_failures"
        ).fetchall()
    assert runs[0][0] == "failed" and "ApiError" in runs[0][1]
    assert len(failures) == 1 and failures[0][:3] == (None, "list", "failed")
    assert "400" in failures[0][3] or "bad page" in failures[0][3]


@pytest.mark.slow
def test_a_week_of_nights_over_a_large_fleet_stores_every_bucket_once(tmp_path):
    fleet = Fleet(FleetSpec(seed=5, clusters=300, start=START))
    db = tmp_path / "g.duckdb"
    expected: dict[str, dict] = {}
    with _serve(fleet) as url:
        for _night in range(7):
            result = run_snapshot(make_config(db, url))
            assert (result.status, result.fetched) == ("complete", result.listed)
            for s in fleet.list_summaries():
                expected.setdefault(s["id"], {}).update(fleet_buckets(fleet.detail(s["id"])))
            fleet.advance(DAY)
    with Store.open(db, read_only=True) as store:
        assert duplicate_keys(store.con) == []
        runs = store.con.execute("select distinct status from meta.runs").fetchall()
        assert runs == [("complete",)]
        for cid, buckets in sorted(expected.items()):
            assert stored_buckets(store.con, cid) == buckets, cid


def test_a_batch_write_failing_on_the_writer_thread_fails_the_run_and_keeps_earlier_batches(
    tmp_path, fleet40, monkeypatch
):
    # Batches are written on a background thread: its error must still reach the caller, the
    # run must be recorded failed, and the batches committed before it stay.
    fleet40.set_clock(START)
    original = Store.write_batch
    calls = {"n": 0}

    def write_batch(self, batch, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        return original(self, batch, **kwargs)

    monkeypatch.setattr(Store, "write_batch", write_batch)
    with _serve(fleet40) as url, pytest.raises(OSError, match="disk full"):
        run_snapshot(make_config(tmp_path / "g.duckdb", url), batch_clusters=10)
    with Store.open(tmp_path / "g.duckdb", read_only=True) as store:
        runs = store.con.execute("select status, message, clusters_fetched from meta.runs")
        status, message, fetched = runs.fetchall()[0]
        stored = store.con.execute("select count(*) from snap.cluster_snapshots").fetchall()
    assert status == "failed" and "disk full" in message
    assert fetched == 20 and stored[0][0] == 20


@pytest.mark.parametrize("memory_mb", [128, StoreSettings.snapshot_memory_mb])
def test_the_snapshot_runs_within_store_snapshot_memory_mb(
    tmp_path, fleet40, monkeypatch, memory_mb
):
    # DuckDB's memory limit during the snapshot is the operator's setting (the least allowed
    # included), as DuckDB itself reports it while the batches are written.
    fleet40.set_clock(START)
    original = Store.write_batch
    seen: set[str] = set()

    def write_batch(self, batch, **kwargs):
        seen.add(self.con.execute("select current_setting('memory_limit')").fetchone()[0])
        return original(self, batch, **kwargs)

    monkeypatch.setattr(Store, "write_batch", write_batch)
    with _serve(fleet40) as url:
        config = Config(
            api=ApiSettings(url=url),
            store=StoreSettings(db=str(tmp_path / "g.duckdb"), snapshot_memory_mb=memory_mb),
        )
        result = run_snapshot(config, batch_clusters=10)
    with duckdb.connect() as con:
        con.execute(f"set memory_limit = '{memory_mb}MB'")
        expected = con.execute("select current_setting('memory_limit')").fetchone()[0]
    assert (result.status, result.failed, result.fetched) == ("complete", 0, result.listed)
    assert seen == {expected}


def test_duckdb_out_of_memory_is_one_line_naming_the_setting_and_the_run_is_recorded_failed(
    tmp_path, fleet40
):
    # Below the loader's floor of 128 MB (the Config is built directly): DuckDB cannot hold a
    # batch. The operator reads one line naming the setting, not DuckDB's advice in SQL.
    fleet40.set_clock(START)
    with _serve(fleet40) as url, pytest.raises(StoreWriteError) as caught:
        config = Config(
            api=ApiSettings(url=url),
            store=StoreSettings(db=str(tmp_path / "g.duckdb"), snapshot_memory_mb=4),
        )
        run_snapshot(config, batch_clusters=10)
    message = str(caught.value)
    assert "out of memory" in message and "store.snapshot_memory_mb" in message
    assert "\n" not in message and "SET memory_limit" not in message
    with Store.open(tmp_path / "g.duckdb", read_only=True) as store:
        runs = store.con.execute("select status, message from meta.runs").fetchall()
    assert runs == [("failed", f"StoreWriteError: {message}")]
