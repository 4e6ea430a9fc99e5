"""ApiClient against a small in-process router (httpx.MockTransport): no network, fake time."""

from __future__ import annotations

import copy
import gc
import gzip
import json
import logging
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.client import ApiClient, FetchResult
from pipeline.config import load_config
from pipeline.errors import ApiError, AuthError, ConfigError
from pipeline.normalize import normalize_detail, parse_json
from tests.shared import api_example

KEY = "sk-test-KEY-4f1d9e2a7b"
BASE = "https://api.gpu.test/v1"
EXAMPLE = api_example("cluster_detail.json")
if not EXAMPLE.is_file():
    EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "api" / "examples" / EXAMPLE.name
_DETAIL = json.loads(EXAMPLE.read_text())["data"]
_T0 = datetime(2026, 11, 20, 3, tzinfo=UTC)


class FakeClock:
    """Wall-clock seconds that move only when someone sleeps; records every sleep."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """The provider as a small router: list (paged), details, scripted faults, a rate limit."""

    def __init__(
        self,
        n: int = 5,
        *,
        wrap: bool = True,
        pagination: bool = True,
        clock: FakeClock | None = None,
        rate: tuple[int, float] | None = None,
        statuses: list[str] | None = None,
        sliding: bool = False,
    ):
        self.wrap = wrap
        self.sliding = sliding
        self.sent: deque[float] = deque()
        self.pagination = pagination
        self.clock = clock or FakeClock()
        self.rate = rate
        self.window_start = self.clock.time()
        self.window_count = 0
        self.details: dict[str, dict[str, Any]] = {}
        self.summaries: list[dict[str, Any]] = []
        for i in range(n):
            cid = f"cls_{i:03d}"
            status = statuses[i] if statuses else "running"
            updated = (_T0 - timedelta(hours=i)).isoformat().replace("+00:00", "Z")
            doc = copy.deepcopy(_DETAIL)
            doc.update(id=cid, name=f"c{i}", status=status, updated_at=updated)
            self.details[cid] = doc
            self.summaries.append(
                {
                    "id": cid,
                    "name": f"c{i}",
                    "status": status,
                    "hourly_rate": "6.9000",
                    "updated_at": updated,
                }
            )
        self.scripts: dict[str, list[Reply]] = defaultdict(list)
        self.requests: list[httpx.Request] = []
        self.request_times: list[float] = []
        self.inflight = 0
        self.max_inflight = 0
        self.delay = 0.0
        self.throttled = 0
        self._lock = threading.Lock()

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to `path` with `replies`, then normally."""
        self.scripts[path].extend(replies)

    def _rate_headers(self) -> tuple[dict[str, str], bool]:
        if self.rate is None:
            return {}, True
        limit, window = self.rate
        now = self.clock.time()
        if self.sliding:
            # A request counts for `window` seconds after it was made.
            while self.sent and self.sent[0] <= now - window:
                self.sent.popleft()
            allowed = len(self.sent) < limit
            if allowed:
                self.sent.append(now)
            used = len(self.sent)
            reset = (self.sent[0] if self.sent else now) + window
        else:
            while now >= self.window_start + window:
                self.window_start += window
                self.window_count = 0
            allowed = self.window_count < limit
            if allowed:
                self.window_count += 1
            used = self.window_count
            reset = self.window_start + window
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(limit - used),
            "X-RateLimit-Reset": str(math.ceil(reset)),
            "X-RateLimit-Window": str(int(window)),
        }
        if not allowed:
            headers["Retry-After"] = str(max(1, math.ceil(reset - now)))
        return headers, allowed

    def _json(self, status: int, doc: Any, headers: dict[str, str]) -> httpx.Response:
        return httpx.Response(status, content=json.dumps(doc).encode(), headers=headers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            self.request_times.append(self.clock.time())
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            headers, allowed = self._rate_headers()
            path = request.url.path
            scripted = self.scripts[path].pop(0) if self.scripts.get(path) else None
        try:
            if self.delay:
                time.sleep(self.delay)
            if request.headers.get("authorization") != f"Bearer {KEY}":
                return self._json(
                    401, {"error": "UNAUTHORIZED", "message": "bad key", "code": 401}, headers
                )
            if not allowed:
                with self._lock:
                    self.throttled += 1
                return self._json(
                    429,
                    {"error": "RATE_LIMIT_EXCEEDED", "code": 429, "message": "Too many requests"},
                    headers,
                )
            if scripted is not None:
                if isinstance(scripted, Exception):
                    raise scripted
                if callable(scripted):
                    return scripted(request)
                return scripted
            return self._route(request, headers)
        finally:
            with self._lock:
                self.inflight -= 1

    def _route(self, request: httpx.Request, headers: dict[str, str]) -> httpx.Response:
        path = request.url.path
        if path == "/v1/clusters":
            page = int(request.url.params.get("page", "1"))
            limit = int(request.url.params.get("limit", "20"))
            items = self.summaries[(page - 1) * limit : page * limit]
            total_pages = max(1, math.ceil(len(self.summaries) / limit))
            data: Any = {"clusters": items} if self.wrap or self.pagination else items
            if self.pagination:
                data["pagination"] = {
                    "page": page,
                    "limit": limit,
                    "total": len(self.summaries),
                    "total_pages": total_pages,
                    "has_next": page < total_pages,
                }
            return self._json(200, {"success": True, "data": data} if self.wrap else data, headers)
        cid = path.rsplit("/", 1)[-1]
        if cid not in self.details:
            return self._json(
                404,
                {
                    "error": "RESOURCE_NOT_FOUND",
                    "code": 404,
                    "message": "Cluster not found",
                    "details": {"resource": "cluster", "id": cid},
                },
                headers,
            )
        doc = self.details[cid]
        return self._json(200, {"success": True, "data": doc} if self.wrap else doc, headers)

    def detail_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path != "/v1/clusters"]


def make_client(api: FakeApi, **kwargs: Any) -> ApiClient:
    kwargs.setdefault("sleep", api.clock.sleep)
    kwargs.setdefault("clock", api.clock.time)
    kwargs.setdefault("retry_max_seconds", 60.0)
    return ApiClient(BASE, KEY, transport=httpx.MockTransport(api), **kwargs)


def fetch_all(client: ApiClient, items: Any) -> dict[str, FetchResult]:
    results = {}
    for result in client.fetch_details(items):
        assert result.cluster_id not in results, "a cluster came back twice"
        results[result.cluster_id] = result
    return results


def _error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, json={"error": code, "message": code.lower(), "code": status}, headers=headers
    )


# ---------------------------------------------------------------------------------- listing


def test_list_follows_pagination_object_and_returns_every_cluster_once() -> None:
    api = FakeApi(7)
    with make_client(api, page_size=3) as client:
        summaries = client.list_clusters()
    assert [s["id"] for s in summaries] == [f"cls_{i:03d}" for i in range(7)]
    assert [r.url.params["page"] for r in api.requests] == ["1", "2", "3"]
    assert summaries[0]["hourly_rate"] == Decimal("6.9000")


def test_list_without_pagination_object_pages_until_a_short_page() -> None:
    api = FakeApi(6, wrap=False, pagination=False)
    with make_client(api, page_size=2) as client:
        summaries = client.list_clusters()
    assert len(summaries) == 6
    # 2 + 2 + 2, then an empty page says the list is over.
    assert [r.url.params["page"] for r in api.requests] == ["1", "2", "3", "4"]


def test_list_removes_duplicates_across_pages() -> None:
    api = FakeApi(4)
    repeated = api.summaries[1]
    api.summaries.insert(2, repeated)  # an item shifted onto the next page while paging
    with make_client(api, page_size=2) as client:
        summaries = client.list_clusters()
    assert [s["id"] for s in summaries] == ["cls_000", "cls_001", "cls_002", "cls_003"]


def test_list_stops_when_the_server_ignores_the_page_parameter() -> None:
    api = FakeApi(2, wrap=False, pagination=False)
    api._route = lambda request, headers: api._json(200, api.summaries, headers)  # type: ignore
    with make_client(api, page_size=2) as client:
        assert len(client.list_clusters()) == 2
    assert len(api.requests) == 2


def test_list_failure_after_retries_is_an_api_error() -> None:
    api = FakeApi(2)
    api.script("/v1/clusters", *[_error(503, "UNAVAILABLE")] * 50)
    with make_client(api, retry_max_seconds=5) as client, pytest.raises(ApiError, match="503"):
        client.list_clusters()


# ---------------------------------------------------------------------------------- details


def test_fetch_details_returns_canonical_redacted_details_with_raw_body() -> None:
    api = FakeApi(3)
    with make_client(api) as client:
        results = fetch_all(client, client.list_clusters())
    assert set(results) == {"cls_000", "cls_001", "cls_002"}
    result = results["cls_001"]
    assert (result.outcome, result.http_status, result.attempts, result.reason) == (
        "ok",
        200,
        1,
        None,
    )
    detail = result.detail
    assert detail is not None and detail.cluster_id == "cls_001"
    assert detail.columns["cluster_snapshots"]["hourly_rate"] == [Decimal("6.9000")]
    assert b'"HF_TOKEN":"[REDACTED]"' in result.raw_body.replace(b" ", b"")
    assert result.raw_body is not None
    assert b"hf_example_secret_value" not in result.raw_body
    assert b"example-password" not in result.raw_body
    # The raw body is the redacted response itself: it normalizes to the same detail.
    assert normalize_detail(parse_json(result.raw_body)) == detail
    assert b'"gpu_utilization":45.5' in result.raw_body
    # Held compressed (what raw.responses stores), read by any gzip reader.
    assert result.raw_gzip is not None and gzip.decompress(result.raw_gzip) == result.raw_body
    assert len(result.raw_gzip) < len(result.raw_body)


def test_a_fetched_document_is_freed_at_once_not_left_in_a_reference_cycle() -> None:
    # httpx's response and its stream refer to each other. The parsed document used to hang
    # on the response, so every document (~1 MB with 8 GPUs x 7 days) lived until the cyclic
    # GC found it: 13 % of a 1,000-cluster snapshot's CPU went to the GC, and parsing ran on
    # cold memory. What is left in cycles per request is the retry loop's few small objects
    # (not counted here: other tests' threads may leave garbage of their own meanwhile).
    api = FakeApi(1)
    top_keys = set(api.details["cls_000"])
    with make_client(api) as client:
        client.fetch_detail("cls_000")  # imports and the connection pool, before measuring
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            result = client.fetch_detail("cls_000")
            assert result.outcome == "ok"
            del result
            gc.collect()
            garbage = list(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert not [o for o in garbage if isinstance(o, httpx.Response)]
    assert not [o for o in garbage if isinstance(o, dict) and top_keys <= set(o)]


def test_detail_request_asks_for_metrics_cost_and_seven_days_with_bearer_key() -> None:
    api = FakeApi(1)
    with make_client(api, include_logs=True) as client:
        fetch_all(client, ["cls_000"])
    (request,) = api.detail_requests()
    assert request.url.path == "/v1/clusters/cls_000"
    assert dict(request.url.params) == {
        "include_metrics": "true",
        "include_cost_breakdown": "true",
        "metrics_window": "7d",
        "include_logs": "true",
    }
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in str(request.url)


def test_cluster_ids_are_escaped_in_the_path() -> None:
    api = FakeApi(0)
    with make_client(api) as client:
        results = fetch_all(client, ["a:b@c"])
    assert api.requests[0].url.raw_path.startswith(b"/v1/clusters/a%3Ab%40c")
    assert results["a:b@c"].outcome == "gone"


def test_cluster_ids_that_are_not_plain_path_segments_fail_without_a_request() -> None:
    api = FakeApi(0)
    bad = ["../admin", ".", "..", "a/b", "a%2Fb", "a\x00b", "a b", "a\nb", ""]
    with make_client(api) as client:
        results = fetch_all(client, bad)
    assert api.requests == []
    assert {cid: r.outcome for cid, r in results.items()} == dict.fromkeys(bad, "failed")
    assert "relative path segment" in (results[".."].reason or "")
    assert "not a plain URL path segment" in (results["a%2Fb"].reason or "")


def test_duplicate_ids_are_fetched_once() -> None:
    api = FakeApi(2)
    with make_client(api) as client:
        results = fetch_all(client, ["cls_000", "cls_001", "cls_000", {"id": "cls_001"}])
    assert len(results) == 2 and len(api.detail_requests()) == 2


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_status_is_retried_until_it_succeeds(status: int) -> None:
    api = FakeApi(1)
    api.script("/v1/clusters/cls_000", _error(status, "TRANSIENT"), _error(status, "TRANSIENT"))
    with make_client(api) as client:
        results = fetch_all(client, ["cls_000"])
        assert client.stats.retries == 2 and client.stats.requests == 3
        assert client.stats.throttled == (2 if status == 429 else 0)
    assert results["cls_000"].outcome == "ok"
    assert results["cls_000"].attempts == 3
    assert len(api.clock.sleeps) == 2


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectError("connection refused"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
    ],
    ids=["timeout", "connection", "truncated"],
)
def test_timeouts_and_broken_connections_are_retried(exc: Exception) -> None:
    api = FakeApi(1)
    api.script("/v1/clusters/cls_000", exc)
    with make_client(api) as client:
        results = fetch_all(client, ["cls_000"])
    assert (results["cls_000"].outcome, results["cls_000"].attempts) == ("ok", 2)


def test_429_waits_exactly_retry_after_seconds() -> None:
    api = FakeApi(1)
    api.script(
        "/v1/clusters/cls_000",
        _error(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "7"}),
        _error(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "3"}),
    )
    with make_client(api) as client:
        results = fetch_all(client, ["cls_000"])
        assert client.stats.waited_seconds == 10.0
    assert api.clock.sleeps == [7.0, 3.0]
    assert results["cls_000"].outcome == "ok"


def test_429_without_header_takes_retry_after_from_the_body() -> None:
    api = FakeApi(1)
    api.script(
        "/v1/clusters/cls_000",
        httpx.Response(
            429, json={"error": "RATE_LIMIT_EXCEEDED", "code": 429, "details": {"retry_after": 12}}
        ),
    )
    with make_client(api) as client:
        fetch_all(client, ["cls_000"])
    assert api.clock.sleeps == [12.0]


def test_persistent_failure_gives_up_within_retry_max_seconds() -> None:
    api = FakeApi(1)
    api.script("/v1/clusters/cls_000", *[_error(503, "SERVICE_UNAVAILABLE")] * 100)
    with make_client(api, retry_max_seconds=20) as client:
        results = fetch_all(client, ["cls_000"])
    result = results["cls_000"]
    assert result.outcome == "failed" and result.http_status == 503
    assert "503" in (result.reason or "") and result.attempts > 2
    assert sum(api.clock.sleeps) <= 20
    assert result.attempts == len(api.detail_requests())


def test_retry_after_longer_than_retry_max_seconds_gives_up_at_once() -> None:
    api = FakeApi(1)
    api.script("/v1/clusters/cls_000", _error(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "900"}))
    with make_client(api, retry_max_seconds=60) as client:
        result = fetch_all(client, ["cls_000"])["cls_000"]
    assert (result.outcome, result.attempts, api.clock.sleeps) == ("failed", 1, [])


@pytest.mark.parametrize("status", [400, 409, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    api = FakeApi(1)
    api.script("/v1/clusters/cls_000", _error(status, "VALIDATION_ERROR"))
    with make_client(api) as client:
        result = fetch_all(client, ["cls_000"])["cls_000"]
    assert (result.outcome, result.http_status, result.attempts) == ("failed", status, 1)
    assert f"HTTP {status} VALIDATION_ERROR" in (result.reason or "")
    assert len(api.detail_requests()) == 1 and api.clock.sleeps == []


def test_404_is_gone_not_failed_and_not_retried() -> None:
    api = FakeApi(2)
    with make_client(api) as client:
        summaries = client.list_clusters()
        del api.details["cls_001"]  # deleted between list and details
        results = fetch_all(client, summaries)
    gone = results["cls_001"]
    assert (gone.outcome, gone.http_status, gone.attempts) == ("gone", 404, 1)
    assert "RESOURCE_NOT_FOUND" in (gone.reason or "")
    assert results["cls_000"].outcome == "ok"


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refusal_raises_auth_error_without_the_key(status: int) -> None:
    api = FakeApi(3)
    api.script("/v1/clusters/cls_001", _error(status, "FORBIDDEN"))
    with make_client(api) as client, pytest.raises(AuthError) as info:
        fetch_all(client, ["cls_000", "cls_001", "cls_002"])
    assert str(status) in str(info.value)
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert info.value.__cause__ is None and info.value.exit_code == 4


def test_wrong_key_on_list_raises_auth_error() -> None:
    api = FakeApi(1)
    client = ApiClient(BASE, "wrong-key", transport=httpx.MockTransport(api))
    with client, pytest.raises(AuthError, match="401"):
        client.list_clusters()


def test_response_over_max_size_fails_without_retry() -> None:
    api = FakeApi(1)
    with make_client(api, max_response_bytes=2048) as client:
        result = fetch_all(client, ["cls_000"])["cls_000"]
    assert result.outcome == "failed" and "max_response_bytes=2048" in (result.reason or "")
    assert result.attempts == 1 and len(api.detail_requests()) == 1


def test_streamed_response_without_length_over_max_size_fails() -> None:
    api = FakeApi(1)

    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024

    api.script("/v1/clusters/cls_000", httpx.Response(200, content=chunks()))
    with make_client(api, max_response_bytes=10_000) as client:
        result = fetch_all(client, ["cls_000"])["cls_000"]
    assert result.outcome == "failed" and "exceeds max_response_bytes" in (result.reason or "")


def test_malformed_json_fails_with_the_redacted_body_kept() -> None:
    api = FakeApi(2)
    truncated = (
        b'{"success": true, "data": {"id": "cls_000", "environment": {"variables": '
        b'{"SECRET_X": "CANARY-7f3a9c-abc", "URL": "postgres://u:pw@h/db"'
    )
    api.script(
        "/v1/clusters/cls_000",
        httpx.Response(200, content=truncated),
        httpx.Response(200, content=truncated),
    )
    with make_client(api) as client:
        results = fetch_all(client, ["cls_000", "cls_001"])
    result = results["cls_000"]
    assert result.outcome == "failed" and "invalid JSON" in (result.reason or "")
    assert result.attempts == 2  # one more try: a body cut in transit usually comes back whole
    assert result.raw_body is not None
    assert b'"id": "cls_000"' in result.raw_body
    assert b"CANARY" not in result.raw_body and b":pw@" not in result.raw_body
    assert results["cls_001"].outcome == "ok"


def test_malformed_json_once_then_valid_succeeds() -> None:
    api = FakeApi(1)
    api.script("/v1/clusters/cls_000", httpx.Response(200, content=b'{"success": tr'))
    with make_client(api) as client:
        result = fetch_all(client, ["cls_000"])["cls_000"]
    assert (result.outcome, result.attempts) == ("ok", 2)


def test_wrong_type_in_required_field_fails_with_its_path() -> None:
    api = FakeApi(1)
    bad = copy.deepcopy(api.details["cls_000"])
    bad["metrics"]["historical"]["data_points"] = {"not": "a list"}
    api.script("/v1/clusters/cls_000", httpx.Response(200, json={"success": True, "data": bad}))
    with make_client(api) as client:
        result = fetch_all(client, ["cls_000"])["cls_000"]
    assert result.outcome == "failed" and result.attempts == 1
    assert "metrics.historical.data_points: expected an array" in (result.reason or "")
    assert result.raw_body is not None and b"hf_example_secret_value" not in result.raw_body


def test_detail_for_another_cluster_is_a_failure() -> None:
    api = FakeApi(2)
    api.script(
        "/v1/clusters/cls_000",
        httpx.Response(200, json={"success": True, "data": api.details["cls_001"]}),
    )
    with make_client(api) as client:
        result = fetch_all(client, ["cls_000"])["cls_000"]
    assert result.outcome == "failed" and "cls_001" in (result.reason or "")


def test_at_most_concurrency_requests_in_flight() -> None:
    api = FakeApi(24)
    api.delay = 0.01  # real time, so that requests overlap
    with make_client(api, concurrency=4) as client:
        results = fetch_all(client, list(api.details))
    assert len(results) == 24 and all(r.outcome == "ok" for r in results.values())
    assert 1 < api.max_inflight <= 4


def test_on_event_reports_every_outcome_and_retry() -> None:
    api = FakeApi(3)
    api.script("/v1/clusters/cls_000", _error(500, "INTERNAL_ERROR"))
    api.script("/v1/clusters/cls_002", _error(422, "SEMANTIC_ERROR"))
    events: list[tuple[str, str]] = []
    with make_client(api, on_event=lambda kind, cid: events.append((kind, cid))) as client:
        fetch_all(client, ["cls_000", "cls_001", "cls_002", "cls_gone"])
    assert sorted(events) == sorted(
        [
            ("retry", "cls_000"),
            ("done", "cls_000"),
            ("done", "cls_001"),
            ("failed", "cls_002"),
            ("gone", "cls_gone"),
        ]
    )


# ---------------------------------------------------------------------------------- rate limit


def test_pacing_spreads_the_budget_over_a_sliding_window_and_avoids_429s() -> None:
    clock = FakeClock()
    api = FakeApi(25, clock=clock, rate=(10, 60.0), sliding=True)
    with make_client(api, concurrency=1, retry_max_seconds=600) as client:
        results = fetch_all(client, client.list_clusters())
        assert client.stats.throttled == 0
    assert api.throttled == 0
    assert all(r.outcome == "ok" for r in results.values()) and len(results) == 25
    # 26 requests at 10 a minute cannot take less than two full windows...
    assert clock.now - 1_800_000_000.0 >= 120
    # ...and the first window's budget is spread over it, not burst at its start.
    first = api.request_times[1:10]  # the details after the list request
    assert len(set(first)) == 9 and first[-1] - first[0] >= 30


def test_pacing_with_concurrent_workers_and_a_fixed_window_avoids_429s() -> None:
    clock = FakeClock()
    api = FakeApi(40, clock=clock, rate=(10, 60.0))
    with make_client(api, concurrency=4, retry_max_seconds=600) as client:
        results = fetch_all(client, client.list_clusters())
    assert api.throttled == 0
    assert all(r.outcome == "ok" for r in results.values()) and len(results) == 40


def test_without_pacing_need_the_fleet_bursts() -> None:
    clock = FakeClock()
    api = FakeApi(5, clock=clock, rate=(100, 3600.0))
    with make_client(api, concurrency=1) as client:
        fetch_all(client, client.list_clusters())
    assert clock.sleeps == []


def test_budget_too_small_fetches_running_and_recent_first_and_skips_the_rest() -> None:
    clock = FakeClock()
    statuses = ["stopped", "running", "error", "running", "stopped", "pending"]
    api = FakeApi(6, clock=clock, rate=(4, 3600.0), statuses=statuses)
    events: list[tuple[str, str]] = []
    with make_client(api, retry_max_seconds=60, on_event=lambda k, c: events.append((k, c))) as c:
        summaries = c.list_clusters()  # 1 request: 3 left in this window, the next is an hour away
        results = fetch_all(c, summaries)
    fetched = sorted(cid for cid, r in results.items() if r.outcome == "ok")
    # running (cls_001 newer than cls_003), then error (cls_002).
    assert fetched == ["cls_001", "cls_002", "cls_003"]
    skipped = {cid: r for cid, r in results.items() if r.outcome == "skipped"}
    assert sorted(skipped) == ["cls_000", "cls_004", "cls_005"]
    assert all("request budget" in (r.reason or "") and r.attempts == 0 for r in skipped.values())
    assert api.throttled == 0 and clock.sleeps == []
    assert sorted(c for k, c in events if k == "skipped") == ["cls_000", "cls_004", "cls_005"]


# ---------------------------------------------------------------------------------- the key


def test_key_never_appears_in_repr_logs_or_urls(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Whatever an earlier CLI test configured (gpucost's own level and handlers), debug
    # records must reach caplog here.
    caplog.set_level(logging.DEBUG, logger="gpucost")
    logging.getLogger("gpucost").propagate = True
    api = FakeApi(3)
    api.script("/v1/clusters/cls_000", _error(503, "UNAVAILABLE"), httpx.ReadTimeout("slow"))
    api.script("/v1/clusters/cls_002", _error(401, "UNAUTHORIZED"))
    client = make_client(api, concurrency=1)
    with client:
        assert KEY not in repr(client) and KEY not in str(vars(client))
        client.list_clusters()
        with pytest.raises(AuthError) as info:
            fetch_all(client, ["cls_000", "cls_001", "cls_002"])
    assert "retrying" in caplog.text  # the log did say something
    assert KEY not in caplog.text
    assert KEY not in str(info.value)
    assert all(KEY not in str(r.url) for r in api.requests)


def test_plain_http_to_a_remote_host_is_refused() -> None:
    with pytest.raises(ConfigError, match="plain http"):
        ApiClient("http://api.gpu.test/v1", KEY)
    ApiClient("http://api.gpu.test/v1", KEY, allow_insecure_http=True).close()
    ApiClient("http://127.0.0.1:9/v1", KEY).close()


def test_key_with_a_line_break_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as info:
        ApiClient(BASE, "abc\r\nX-Evil: 1")
    assert "abc" not in str(info.value)


def test_from_config_takes_url_settings_and_the_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GPUCOST_API_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    config = load_config(
        overrides={"api": {"url": BASE, "page_size": 2, "concurrency": 3}},
        env={"GPUCOST_API_URL": BASE},
    )
    api = FakeApi(5)
    with ApiClient.from_config(config, transport=httpx.MockTransport(api)) as client:
        assert (client.page_size, client.concurrency) == (2, 3)
        assert len(client.list_clusters()) == 5
    monkeypatch.delenv("GPUCOST_API_KEY")
    with pytest.raises(ConfigError, match="no API key"):
        ApiClient.from_config(config)


def test_money_sent_as_json_numbers_stays_exact_in_detail_and_raw_body() -> None:
    api = FakeApi(1)
    body = json.dumps({"success": True, "data": api.details["cls_000"]}).replace(
        '"current_hourly_rate": "6.9000"', '"current_hourly_rate": 1234567.8912345678901'
    )
    assert "1234567.8912345678901" in body
    api.script("/v1/clusters/cls_000", httpx.Response(200, content=body.encode()))
    with make_client(api) as client:
        result = fetch_all(client, ["cls_000"])["cls_000"]
    assert result.detail is not None and result.raw_body is not None
    assert result.detail.columns["cluster_snapshots"]["hourly_rate"] == [
        Decimal("1234567.8912345678901")
    ]
    assert b'"current_hourly_rate":1234567.8912345678901' in result.raw_body
    assert b"hf_example_secret_value" not in result.raw_body


@pytest.mark.timeout(20)
def test_auth_error_wakes_workers_waiting_out_a_retry_after() -> None:
    api = FakeApi(2)

    def late_429(request: httpx.Request) -> httpx.Response:
        time.sleep(0.2)  # the other worker's 401 lands first
        return _error(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "60"})

    api.script("/v1/clusters/cls_000", late_429)
    api.script("/v1/clusters/cls_001", _error(401, "UNAUTHORIZED"))
    # Real (abortable) sleep: without the wake-up this test would wait a full minute.
    client = make_client(api, sleep=None, clock=time.time, retry_max_seconds=120, concurrency=2)
    with client, pytest.raises(AuthError):
        fetch_all(client, ["cls_000", "cls_001"])
    # The waiting worker gave up instead of asking again.
    assert [r.url.path for r in api.detail_requests()].count("/v1/clusters/cls_000") == 1


def test_rate_limit_reset_given_as_seconds_until_reset_is_understood() -> None:
    clock = FakeClock()
    api = FakeApi(3, clock=clock)
    headers = {
        "X-RateLimit-Limit": "2",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "40",
        "X-RateLimit-Window": "60",
    }
    api.script(
        "/v1/clusters",
        httpx.Response(
            200, headers=headers, json={"success": True, "data": {"clusters": api.summaries}}
        ),
    )
    with make_client(api, concurrency=1, retry_max_seconds=600) as client:
        fetch_all(client, client.list_clusters())
    # Budget spent by the list: the first detail waits for the reset 40 s later, no 429.
    assert clock.sleeps and 40 <= clock.sleeps[0] <= 41


def test_fetching_waits_for_the_consumer_backpressure() -> None:
    api = FakeApi(30)
    with make_client(api, concurrency=2) as client:
        results = client.fetch_details(list(api.details))
        first = next(results)
        deadline = time.monotonic() + 5
        while len(api.requests) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # time enough for a client without backpressure to fetch them all
        # Two workers plus two queued: nothing more until the consumer asks for more.
        assert len(api.requests) == 4
        rest = list(results)
    assert len(rest) + 1 == 30 and first.outcome == "ok"


def test_short_windows_reset_from_the_first_answer_not_the_rounded_header() -> None:
    # Reset headers are whole seconds rounded up: with one-second windows starting at .3 s,
    # trusting them would lose most of every window. 21 requests at 5 per window need five
    # windows: the last starts 4 s after the first, and nothing is refused.
    clock = FakeClock(start=1_800_000_000.3)
    api = FakeApi(20, clock=clock, rate=(5, 1.0))
    with make_client(api, concurrency=1, retry_max_seconds=600) as client:
        results = fetch_all(client, client.list_clusters())
    assert api.throttled == 0
    assert all(r.outcome == "ok" for r in results.values()) and len(results) == 20
    assert 4.0 <= clock.now - 1_800_000_000.3 <= 4.5


def test_a_compressed_body_is_decoded_and_its_size_guard_counts_the_decoded_bytes() -> None:
    import gzip

    api = FakeApi(2)
    detail = json.dumps({"success": True, "data": api.details["cls_000"]}).encode()
    api.script(
        "/v1/clusters/cls_000",
        httpx.Response(200, content=gzip.compress(detail), headers={"Content-Encoding": "gzip"}),
    )
    bomb = gzip.compress(b" " * 1_000_000)  # a few KB on the wire, a megabyte decoded
    assert len(bomb) < 100_000
    api.script(
        "/v1/clusters/cls_001",
        httpx.Response(200, content=bomb, headers={"Content-Encoding": "gzip"}),
    )
    with make_client(api, max_response_bytes=100_000) as client:
        results = fetch_all(client, ["cls_000", "cls_001"])
    assert results["cls_000"].outcome == "ok"
    assert results["cls_000"].raw_body is not None
    assert normalize_detail(parse_json(results["cls_000"].raw_body)).cluster_id == "cls_000"
    failed = results["cls_001"]
    assert failed.outcome == "failed" and "exceeds max_response_bytes" in (failed.reason or "")


def test_the_environment_proxy_is_used_as_httpx_itself_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.transport import env_proxy

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert env_proxy(BASE) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp")
    assert env_proxy(BASE) == "http://proxy.corp:3128"
    assert env_proxy("https://internal.corp/v1") is None
    assert env_proxy("http://api.gpu.test/v1") is None  # no HTTP_PROXY for plain http
    monkeypatch.setenv("ALL_PROXY", "http://all.corp:8080")
    assert env_proxy("http://api.gpu.test/v1") == "http://all.corp:8080"
