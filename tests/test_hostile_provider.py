"""A provider that lies, end to end over real HTTP (tests/hostile.py): nothing wrong reaches the
money, one cluster's lie fails that cluster alone, and every night ends."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from pipeline.errors import EXIT_PARTIAL, ApiError
from pipeline.focus import build_focus
from pipeline.models import build_models
from pipeline.snapshot import run_snapshot
from pipeline.store import Store
from tests.hostile import HostileProvider, Reply, detail_doc, fleet, listing, recent_hour
from tests.snapshot_helpers import API_KEY, make_config

YEAR_2031 = datetime(2031, 1, 1, 3, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUCOST_API_KEY", API_KEY)


def _failures(db: Any) -> dict[str, str]:
    with Store.open(db, read_only=True) as store:
        rows = store.con.execute(
            "select cluster_id, reason from meta.run_failures where outcome = 'failed'"
        ).fetchall()
    return dict(rows)


def _query(db: Any, sql: str) -> list[tuple]:
    with Store.open(db, read_only=True) as store:
        return store.con.execute(sql).fetchall()


# ------------------------------------------------------------------------------------- time


@pytest.mark.parametrize("date", ["provider", "none"], ids=["date-header", "no-date-header"])
def test_a_snapshot_stamped_2031_fails_its_cluster_and_later_revisions_win(tmp_path, date):
    t = recent_hour(3)
    headers: dict[str, Any] = {"date": t} if date == "provider" else {"date": None}
    db = tmp_path / "g.duckdb"
    provider = HostileProvider()
    # Night 1: c1's clock says 2031; its 24 buckets (45 %, 6.90 each) are the real hours.
    lying = detail_doc("c1", YEAR_2031, util=45.0, bucket_cost="6.90", bucket_from=t)
    docs = {"c1": lying, **{c: detail_doc(c, t) for c in ("c2", "c3", "c4")}}
    fleet(provider, docs, **headers)
    with provider.serve() as url:
        first = run_snapshot(make_config(db, url))
        # Night 2, two hours later: the same buckets revised to 90 %, 9.90 each.
        later = t + timedelta(hours=2)
        headers = {"date": later} if date == "provider" else {"date": None}
        revised = {
            c: detail_doc(c, later, util=90.0, bucket_cost="9.90", bucket_from=t)
            for c in ("c1", "c2", "c3", "c4")
        }
        fleet(provider, revised, **headers)
        second = run_snapshot(make_config(db, url))
    assert (first.exit_code, first.fetched, first.failed) == (EXIT_PARTIAL, 3, 1)
    reason = _failures(db)["c1"]
    assert "2031-01-01T03:00:00Z" in reason
    assert (second.status, second.fetched) == ("complete", 4)
    rows = _query(
        db,
        "select count(*), min(gpu_utilization), max(gpu_utilization), sum(cost)"
        " from snap.metric_points where cluster_id = 'c1'",
    )
    assert rows == [(24, 90.0, 90.0, Decimal("237.600000"))]
    (as_of,) = _query(db, "select max(snapshot_at) from snap.cluster_snapshots")[0]
    assert as_of == later


@pytest.mark.parametrize(
    ("date", "named"),
    [(None, "ahead of the local clock"), ("recent", "ahead of the provider's clock")],
    ids=["no-date-header", "date-header"],
)
def test_a_lone_cluster_stamped_2031_fails_against_the_providers_or_the_local_clock(
    tmp_path, date, named
):
    db = tmp_path / "g.duckdb"
    provider = HostileProvider()
    # The buckets agree with the lying instant: only a clock outside the document tells.
    sent = recent_hour(2) if date == "recent" else None
    fleet(provider, {"c1": detail_doc("c1", YEAR_2031)}, date=sent)
    with provider.serve() as url:
        result = run_snapshot(make_config(db, url))
    assert (result.exit_code, result.fetched) == (EXIT_PARTIAL, 0)
    reason = _failures(db)["c1"]
    assert named in reason and "2031-01-01T03:00:00Z" in reason
    assert _query(db, "select count(*) from snap.metric_points") == [(0,)]


def test_a_cluster_years_behind_the_others_fails(tmp_path):
    t = recent_hour(2)
    db = tmp_path / "g.duckdb"
    provider = HostileProvider()
    old = datetime(2019, 5, 1, tzinfo=UTC)
    docs = {c: detail_doc(c, t) for c in ("c1", "c2", "c3", "c4")}
    docs["c9"] = detail_doc("c9", old)
    # The list order is the fetch order only roughly: c9 is checked after enough peers
    # whatever the order, since peers and Date both speak for the run's time.
    fleet(provider, docs)
    with provider.serve() as url:
        result = run_snapshot(make_config(db, url, concurrency=1))
    assert result.fetched == 4 and result.failed == 1
    assert "2019-05-01T00:00:00Z" in _failures(db)["c9"]


def test_absurd_timestamps_are_refused_at_ingestion(tmp_path):
    t = recent_hour(2)
    db = tmp_path / "g.duckdb"
    provider = HostileProvider()
    year_9999 = detail_doc("c1", t)
    year_9999["data"]["metrics"]["historical"]["data_points"][3]["timestamp"] = (
        "9999-12-31T00:00:00Z"
    )
    before_1970 = detail_doc("c2", t)
    before_1970["data"]["created_at"] = -86_400_000  # epoch milliseconds, 1969-12-31
    bucket_ahead = detail_doc("c3", t)
    bucket_ahead["data"]["metrics"]["historical"]["data_points"][0]["timestamp"] = (
        "2031-06-01T00:00:00Z"
    )
    fleet(
        provider,
        {"c1": year_9999, "c2": before_1970, "c3": bucket_ahead, "ok": detail_doc("ok", t)},
    )
    with provider.serve() as url:
        result = run_snapshot(make_config(db, url))
    assert (result.exit_code, result.fetched, result.failed) == (EXIT_PARTIAL, 1, 3)
    failures = _failures(db)
    assert "data_points[3].timestamp" in failures["c1"] and "9999-12-31" in failures["c1"]
    assert "created_at" in failures["c2"] and "-86400000" in failures["c2"]
    assert "data_points[0].timestamp" in failures["c3"] and "2031-06-01" in failures["c3"]
    assert _query(db, "select max(bucket_at) < now() from snap.metric_points") == [(True,)]


# ------------------------------------------------------------------------------ contract


def _bad_fleet(t: datetime) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[str, str]]]:
    """Clusters each breaking one rule, and (field, value) each failure must name."""
    good = detail_doc("good", t, gpus=2)
    docs: dict[str, dict[str, Any]] = {"good": good}
    expect: dict[str, tuple[str, str]] = {}

    def bad(cid: str, path: str, value: str, change: Any) -> None:
        doc = copy.deepcopy(good)
        doc["data"]["id"] = cid
        change(doc["data"])
        docs[cid] = doc
        expect[cid] = (path, value)

    def point(data: dict[str, Any]) -> dict[str, Any]:
        return data["metrics"]["historical"]["data_points"][5]

    bad(
        "neg-rate",
        "cost.current_hourly_rate",
        "-4.00",
        lambda d: d["cost"].update(current_hourly_rate="-4.00"),
    )
    bad("neg-cost", "data_points[5].cost", "-6.90", lambda d: point(d).update(cost="-6.90"))
    bad(
        "neg-component",
        "cost.cost_breakdown.gpu_cost_per_hour",
        "-3",
        lambda d: d["cost"]["cost_breakdown"].update(gpu_cost_per_hour=-3),
    )
    bad(
        "util-120",
        "data_points[5].gpu_utilization",
        "120.5",
        lambda d: point(d).update(gpu_utilization=120.5),
    )
    bad(
        "util-neg",
        "data_points[5].gpus[1].utilization",
        "-5.0",
        lambda d: point(d)["gpus"][1].update(utilization=-5.0),
    )
    bad("html-currency", "cost.currency", "<b>", lambda d: d["cost"].update(currency="<b>"))
    bad("no-currency", "cost.currency", "missing", lambda d: d["cost"].pop("currency"))
    bad("nan-cost", "data_points[5].cost", "NaN", lambda d: point(d).update(cost="NaN"))
    bad(
        "huge",
        "cost.cost_projections.monthly",
        "1E+15",
        lambda d: d["cost"]["cost_projections"].update(monthly="1E+15"),
    )
    bad(
        "inf-util",
        "metrics.current.gpu_utilization",
        "Infinity",
        lambda d: d["metrics"]["current"].update(gpu_utilization="Infinity"),
    )
    repaired = copy.deepcopy(good)
    repaired["data"]["id"] = "lower-usd"
    repaired["data"]["cost"]["currency"] = "usd"
    docs["lower-usd"] = repaired
    return docs, expect


def test_values_outside_the_contract_fail_their_cluster_and_the_build_still_succeeds(tmp_path):
    t = recent_hour(2)
    db = tmp_path / "g.duckdb"
    docs, expect = _bad_fleet(t)
    provider = HostileProvider()
    fleet(provider, docs)
    with provider.serve() as url:
        config = make_config(db, url)
        result = run_snapshot(config)
    assert result.exit_code == EXIT_PARTIAL
    assert (result.fetched, result.failed) == (2, len(expect))
    failures = _failures(db)
    assert set(failures) == set(expect)
    for cid, (path, value) in expect.items():
        assert path in failures[cid] and value in failures[cid], (cid, failures[cid])
    stored = _query(db, "select cluster_id, currency from snap.cluster_snapshots order by 1")
    assert stored == [("good", "USD"), ("lower-usd", "USD")]
    built = build_models(config)  # raises DataTestError (exit 1) when a data test fails
    assert built.tests_passed > 0 and built.rows_per_mart["idle_waste_daily"] > 0
    negative = _query(
        db,
        "select (select count(*) from marts.idle_waste_daily where idle_cost < 0"
        " or unused_capacity_cost < 0 or gpu_hours < 0)"
        " + (select count(*) from marts.fleet_daily where cost < 0)"
        " + (select count(*) from snap.metric_points where cost < 0)",
    )
    assert negative == [(0,)]
    clusters = _query(db, "select cluster_id, currency from marts.clusters order by 1")
    assert clusters == [("good", "USD"), ("lower-usd", "USD")]
    with Store.open(db) as store:
        focus = build_focus(store.con)
    assert focus.height > 0 and focus["BilledCost"].cast(float).min() >= 0
    assert set(focus["BillingCurrency"].unique()) == {"USD"}


# ------------------------------------------------------------------------------- nesting


@pytest.mark.parametrize("depth", [100, 100_000])
def test_a_detail_nested_deep_fails_that_cluster_alone(tmp_path, depth):
    t = recent_hour(2)
    db = tmp_path / "g.duckdb"
    provider = HostileProvider()
    fleet(provider, {c: detail_doc(c, t) for c in ("a", "b")})
    deep = b'{"success": true, "data": {"id": "deep", "description": ' + b"[" * depth
    deep += b"]" * depth + b"}}"
    provider.routes["/v1/clusters"] = Reply(body=listing(["a", "deep", "b"]))
    provider.routes["/v1/clusters/deep"] = Reply(body=deep)
    with provider.serve() as url:
        result = run_snapshot(make_config(db, url))
    assert (result.exit_code, result.fetched, result.failed) == (EXIT_PARTIAL, 2, 1)
    assert "nested deeper than 64 levels" in _failures(db)["deep"]


# ---------------------------------------------------------------------------- pagination


def _list_requests(provider: HostileProvider) -> int:
    return sum(p == "/v1/clusters" for p in provider.paths())


def test_has_next_forever_against_its_own_total_pages_is_a_clear_error(tmp_path):
    provider = HostileProvider(
        {"/v1/clusters": Reply(body=listing(["a", "b"], total=100, total_pages=1, has_next=True))}
    )
    with provider.serve() as url, pytest.raises(ApiError, match="contradicts itself") as caught:
        run_snapshot(make_config(tmp_path / "g.duckdb", url))
    assert caught.value.exit_code == 1
    assert _list_requests(provider) == 1
    runs = _query(tmp_path / "g.duckdb", "select status, message from meta.runs")
    assert runs[0][0] == "failed" and "contradicts itself" in runs[0][1]


def test_a_list_repeating_the_same_ids_with_has_next_ends_after_one_more_page(tmp_path):
    t = recent_hour(2)
    provider = HostileProvider()
    fleet(provider, {c: detail_doc(c, t) for c in ("a", "b")})
    provider.routes["/v1/clusters"] = Reply(body=listing(["a", "b"], has_next=True))
    with provider.serve() as url:
        result = run_snapshot(make_config(tmp_path / "g.duckdb", url))
    assert (result.status, result.listed, result.fetched) == ("complete", 2, 2)
    assert _list_requests(provider) == 2


def test_new_ids_forever_stop_at_a_cap_relative_to_the_lists_own_total(tmp_path):
    def endless(query: dict[str, str]) -> Reply:
        page = int(query.get("page", "1"))
        ids = [f"p{page}-{k}" for k in range(3)]
        return Reply(body=listing(ids, page=page, limit=3, total=6, has_next=True))

    provider = HostileProvider({"/v1/clusters": endless})
    with provider.serve() as url, pytest.raises(ApiError) as caught:
        run_snapshot(make_config(tmp_path / "g.duckdb", url, page_size=3))
    assert "contradicts itself" in str(caught.value) or "does not end" in str(caught.value)
    # total 6 at 3 a page: 2 pages, plus the slack for clusters created while paging
    assert _list_requests(provider) <= 4


# -------------------------------------------------------------------- bounded nights


def test_a_provider_answering_503_to_every_detail_trips_the_breaker(tmp_path):
    t = recent_hour(2)
    ids = [f"c{k:02d}" for k in range(40)]
    provider = HostileProvider({"/v1/clusters": Reply(body=listing(ids))})
    for cid in ids:
        provider.routes[f"/v1/clusters/{cid}"] = Reply(
            status=503, body={"error": "SERVICE_UNAVAILABLE", "message": "down", "code": 503}
        )
    db = tmp_path / "g.duckdb"
    with provider.serve() as url:
        # Every cluster alone would retry for retry_max_seconds (300 s by default).
        result = run_snapshot(
            make_config(db, url, concurrency=4, breaker_failures=8, breaker_seconds=0.2)
        )
    assert (result.exit_code, result.fetched, result.failed) == (EXIT_PARTIAL, 0, 40)
    reasons = _failures(db)
    assert all(r.startswith("provider unavailable") for r in reasons.values()), reasons
    detail_requests = len(provider.paths()) - 1
    assert detail_requests < 40, "the rest were not recorded failed without a request"
    (message,) = _query(db, "select status from meta.runs")[0]
    assert message == "partial"
    assert t  # the fleet's time plays no part: nothing was read


def test_the_run_deadline_ends_a_night_of_slow_failures(tmp_path):
    ids = [f"c{k:02d}" for k in range(20)]
    provider = HostileProvider({"/v1/clusters": Reply(body=listing(ids))})
    for cid in ids:
        provider.routes[f"/v1/clusters/{cid}"] = Reply(status=503, body=b"{}")
    db = tmp_path / "g.duckdb"
    with provider.serve() as url:
        result = run_snapshot(
            make_config(db, url, concurrency=2, run_deadline_seconds=2.0, breaker_failures=10_000)
        )
    assert (result.exit_code, result.fetched, result.failed) == (EXIT_PARTIAL, 0, 20)
    reasons = _failures(db)
    assert all("run deadline reached" in r for r in reasons.values()), reasons


# ------------------------------------------------------------------------------- cluster ids


def test_cluster_ids_that_are_not_path_segments_fail_and_are_never_sent(tmp_path):
    t = recent_hour(2)
    bad = [".", "..", "a/b", "a%2Fb", "a\x07b", "..%2F.."]
    provider = HostileProvider()
    fleet(provider, {"ok": detail_doc("ok", t)})
    provider.routes["/v1/clusters"] = Reply(body=listing(["ok", *bad]))
    db = tmp_path / "g.duckdb"
    with provider.serve() as url:
        result = run_snapshot(make_config(db, url))
    assert (result.exit_code, result.fetched, result.failed) == (EXIT_PARTIAL, 1, len(bad))
    assert set(provider.paths()) == {"/v1/clusters", "/v1/clusters/ok"}
    assert set(_failures(db)) == set(bad)
