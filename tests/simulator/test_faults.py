"""Injected faults fire on the clusters the seed picks, at their rate, and are counted."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import httpx
import pytest

from pipeline.simulator.faults import FAULT_KINDS, FaultSpec, unit_hash

# Faults do not depend on the document: small ones keep these tests fast.
LIGHT = {"include_metrics": "false"}


def _stats(http, url):
    return http.get(url.removesuffix("/v1") + "/_sim/stats").json()


def _outcome(http, url, cid, timeout=5.0):
    """What one details request got: 'ok', an HTTP status, 'bad_json' or 'transport'."""
    try:
        response = http.get(f"{url}/clusters/{cid}", timeout=timeout, params=LIGHT)
    except httpx.TransportError:
        return "transport"
    if response.status_code != 200:
        return response.status_code
    try:
        json.loads(response.content)
    except ValueError:
        return "bad_json"
    return "ok"


def test_unit_hash_is_uniform_and_stable():
    values = [unit_hash(3, "k", i) for i in range(4000)]
    assert values[:3] == [unit_hash(3, "k", i) for i in range(3)]
    assert all(0 <= v < 1 for v in values)
    assert abs(sum(values) / len(values) - 0.5) < 0.02
    assert unit_hash(3, "k", 1) != unit_hash(4, "k", 1)


@pytest.mark.parametrize("kind", FAULT_KINDS)
@pytest.mark.parametrize("rate", [0.05, 0.3])
def test_each_kind_hits_its_configured_share_of_keys(kind, rate):
    spec = FaultSpec(rates={kind: rate}, seed=11)
    keys = [f"cls_{i:05d}" for i in range(4000)]
    share = len(spec.affected(kind, keys)) / len(keys)
    sigma = math.sqrt(rate * (1 - rate) / len(keys))
    assert abs(share - rate) < 4 * sigma


def test_parse_reads_kind_rate_and_permanence_and_rejects_nonsense():
    spec = FaultSpec.parse(["500=0.1", "invalid_json=0.05:permanent", "dropped=0.2"], seed=3)
    assert spec.rates == {"error_500": 0.1, "invalid_json": 0.05, "drop": 0.2}
    assert spec.permanent == frozenset({"invalid_json"}) and spec.seed == 3
    for bad in (
        ["teapot=0.1"],
        ["error_500"],
        ["error_500=lots"],
        ["error_500=2"],
        ["error_500=0.1:sometimes"],
    ):
        with pytest.raises(ValueError):
            FaultSpec.parse(bad)


def test_transient_faults_hit_only_the_first_attempts_and_permanent_ones_every_time():
    spec = FaultSpec(
        rates={"error_500": 1.0, "truncated": 1.0}, permanent={"truncated"}, transient_attempts=2
    )
    # error_500 comes first while transient; afterwards the permanent fault remains
    assert [spec.request_fault("c", n, details=True) for n in (1, 2, 3, 4)] == [
        "error_500",
        "error_500",
        "truncated",
        "truncated",
    ]
    # on a list page even a permanent kind is transient, so the list can always be read
    assert spec.request_fault("page", 3, details=False) is None
    assert FaultSpec().request_fault("c", 1, details=True) is None


# kind -> what the client sees on the first request of an affected cluster
_SEEN = {
    "error_500": 500,
    "error_502": 502,
    "error_503": 503,
    "drop": "transport",
    "truncated": "bad_json",
    "invalid_json": "bad_json",
    "deleted": 404,
}


@pytest.mark.parametrize("kind", sorted(_SEEN))
def test_fault_hits_exactly_the_seeded_clusters_once_and_a_retry_recovers(serve, fleet40, kind):
    spec = FaultSpec(rates={kind: 0.3}, seed=5)
    sim, url, http = serve(fleet40, faults=spec)
    ids = [s["id"] for s in fleet40.list_summaries()]
    expected = spec.affected(kind, ids)
    assert 0 < len(expected) < len(ids)
    first = {cid: _outcome(http, url, cid) for cid in ids}
    assert sorted(c for c, o in first.items() if o != "ok") == sorted(expected)
    assert {first[c] for c in expected} == {_SEEN[kind]}
    assert _stats(http, url)["faults"] == {kind: len(expected)}
    second = {cid: _outcome(http, url, cid) for cid in expected}
    if kind == "deleted":  # a deleted cluster stays gone
        assert set(second.values()) == {404}
    else:
        assert set(second.values()) == {"ok"}
    stats = _stats(http, url)
    assert stats["detail_attempts"] == {cid: 1 + (cid in expected) for cid in ids}
    assert set(stats["faulted_clusters"]) == set(expected)
    assert stats["faults"][kind] == len(expected) * (2 if kind == "deleted" else 1)


def test_transient_faults_are_armed_again_each_simulated_night(serve, fleet40):
    # A flaky provider is flaky every night: after the virtual clock moves, the same clusters
    # fail their first attempt again (and a retry recovers again).
    spec = FaultSpec(rates={"error_503": 0.3}, seed=5)
    sim, url, http = serve(fleet40, faults=spec)
    ids = [s["id"] for s in fleet40.list_summaries()]
    expected = spec.affected("error_503", ids)
    assert expected
    nights = []
    for night in range(2):
        fleet40.advance(timedelta(days=night))
        first = {cid: _outcome(http, url, cid) for cid in expected}
        retry = {cid: _outcome(http, url, cid) for cid in expected}
        nights.append((set(first.values()), set(retry.values())))
    assert nights == [({503}, {"ok"}), ({503}, {"ok"})]
    assert _stats(http, url)["faults"] == {"error_503": 2 * len(expected)}


def test_error_bodies_of_injected_faults_follow_the_contract(serve, fleet40):
    spec = FaultSpec(rates={"error_500": 0.5, "error_503": 0.5, "error_502": 0.5}, seed=1)
    _, url, http = serve(fleet40, faults=spec)
    seen = set()
    for summary in fleet40.list_summaries():
        response = http.get(f"{url}/clusters/{summary['id']}", params=LIGHT)
        seen.add(response.status_code)
        if response.status_code == 500:
            assert response.json()["error"] == "INTERNAL_ERROR"
        elif response.status_code == 503:
            assert response.json()["code"] == 503 and response.headers["Retry-After"] == "1"
        elif response.status_code == 502:
            assert response.headers["content-type"].startswith("text/html")
    assert {500, 502, 503} <= seen


def test_permanent_malformed_json_fails_every_attempt_for_the_same_clusters(serve, fleet40):
    spec = FaultSpec(rates={"invalid_json": 0.2}, permanent={"invalid_json"}, seed=2)
    _, url, http = serve(fleet40, faults=spec)
    ids = [s["id"] for s in fleet40.list_summaries()]
    expected = spec.affected("invalid_json", ids)
    assert expected
    for _ in range(3):
        outcomes = {cid: _outcome(http, url, cid) for cid in ids}
        assert sorted(c for c, o in outcomes.items() if o == "bad_json") == sorted(expected)
        assert {o for c, o in outcomes.items() if c not in expected} == {"ok"}
    assert _stats(http, url)["faults"] == {"invalid_json": 3 * len(expected)}


def test_truncated_body_is_a_cut_prefix_of_the_real_document(serve, fleet40):
    spec = FaultSpec(rates={"truncated": 1.0})
    _, url, http = serve(fleet40, faults=spec)
    cid = fleet40.list_summaries()[0]["id"]
    cut = http.get(f"{url}/clusters/{cid}").content
    whole = http.get(f"{url}/clusters/{cid}").content
    assert cut and whole.startswith(cut) and len(cut) < len(whole)


def test_timeout_fault_keeps_silent_past_the_clients_timeout(serve, fleet40):
    spec = FaultSpec(rates={"timeout": 0.15}, seed=4, timeout_seconds=0.6)
    _, url, http = serve(fleet40, faults=spec)
    ids = [s["id"] for s in fleet40.list_summaries()]
    expected = spec.affected("timeout", ids)
    assert expected
    timed_out = []
    for cid in ids:
        try:
            http.get(f"{url}/clusters/{cid}", timeout=0.2, params=LIGHT)
        except httpx.TimeoutException:
            timed_out.append(cid)
    assert sorted(timed_out) == sorted(expected)
    assert _outcome(http, url, expected[0]) == "ok"
    assert _stats(http, url)["faults"] == {"timeout": len(expected)}


def test_slow_fault_answers_correctly_and_is_counted(serve, fleet40):
    spec = FaultSpec(rates={"slow": 0.2}, seed=4, slow_seconds=0.05)
    _, url, http = serve(fleet40, faults=spec)
    ids = [s["id"] for s in fleet40.list_summaries()]
    assert {_outcome(http, url, cid) for cid in ids} == {"ok"}
    assert _stats(http, url)["faults"] == {"slow": len(spec.affected("slow", ids))}


@pytest.mark.parametrize("limit", [1, 7])
def test_duplicates_repeat_items_on_the_next_page_without_losing_any(serve, fleet40, limit):
    spec = FaultSpec(rates={"duplicate": 0.3}, seed=9)
    _, url, http = serve(fleet40, faults=spec)
    pages, page = [], 1
    while True:
        body = http.get(f"{url}/clusters", params={"limit": limit, "page": page}).json()["data"]
        pages.append([item["id"] for item in body["clusters"]])
        if not body["pagination"]["has_next"]:
            break
        page += 1
    ids = [cid for p in pages for cid in p]
    expected = sorted(s["id"] for s in fleet40.list_summaries())
    assert sorted(set(ids)) == expected  # every cluster reachable
    repeats = len(ids) - len(set(ids))
    assert repeats > 0
    # each repeat is the previous page's last item coming back first
    for before, after in zip(pages, pages[1:], strict=False):
        if after and after[0] in before:
            assert after[0] == before[-1]
    assert _stats(http, url)["faults"] == {"duplicate": repeats}
    assert body["pagination"]["total_pages"] == len(pages)


def test_list_pages_recover_from_transient_errors(serve, fleet40):
    spec = FaultSpec(rates={"error_503": 1.0, "invalid_json": 1.0}, permanent={"invalid_json"})
    _, url, http = serve(fleet40, faults=spec)
    assert http.get(f"{url}/clusters").status_code == 503
    response = http.get(f"{url}/clusters")
    assert response.status_code == 200 and response.json()["data"]["clusters"]


def test_429_storm_answers_every_request_with_retry_after_until_it_passes(serve, fleet40):
    spec = FaultSpec(rates={"storm_429": 0.25}, seed=3, storm_seconds=30)
    _, url, http = serve(fleet40, faults=spec)
    codes = [http.get(f"{url}/clusters").status_code for _ in range(12)]
    first = codes.index(429)  # a storm started (sequence-seeded, so the same every run)
    assert codes[:first] == [200] * first and codes[first:] == [429] * (12 - first)
    response = http.get(f"{url}/clusters")
    assert response.status_code == 429
    assert response.json()["details"]["retry_after"] == int(response.headers["Retry-After"])
    assert 1 <= int(response.headers["Retry-After"]) <= 30
    stats = _stats(http, url)
    assert stats["storms"] == 1 and stats["faults"] == {"storm_429": 13 - first}


def test_storm_ends_after_its_seconds_and_requests_succeed_again(serve, fleet40):
    import time

    # a seed whose request 1 starts a storm and request 2 does not
    seed = next(
        s
        for s in range(1000)
        if FaultSpec(rates={"storm_429": 0.5}, seed=s).starts_storm(1)
        and not FaultSpec(rates={"storm_429": 0.5}, seed=s).starts_storm(2)
    )
    spec = FaultSpec(rates={"storm_429": 0.5}, seed=seed, storm_seconds=0.3)
    sim, url, http = serve(fleet40, faults=spec)
    assert http.get(f"{url}/clusters").status_code == 429
    time.sleep(0.35)
    assert http.get(f"{url}/clusters").status_code == 200
    assert sim.stats()["storms"] == 1 and sim.stats()["faults"] == {"storm_429": 1}


def test_requests_with_a_wrong_key_are_refused_before_any_fault(serve, fleet40):
    sim, url, _ = serve(fleet40, faults=FaultSpec(rates={"error_500": 1.0, "storm_429": 1.0}))
    for path in ("/clusters", "/clusters/x"):
        response = httpx.get(f"{url}{path}", headers={"Authorization": "Bearer no"})
        assert response.status_code == 401
    assert sim.stats()["faults"] == {}
