"""The provider transport on its own, under a plain httpx.Client (no ApiClient)."""

from __future__ import annotations

import json

import httpx
import pytest

from pipeline.transport import (
    ATTEMPTS,
    CLUSTER_ID,
    DOCUMENT,
    Halted,
    Policy,
    ProviderTransport,
    Transient,
)

POLICY = Policy(
    timeout=30.0,
    max_response_bytes=1_000_000,
    retry_max_seconds=60.0,
    run_deadline_seconds=3600.0,
    breaker_failures=3,
    breaker_seconds=0.0,
)


def _transport(replies: list[httpx.Response], **kwargs) -> tuple[ProviderTransport, list]:
    sent: list[httpx.Request] = []
    sleeps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return replies.pop(0) if replies else httpx.Response(200, json={"ok": True})

    transport = ProviderTransport(
        httpx.MockTransport(handler),
        policy=kwargs.pop("policy", POLICY),
        parse=lambda body, request: json.loads(body),
        sleep=sleeps.append,
        **kwargs,
    )
    return transport, sent


def test_a_503_is_retried_and_the_response_says_how_many_requests_it_took() -> None:
    retried: list[str] = []
    transport, sent = _transport(
        [httpx.Response(503, json={"error": "UNAVAILABLE"})], on_retry=retried.append
    )
    with httpx.Client(base_url="https://api.test", transport=transport) as http:
        response = http.get("/clusters/c1", extensions={CLUSTER_ID: "c1"})
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert response.extensions[ATTEMPTS] == 2 and response.extensions[DOCUMENT] == {"ok": True}
    assert len(sent) == 2 and retried == ["c1"]
    assert (transport.stats.requests, transport.stats.retries) == (2, 1)


def test_a_404_comes_back_as_the_response_without_a_retry() -> None:
    transport, sent = _transport([httpx.Response(404, json={"error": "RESOURCE_NOT_FOUND"})])
    with httpx.Client(base_url="https://api.test", transport=transport) as http:
        response = http.get("/clusters/gone")
    assert response.status_code == 404 and response.extensions[ATTEMPTS] == 1
    assert DOCUMENT not in response.extensions and len(sent) == 1


def test_the_breaker_opens_after_its_failures_and_then_nothing_is_sent() -> None:
    policy = Policy(
        timeout=30.0,
        max_response_bytes=1_000_000,
        retry_max_seconds=0.0,  # no retries: each request is one failure
        run_deadline_seconds=3600.0,
        breaker_failures=3,
        breaker_seconds=0.0,
    )
    transport, sent = _transport([httpx.Response(500)] * 10, policy=policy)
    with httpx.Client(base_url="https://api.test", transport=transport) as http:
        for _ in range(3):
            with pytest.raises(Transient) as info:
                http.get("/clusters/c1")
            assert info.value.status == 500 and info.value.attempts == 1
        assert transport.halted() is not None and "circuit breaker open" in transport.halted()
        with pytest.raises(Halted):
            http.get("/clusters/c2")
    assert len(sent) == 3
