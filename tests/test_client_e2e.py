"""ApiClient end to end: the real simulator over real HTTP on 127.0.0.1, faults, variants, limits.

Every count is checked against the simulator's own (`/_sim/stats`, `FaultSpec.affected`) and
every value against the fleet's documents.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pipeline.client import ApiClient, FetchResult
from pipeline.errors import AuthError
from pipeline.simulator import (
    CANARY,
    FaultSpec,
    Fleet,
    FleetSpec,
    RateLimit,
    Simulator,
    VariantSpec,
)

KEY = "e2e-key-9b7c51d3"
START = datetime(2026, 11, 13, 3, tzinfo=UTC)


def _fleet(clusters: int) -> Fleet:
    fleet = Fleet(FleetSpec(seed=7, clusters=clusters, start=START))
    fleet.advance(timedelta(days=7))  # a full 7-day window behind every older cluster
    return fleet


@pytest.fixture(scope="module")
def fleet40() -> Fleet:
    return _fleet(40)


@pytest.fixture(scope="module")
def fleet20() -> Fleet:
    return _fleet(20)


def _run(
    sim: Simulator, *, include_logs: bool = False, ids: list[str] | None = None, **kwargs: Any
) -> tuple[list[dict[str, Any]], dict[str, FetchResult], ApiClient, dict[str, Any]]:
    """List and fetch everything through a fresh client; return the simulator's stats too."""
    with (
        sim.run_in_thread(port=0) as url,
        ApiClient(url, KEY, include_logs=include_logs, **kwargs) as client,
    ):
        summaries = client.list_clusters()
        results: dict[str, FetchResult] = {}
        for result in client.fetch_details(ids if ids is not None else summaries):
            assert result.cluster_id not in results, "a cluster came back twice"
            results[result.cluster_id] = result
        stats = httpx.get(
            url.removesuffix("/v1") + "/_sim/stats", headers={"Authorization": f"Bearer {KEY}"}
        ).json()
    return summaries, results, client, stats


# ---------------------------------------------------------------------------------- baseline


@pytest.fixture(scope="module")
def baseline(fleet40: Fleet) -> tuple[list[dict[str, Any]], dict[str, FetchResult]]:
    summaries, results, _, _ = _run(Simulator(fleet40, api_key=KEY), include_logs=True)
    return summaries, results


def test_every_cluster_of_a_40_cluster_fleet_is_fetched_once(fleet40: Fleet) -> None:
    summaries, results, client, stats = _run(Simulator(fleet40, api_key=KEY), page_size=7)
    expected = [s["id"] for s in fleet40.list_summaries()]
    assert sorted(s["id"] for s in summaries) == sorted(expected)
    assert sorted(results) == sorted(expected)
    assert all(r.outcome == "ok" and r.attempts == 1 for r in results.values())
    assert stats["detail_attempts"] == {cid: 1 for cid in expected}
    assert stats["list_attempts"] and sum(stats["list_attempts"].values()) == 6  # 39 at 7 a page
    assert client.stats.requests == stats["requests_total"]
    assert client.stats.retries == 0 and client.stats.throttled == 0


def test_details_carry_the_fleets_values(
    fleet40: Fleet, baseline: tuple[list[dict[str, Any]], dict[str, FetchResult]]
) -> None:
    _, results = baseline
    for cid, result in results.items():
        truth = fleet40.detail(cid, window="7d", include_logs=True)
        detail = result.detail
        assert detail is not None and truth is not None
        snap = detail.rows("cluster_snapshots")[0]
        assert snap["status"] == truth["status"]
        assert snap["gpu_count"] == truth["configuration"]["gpu_count"]
        assert snap["hourly_rate"] == Decimal(str(truth["cost"]["current_hourly_rate"]))
        assert snap["currency"] == truth["cost"]["currency"]
        true_points = truth.get("metrics", {}).get("historical", {}).get("data_points", [])
        points = detail.rows("metric_points")
        assert len(points) == len(true_points)
        for point, true_point in zip(points, true_points, strict=True):
            assert point["bucket_at"] == datetime.fromisoformat(true_point["timestamp"])
            assert point["gpu_utilization"] == float(true_point["gpu_utilization"])
            if "cost" in true_point:
                assert point["cost"] == Decimal(str(true_point["cost"]))
            assert (point["gpu_series_count"] or 0) == len(true_point.get("gpus", []))
        names = set(truth.get("environment", {}).get("variables", {}))
        assert all(name not in repr(detail) for name in names if len(name) > 3)


def test_planted_secrets_never_reach_details_or_raw_bodies(
    fleet40: Fleet, baseline: tuple[list[dict[str, Any]], dict[str, FetchResult]]
) -> None:
    _, results = baseline
    planted = [
        cid
        for cid in results
        if CANARY in json.dumps(fleet40.detail(cid, window="7d", include_logs=True))
    ]
    assert planted, "the fleet plants secrets: without them this test proves nothing"
    for result in results.values():
        assert result.raw_body is not None
        assert CANARY.encode() not in result.raw_body
        assert CANARY not in repr(result.detail)


# ---------------------------------------------------------------------------------- variants

LOSSLESS = ["bare", "camel", "string_numbers", "money_numbers", "epoch_ms", "extra_fields", "mixed"]


@pytest.fixture(scope="module")
def sample_ids(fleet40: Fleet) -> list[str]:
    """A dozen clusters covering every status the fleet has (stopped ones for lossy variants)."""
    by_status: dict[str, list[str]] = {}
    for summary in fleet40.list_summaries():
        by_status.setdefault(summary["status"], []).append(summary["id"])
    ids = [cid for group in by_status.values() for cid in group[:4]]
    assert "stopped" in by_status
    return ids[:12]


@pytest.mark.parametrize("variant", LOSSLESS)
def test_each_lossless_variant_gives_the_same_canonical_details(
    variant: str,
    fleet40: Fleet,
    sample_ids: list[str],
    baseline: tuple[list[dict[str, Any]], dict[str, FetchResult]],
) -> None:
    base_summaries, base = baseline
    sim = Simulator(fleet40, api_key=KEY, variants=VariantSpec.parse([variant], seed=3))
    summaries, results, _, _ = _run(sim, include_logs=True, ids=sample_ids)
    assert {s["id"]: s for s in summaries} == {s["id"]: s for s in base_summaries}
    for cid in sample_ids:
        assert results[cid].outcome == "ok"
        assert results[cid].detail == base[cid].detail, f"{variant}: {cid} differs"


UTILIZATIONS = (
    "gpu_utilization",
    "gpu_memory_utilization",
    "cpu_utilization",
    "memory_utilization",
)


def _tables(detail: Any) -> dict[str, list[dict[str, Any]]]:
    return {table: detail.rows(table) for table in detail.columns}


@pytest.mark.parametrize(
    ("variant", "removed"),
    [
        ("no_gpus", ["gpu_current", "gpu_metric_points"]),
        ("no_breakdown", ["cost_components"]),
        ("empty_points", ["metric_points", "gpu_metric_points"]),
        ("no_stopped_metrics", []),
    ],
)
def test_each_lossy_variant_only_loses_its_part(
    variant: str,
    removed: list[str],
    fleet40: Fleet,
    sample_ids: list[str],
    baseline: tuple[list[dict[str, Any]], dict[str, FetchResult]],
) -> None:
    _, base = baseline
    sim = Simulator(fleet40, api_key=KEY, variants=VariantSpec.parse([variant]))
    _, results, _, _ = _run(sim, include_logs=True, ids=sample_ids)
    for cid in sample_ids:
        expected = _tables(base[cid].detail)
        got = _tables(results[cid].detail)
        snap = expected["cluster_snapshots"][0]
        for table in removed:
            expected[table] = []
        if variant == "no_gpus":
            snap["has_gpu_series"] = False
            for point in expected["metric_points"]:
                point["gpu_series_count"] = None
        if variant == "no_breakdown":
            snap.update(has_cost_breakdown=False, total_cost_to_date=None, window_cost=None)
        if variant == "empty_points":
            snap["has_gpu_series"] = False
        if variant == "no_stopped_metrics" and snap["status"] == "stopped":
            for table in ("alerts", "gpu_current", "metric_points", "gpu_metric_points"):
                expected[table] = []
            snap.update(has_metrics=False, has_gpu_series=False, interval_seconds=None)
            snap.update(metrics_window=None)
            snap.update({f"current_{n}": None for n in UTILIZATIONS})
            # without metrics.current the snapshot instant is updated_at
            for rows in expected.values():
                for row in rows:
                    row["snapshot_at"] = snap["updated_at"]
        assert got == expected, f"{variant}: {cid} differs"


# ---------------------------------------------------------------------------------- faults

TRANSIENT = [
    "error_500",
    "error_502",
    "error_503",
    "timeout",
    "drop",
    "truncated",
    "invalid_json",
    "slow",
]


def _fault_run(
    fleet: Fleet, spec: FaultSpec, **kwargs: Any
) -> tuple[list[str], dict[str, FetchResult], ApiClient, dict[str, Any]]:
    ids = [s["id"] for s in fleet.list_summaries()]
    _, results, client, stats = _run(Simulator(fleet, api_key=KEY, faults=spec), **kwargs)
    assert sorted(results) == sorted(ids)
    for result in results.values():
        assert result.outcome in ("ok", "gone", "failed")
        assert (result.reason is None) == (result.outcome == "ok")
        # The simulator counted exactly the requests the client says it made.
        assert stats["detail_attempts"][result.cluster_id] == result.attempts
    return ids, results, client, stats


@pytest.mark.parametrize("kind", TRANSIENT)
def test_transient_fault_is_recovered_and_counted(kind: str, fleet20: Fleet) -> None:
    spec = FaultSpec(rates={kind: 0.3}, seed=11, timeout_seconds=2.0)
    # Only the timeout fault needs a short client timeout; elsewhere a loaded machine must not
    # turn a slow read into a retry the simulator did not cause.
    timeout = 1.0 if kind == "timeout" else 30.0
    ids, results, client, stats = _fault_run(fleet20, spec, timeout=timeout)
    affected = set(spec.affected(kind, ids))
    assert affected, "the seed must hit some clusters"
    assert all(r.outcome == "ok" for r in results.values())
    retried = {cid for cid, r in results.items() if r.attempts > 1}
    if kind == "timeout":
        assert affected <= retried
    else:
        assert retried == (set() if kind == "slow" else affected)
    detail_faults = sum(stats.get("faulted_clusters", {}).get(cid, {}).get(kind, 0) for cid in ids)
    assert detail_faults == len(affected)
    if kind != "slow":
        assert client.stats.retries == stats["faults"][kind]


@pytest.mark.parametrize("kind", ["invalid_json", "truncated"])
def test_permanently_malformed_cluster_fails_with_redacted_body_and_the_rest_succeed(
    kind: str, fleet20: Fleet
) -> None:
    spec = FaultSpec(rates={kind: 0.25}, permanent=frozenset({kind}), seed=5)
    ids, results, _, stats = _fault_run(fleet20, spec)
    affected = set(spec.affected(kind, ids))
    assert affected
    failed = {cid for cid, r in results.items() if r.outcome == "failed"}
    assert failed == affected
    for cid in affected:
        result = results[cid]
        assert "invalid JSON" in (result.reason or "") and result.attempts == 2
        assert result.raw_body and CANARY.encode() not in result.raw_body
    assert stats["faults"][kind] == 2 * len(affected)


def test_permanent_server_error_gives_up_within_retry_max_seconds(fleet20: Fleet) -> None:
    spec = FaultSpec(rates={"error_500": 0.2}, permanent=frozenset({"error_500"}), seed=2)
    ids, results, _, stats = _fault_run(fleet20, spec, retry_max_seconds=1.5)
    affected = set(spec.affected("error_500", ids))
    assert affected
    assert {cid for cid, r in results.items() if r.outcome == "failed"} == affected
    for cid in affected:
        assert results[cid].http_status == 500 and "HTTP 500" in (results[cid].reason or "")
    assert stats["faults"]["error_500"] == sum(results[cid].attempts for cid in affected)


def test_clusters_deleted_between_list_and_details_are_gone(fleet20: Fleet) -> None:
    spec = FaultSpec(rates={"deleted": 0.3}, seed=4)
    ids, results, _, stats = _fault_run(fleet20, spec)
    affected = set(spec.affected("deleted", ids))
    assert affected
    assert {cid for cid, r in results.items() if r.outcome == "gone"} == affected
    assert all(results[cid].attempts == 1 and results[cid].http_status == 404 for cid in affected)
    assert stats["faults"]["deleted"] == len(affected)


def test_duplicated_list_items_are_fetched_once(fleet20: Fleet) -> None:
    spec = FaultSpec(rates={"duplicate": 1.0}, seed=1)
    ids, results, _, stats = _fault_run(fleet20, spec, page_size=5)
    assert stats["faults"].get("duplicate", 0) >= 1
    assert len(results) == len(ids)


def test_429_storm_waits_and_every_cluster_succeeds(fleet20: Fleet) -> None:
    spec = FaultSpec(rates={"storm_429": 0.05}, seed=9, storm_seconds=0.5)
    _, results, client, stats = _run(Simulator(fleet20, api_key=KEY, faults=spec))
    assert all(r.outcome == "ok" for r in results.values())
    assert stats["storms"] >= 1
    assert client.stats.throttled == stats["faults"]["storm_429"]


# ---------------------------------------------------------------------------------- limits


def test_behind_a_rate_limit_the_client_paces_and_gets_no_429s(fleet20: Fleet) -> None:
    sim = Simulator(fleet20, api_key=KEY, rate_limit=RateLimit(12, 2.0))
    _, results, client, stats = _run(sim)
    assert all(r.outcome == "ok" for r in results.values())
    assert len(results) + 1 > 12  # the run needed more than one window
    # Unpaced, 20 requests against 12 a window draw 8 429s. Paced, none are expected; one or
    # two are tolerated because a request delayed in flight on a loaded machine can land in
    # the provider's next window, which then starts early.
    throttled = sum(counts.get("429", 0) for counts in stats["requests"].values())
    assert client.stats.throttled == throttled <= 2
    assert client.stats.waited_seconds > 0


def test_budget_smaller_than_the_fleet_fetches_running_and_recent_first(fleet20: Fleet) -> None:
    sim = Simulator(fleet20, api_key=KEY, rate_limit=RateLimit(8, 3600.0))
    summaries, results, client, stats = _run(sim, retry_max_seconds=5.0)
    rank = {"running": 0, "error": 1}
    order = sorted(
        summaries, key=lambda s: (rank.get(s["status"], 2), -s["updated_at"].timestamp())
    )
    expected_ok = {s["id"] for s in order[:7]}  # 8 requests: 1 list + 7 details
    assert {cid for cid, r in results.items() if r.outcome == "ok"} == expected_ok
    skipped = [r for r in results.values() if r.outcome == "skipped"]
    assert len(skipped) == len(summaries) - 7
    assert all("request budget" in (r.reason or "") for r in skipped)
    assert client.stats.throttled == 0 and client.stats.requests == 8


# ---------------------------------------------------------------------------------- auth


@pytest.fixture
def small_sim() -> Iterator[Simulator]:
    yield Simulator(_fleet(3), api_key=KEY, forbidden_keys=["read-nothing"])


def test_wrong_key_is_refused_with_auth_error(small_sim: Simulator) -> None:
    with (
        small_sim.run_in_thread(port=0) as url,
        ApiClient(url, "not-the-key") as client,
        pytest.raises(AuthError, match="401") as info,
    ):
        client.list_clusters()
    assert "not-the-key" not in str(info.value)


def test_key_without_permission_is_refused_with_auth_error(small_sim: Simulator) -> None:
    with (
        small_sim.run_in_thread(port=0) as url,
        ApiClient(url, "read-nothing") as client,
        pytest.raises(AuthError, match="403"),
    ):
        client.list_clusters()
