"""The simulator's HTTP server answers like the contract, over real HTTP on loopback."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from pipeline.simulator.fleet import Fleet, FleetSpec
from pipeline.simulator.server import UNLIMITED_REQUESTS, RateLimit
from tests.shared import api_examples_dir

from .conftest import API_KEY, START

EXAMPLES = api_examples_dir()
ERROR_KEYS = {"error", "message", "code", "details", "request_id", "timestamp"}


def _example(name: str):
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def _key_paths(doc, prefix=""):
    """Every key path of a JSON document, list items merged: 'metrics.current.gpus[].gpu_id'."""
    paths = set()
    if isinstance(doc, dict):
        for key, value in doc.items():
            paths.add(f"{prefix}{key}")
            if key != "variables":  # variable names are data, not schema
                paths |= _key_paths(value, f"{prefix}{key}.")
    elif isinstance(doc, list):
        for item in doc:
            paths |= _key_paths(item, f"{prefix.rstrip('.')}[].")
    return paths


def _all_ids(http, url, **params):
    """Page through the list following has_next; the ids in order of arrival."""
    ids, page = [], 1
    while True:
        body = http.get(f"{url}/clusters", params={**params, "page": page}).json()["data"]
        ids += [item["id"] for item in body["clusters"]]
        if not body["pagination"]["has_next"]:
            return ids, body["pagination"]
        page += 1


def _detail_with_gpus_and_alerts(http, url, fleet):
    for summary in fleet.list_summaries():
        body = http.get(
            f"{url}/clusters/{summary['id']}",
            params={"metrics_window": "7d", "include_logs": "true"},
        ).json()
        metrics = body["data"].get("metrics") or {}
        points = (metrics.get("historical") or {}).get("data_points") or []
        if metrics.get("alerts") and points and "gpus" in points[-1] and "cost" in points[-1]:
            return body
    raise AssertionError("the 40-cluster fleet has no running cluster with gpus and alerts")


def test_detail_carries_every_key_of_the_contract_example(serve, fleet40):
    _, url, http = serve(fleet40)
    body = _detail_with_gpus_and_alerts(http, url, fleet40)
    expected = _key_paths(_example("cluster_detail.json"))
    # the example's optional parts that a given cluster may legitimately lack
    assert body["success"] is True
    missing = expected - _key_paths(body) - {"data.metrics.alerts[].resolved_at"}
    assert not missing, sorted(missing)
    assert body["data"]["metrics"]["window"] == "7d"
    assert body["data"]["metrics"]["interval_seconds"] == 3600
    assert "logs" in body["data"]


def test_list_items_carry_every_summary_field_and_a_pagination_object(serve, fleet40):
    _, url, http = serve(fleet40)
    body = http.get(f"{url}/clusters", params={"limit": 100}).json()
    example = _example("cluster_list.json")["data"]
    for item in body["data"]["clusters"]:
        assert set(example["clusters"][0]) <= set(item)
    assert set(body["data"]["pagination"]) == set(example["pagination"])


def test_served_detail_equals_the_fleets_canonical_detail(serve, fleet40):
    _, url, http = serve(fleet40)
    cid = fleet40.list_summaries()[0]["id"]
    served = http.get(f"{url}/clusters/{cid}", params={"metrics_window": "7d"}).json()["data"]
    assert served == json.loads(json.dumps(fleet40.detail(cid, window="7d")))


@pytest.mark.parametrize("limit", [1, 7, 100])
def test_pagination_returns_every_cluster_exactly_once(serve, fleet40, limit):
    _, url, http = serve(fleet40)
    ids, last = _all_ids(http, url, limit=limit)
    expected = sorted(s["id"] for s in fleet40.list_summaries())
    assert sorted(ids) == expected  # all of them, none twice
    assert last["total"] == len(expected)
    assert last["total_pages"] == -(-len(expected) // limit)
    assert last["page"] == last["total_pages"]


def test_default_limit_is_20_and_a_page_past_the_end_is_empty(serve, fleet40):
    _, url, http = serve(fleet40)
    first = http.get(f"{url}/clusters").json()["data"]
    assert len(first["clusters"]) == min(20, len(fleet40.list_summaries()))
    beyond = http.get(f"{url}/clusters", params={"page": 99}).json()["data"]
    assert beyond["clusters"] == [] and beyond["pagination"]["has_next"] is False


@pytest.mark.parametrize("sort_by", ["created_at", "name", "status", "gpu_count", "cost"])
def test_sorting_orders_by_the_field_both_ways(serve, fleet40, sort_by):
    _, url, http = serve(fleet40)
    field = "hourly_rate" if sort_by == "cost" else sort_by
    convert = {"hourly_rate": Decimal, "gpu_count": int}.get(field, str)
    for order in ("asc", "desc"):
        items = http.get(
            f"{url}/clusters", params={"limit": 100, "sort_by": sort_by, "sort_order": order}
        ).json()
        values = [convert(item[field]) for item in items["data"]["clusters"]]
        assert values == sorted(values, reverse=order == "desc")
        assert len(set(values)) > 1  # the fleet really varies in this field


def test_status_filter_returns_exactly_the_clusters_in_that_status(serve, fleet40):
    _, url, http = serve(fleet40)
    summaries = fleet40.list_summaries()
    statuses = {s["status"] for s in summaries}
    assert len(statuses) >= 2
    for status in statuses:
        ids, last = _all_ids(http, url, status=status, limit=5)
        assert sorted(ids) == sorted(s["id"] for s in summaries if s["status"] == status)
        assert last["total"] == len(ids)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 101},
        {"limit": 0},
        {"page": 0},
        {"page": "two"},
        {"sort_by": "price"},
        {"sort_order": "up"},
        {"status": "sleeping"},
    ],
)
def test_invalid_list_queries_are_validation_errors(serve, fleet40, params):
    _, url, http = serve(fleet40)
    response = http.get(f"{url}/clusters", params=params)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["error"] == "VALIDATION_ERROR" and body["code"] == 400
    assert body["details"]["field"] == next(iter(params))


@pytest.mark.parametrize("params", [{"metrics_window": "2d"}, {"include_metrics": "maybe"}])
def test_invalid_detail_queries_are_validation_errors(serve, fleet40, params):
    _, url, http = serve(fleet40)
    cid = fleet40.list_summaries()[0]["id"]
    response = http.get(f"{url}/clusters/{cid}", params=params)
    assert response.status_code == 400
    assert response.json()["error"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("window,interval", [("1h", 60), ("6h", 300), ("24h", 900), ("7d", 3600)])
def test_metrics_window_selects_the_bucket_interval(serve, fleet40, window, interval):
    _, url, http = serve(fleet40)
    running = next(s["id"] for s in fleet40.list_summaries() if s["status"] == "running")
    metrics = http.get(f"{url}/clusters/{running}", params={"metrics_window": window}).json()[
        "data"
    ]["metrics"]
    assert metrics["window"] == window and metrics["interval_seconds"] == interval


def test_include_flags_leave_out_metrics_and_breakdown_and_add_logs(serve, fleet40):
    _, url, http = serve(fleet40)
    cid = fleet40.list_summaries()[0]["id"]
    bare = http.get(
        f"{url}/clusters/{cid}",
        params={"include_metrics": "false", "include_cost_breakdown": "false"},
    ).json()["data"]
    assert "metrics" not in bare
    assert "cost_breakdown" not in bare["cost"] and "current_hourly_rate" in bare["cost"]
    assert "logs" not in bare
    with_logs = http.get(f"{url}/clusters/{cid}", params={"include_logs": "true"}).json()
    assert isinstance(with_logs["data"]["logs"], list)


def test_unknown_cluster_is_404_shaped_like_the_contract_example(serve, fleet40):
    _, url, http = serve(fleet40)
    response = http.get(f"{url}/clusters/cluster_gone")
    assert response.status_code == 404
    body = response.json()
    assert set(body) == set(_example("error_404.json"))
    assert body["error"] == "RESOURCE_NOT_FOUND" and body["code"] == 404
    assert body["details"] == {"resource": "cluster", "id": "cluster_gone"}
    assert body["request_id"].startswith("req_")
    assert body["timestamp"] == "2026-11-13T03:00:00Z"  # the fleet's virtual now


@pytest.mark.parametrize("auth", [None, "Bearer wrong-key", "Basic " + API_KEY, "Bearer"])
def test_missing_or_wrong_key_is_401_with_the_contract_body(serve, fleet40, auth):
    _, url, _ = serve(fleet40)
    headers = {"Authorization": auth} if auth else {}
    for path in ("/clusters", "/clusters/anything"):
        response = httpx.get(f"{url}{path}", headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert set(body) == ERROR_KEYS and body["error"] == "UNAUTHORIZED"
        assert API_KEY not in response.text


def test_a_key_without_read_permission_is_403(serve, fleet40):
    _, url, _ = serve(fleet40, forbidden_keys=["read-less-key"])
    response = httpx.get(f"{url}/clusters", headers={"Authorization": "Bearer read-less-key"})
    assert response.status_code == 403
    assert response.json()["error"] == "FORBIDDEN" and response.json()["code"] == 403


def test_rate_limit_counts_down_then_answers_429_with_retry_after(serve, fleet40):
    _, url, http = serve(fleet40, rate_limit=RateLimit(requests=5, window_seconds=60))
    remaining = []
    for _ in range(5):
        response = http.get(f"{url}/clusters", params={"limit": 1})
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "5"
        assert response.headers["X-RateLimit-Window"] == "60"
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining == [4, 3, 2, 1, 0]
    response = http.get(f"{url}/clusters")
    assert response.status_code == 429
    body = response.json()
    assert set(body) == set(_example("error_429.json"))
    assert body["error"] == "RATE_LIMIT_EXCEEDED"
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert body["details"]["retry_after"] == retry_after and body["details"]["limit"] == 5
    reset = int(response.headers["X-RateLimit-Reset"])
    assert abs(reset - (time.time() + retry_after)) <= 2
    assert response.headers["X-RateLimit-Remaining"] == "0"


def test_rate_limit_window_reopens_after_it_elapses(serve, fleet40):
    _, url, http = serve(fleet40, rate_limit=RateLimit(requests=2, window_seconds=0.4))
    codes = [http.get(f"{url}/clusters").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    time.sleep(0.5)
    response = http.get(f"{url}/clusters")
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == "1"


def test_unlimited_simulator_still_sends_every_rate_limit_header(serve, fleet40):
    _, url, http = serve(fleet40)
    first = http.get(f"{url}/clusters")
    second = http.get(f"{url}/clusters/{fleet40.list_summaries()[0]['id']}")
    missing = http.get(f"{url}/clusters/no-such-cluster")
    assert missing.status_code == 404
    for response in (first, second, missing):
        assert response.headers["X-RateLimit-Limit"] == str(UNLIMITED_REQUESTS)
        assert response.headers["X-RateLimit-Window"] == "3600"
        assert int(response.headers["X-RateLimit-Reset"]) > time.time()
    assert int(first.headers["X-RateLimit-Remaining"]) == UNLIMITED_REQUESTS - 1
    assert int(second.headers["X-RateLimit-Remaining"]) == UNLIMITED_REQUESTS - 2


def test_clock_endpoint_moves_the_virtual_time_of_the_documents(serve, fleet40):
    sim, url, http = serve(fleet40)
    admin = url.removesuffix("/v1") + "/_sim/clock"
    assert httpx.post(admin, json={"advance_hours": 1}).status_code == 401
    moved = http.post(admin, json={"advance_hours": 24})
    assert moved.json() == {"now": "2026-11-14T03:00:00Z"}
    assert sim.fleet.now == START + timedelta(days=1)
    running = next(s["id"] for s in fleet40.list_summaries() if s["status"] == "running")
    metrics = http.get(f"{url}/clusters/{running}").json()["data"]["metrics"]
    assert metrics["current"]["timestamp"] == "2026-11-14T03:00:00Z"
    assert http.post(admin, json={"now": "2026-11-20T03:00:00Z"}).status_code == 200
    assert http.get(admin).json() == {"now": "2026-11-20T03:00:00Z"}
    assert fleet40.now == datetime(2026, 11, 20, 3, tzinfo=UTC)
    assert http.post(admin, json={"tomorrow": True}).status_code == 400
    assert http.post(admin, content=b"not json").status_code == 400


def test_stats_count_requests_by_path_and_status(serve, fleet40):
    _, url, http = serve(fleet40)
    cid = fleet40.list_summaries()[0]["id"]
    http.get(f"{url}/clusters")
    http.get(f"{url}/clusters", params={"limit": 500})
    for _ in range(3):
        http.get(f"{url}/clusters/{cid}")
    http.get(f"{url}/clusters/nope")
    httpx.get(f"{url}/clusters")
    stats = http.get(url.removesuffix("/v1") + "/_sim/stats").json()
    assert stats["requests"]["/v1/clusters"] == {"200": 1, "400": 1, "401": 1}
    assert stats["requests"]["/v1/clusters/{id}"] == {"200": 3, "404": 1}
    assert stats["requests_total"] == 7
    assert stats["faults"] == {} and stats["unhandled_errors"] == 0
    assert stats["detail_attempts"] == {cid: 3, "nope": 1}
    assert http.post(url.removesuffix("/v1") + "/_sim/reset").status_code == 200
    after = http.get(url.removesuffix("/v1") + "/_sim/stats").json()
    assert after["requests_total"] == 1  # only the reset itself


def test_same_seed_gives_byte_identical_documents_over_http(serve):
    bodies = []
    for seed in (7, 7, 8):
        fleet = Fleet(FleetSpec(seed=seed, clusters=12, start=START))
        _, url, http = serve(fleet)
        listing = http.get(f"{url}/clusters", params={"limit": 100})
        ids = [item["id"] for item in listing.json()["data"]["clusters"]]
        details = [
            http.get(f"{url}/clusters/{cid}", params={"metrics_window": "7d"}).content
            for cid in ids[:4]
        ]
        bodies.append((listing.content, details))
    assert bodies[0] == bodies[1]
    assert bodies[0] != bodies[2]


def test_one_connection_serves_many_requests_and_closes_at_shutdown(fleet40):
    from pipeline.simulator.server import Simulator

    sim = Simulator(fleet40, api_key=API_KEY)
    with httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        with sim.run_in_thread(port=0) as url:
            for _ in range(5):
                response = http.get(f"{url}/clusters")
                assert response.status_code == 200 and response.http_version == "HTTP/1.1"
        with pytest.raises(httpx.TransportError):
            http.get(f"{url}/clusters")


def test_a_fleet_bug_is_answered_500_and_counted_apart_from_faults(serve, fleet40, capfd):
    class Broken:
        now = fleet40.now

        def list_summaries(self):
            raise RuntimeError("boom")

    sim, url, http = serve(Broken())
    response = http.get(f"{url}/clusters")
    assert response.status_code == 500 and response.json()["details"] == {"unhandled": True}
    assert sim.stats()["unhandled_errors"] == 1 and sim.stats()["faults"] == {}
    assert "boom" in capfd.readouterr().err
