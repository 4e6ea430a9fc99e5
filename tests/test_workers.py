"""Details processed in worker processes (`pipeline/workers.py`): the same results as in the
client's threads, the same secrets redacted, the same retries, and a dead worker loses nothing."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline import client as client_module
from pipeline.client import ApiClient, FetchResult
from pipeline.config import ApiSettings, Config
from pipeline.redact import forget_secrets, register_secret
from pipeline.simulator import Fleet, FleetSpec, Simulator, VariantSpec
from pipeline.tables import TABLES
from pipeline.workers import ParseWorkers
from tests.test_client import BASE, KEY, FakeApi, fetch_all, make_client

START = datetime(2026, 11, 13, 3, tzinfo=UTC)


@pytest.fixture
def workers_always(monkeypatch: pytest.MonkeyPatch) -> list[ParseWorkers]:
    """Every fetch, however small, uses worker processes; returns those it started."""
    monkeypatch.setattr(client_module, "PROCESSES_FROM", 1)
    started: list[ParseWorkers] = []
    real_init = ParseWorkers.__init__

    def init(self: ParseWorkers, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        started.append(self)

    monkeypatch.setattr(ParseWorkers, "__init__", init)
    return started


def _same(a: FetchResult, b: FetchResult) -> None:
    assert (a.outcome, a.reason, a.http_status, a.attempts, a.raw_body) == (
        b.outcome,
        b.reason,
        b.http_status,
        b.attempts,
        b.raw_body,
    )
    if a.detail is None or b.detail is None:
        assert a.detail is b.detail is None
        return
    for table in TABLES:
        assert a.detail.table(table) == b.detail.table(table), table


def test_details_processed_in_a_worker_process_equal_those_processed_in_the_threads(
    workers_always: list[ParseWorkers],
) -> None:
    # Every contract variant, mixed per cluster, through the real simulator over HTTP.
    fleet = Fleet(FleetSpec(seed=7, clusters=24, start=START))
    fleet.advance(timedelta(days=7))
    sim = Simulator(fleet, api_key="k-workers", variants=VariantSpec.parse(["mixed"], seed=5))
    runs = []
    with sim.run_in_thread(port=0) as url:
        for processes in (0, 1):
            with ApiClient(url, "k-workers", processes=processes) as client:
                runs.append(fetch_all(client, client.list_clusters()))
    threads, workers = runs
    assert len(workers_always) == 1, "the second fetch ran in a worker process"
    assert set(threads) == set(workers) and len(threads) >= 20
    assert sum(r.outcome == "ok" for r in workers.values()) == len(threads)
    for cluster_id, result in threads.items():
        _same(result, workers[cluster_id])


def test_a_worker_process_redacts_the_known_secrets_the_provider_echoes(
    workers_always: list[ParseWorkers],
) -> None:
    # A registered secret that no rule would catch by its looks: only the list of known
    # secrets the worker was given can redact it.
    plain = "zebraquartz77"
    register_secret(plain)
    try:
        api = FakeApi(2)
        api.details["cls_001"]["description"] = f"debug: called with {plain} and {KEY}"
        with make_client(api, processes=1) as client:
            results = fetch_all(client, client.list_clusters())
    finally:
        forget_secrets()
    assert workers_always, "no worker process was used"
    raw = results["cls_001"].raw_body
    assert raw is not None and b"debug: called with" in raw
    assert plain.encode() not in raw and KEY.encode() not in raw
    assert b"hf_example_secret_value" not in raw
    detail = results["cls_001"].detail
    assert detail is not None
    assert plain not in repr(detail.table("cluster_snapshots"))


def test_an_unparsable_body_from_a_worker_process_is_fetched_once_more(
    workers_always: list[ParseWorkers],
) -> None:
    api = FakeApi(1)
    api.scripts["/v1/clusters/cls_000"] = [httpx.Response(200, content=b'{"data": {"id": ')]
    with make_client(api, processes=1) as client:
        result = client.fetch_details(["cls_000"])
        (only,) = list(result)
    assert (only.outcome, only.attempts) == ("ok", 2)
    assert workers_always


def test_when_the_worker_process_dies_the_rest_is_processed_in_the_threads(
    workers_always: list[ParseWorkers], caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeApi(12)
    killed: list[int] = []

    def on_event(kind: str, cluster_id: str) -> None:
        if kind == "done" and not killed:
            for pid in workers_always[0].pids:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    with make_client(api, processes=1, concurrency=2, on_event=on_event) as client:
        results = fetch_all(client, client.list_clusters())
    assert killed
    assert sorted(results) == [f"cls_{i:03d}" for i in range(12)]
    assert all(r.outcome == "ok" for r in results.values())
    assert "a parsing process ended" in caplog.text


def test_worker_processes_end_with_the_fetch_and_never_hold_the_key_outside_the_pipe(
    monkeypatch: pytest.MonkeyPatch, workers_always: list[ParseWorkers]
) -> None:
    monkeypatch.setenv("GPUCOST_API_KEY", KEY)
    seen: dict[str, bytes] = {}
    api = FakeApi(3)

    def on_event(kind: str, cluster_id: str) -> None:
        for pid in workers_always[-1].pids:
            proc = Path(f"/proc/{pid}")
            if proc.exists():
                seen["cmdline"] = (proc / "cmdline").read_bytes()
                seen["environ"] = (proc / "environ").read_bytes()

    with make_client(api, processes=1, on_event=on_event) as client:
        fetch_all(client, client.list_clusters())
    assert seen, "the worker process was not seen while it ran"
    assert KEY.encode() not in seen["cmdline"] and KEY.encode() not in seen["environ"]
    for pid in workers_always[-1].pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_body_whose_processing_raised_in_the_worker_is_processed_in_the_thread(
    monkeypatch: pytest.MonkeyPatch, workers_always: list[ParseWorkers]
) -> None:
    # The worker answers ("error", "") when its processing raised (it prints nothing: the
    # message could quote the provider); the client then processes the body itself, so an
    # error takes the path it takes without workers, and a good body is still stored.
    monkeypatch.setattr(ParseWorkers, "process", lambda self, body: ("error", ""))
    with make_client(FakeApi(3), processes=1) as client:
        results = fetch_all(client, client.list_clusters())
    assert workers_always
    assert [r.outcome for r in results.values()] == ["ok"] * 3
    detail = results["cls_002"].detail
    assert detail is not None and detail.cluster_id == "cls_002"


def test_when_no_worker_process_can_start_the_threads_do_the_work(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(client_module, "PROCESSES_FROM", 1)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr("pipeline.workers.subprocess.Popen", refuse)
    with make_client(FakeApi(3), processes=1) as client:
        results = fetch_all(client, client.list_clusters())
    assert [r.outcome for r in results.values()] == ["ok"] * 3
    assert "no parsing process could start" in caplog.text


@pytest.mark.parametrize("setting", [0, 2])
def test_the_parse_processes_setting_is_how_many_worker_processes_a_fetch_starts(
    monkeypatch: pytest.MonkeyPatch, workers_always: list[ParseWorkers], setting: int
) -> None:
    monkeypatch.setenv("GPUCOST_API_KEY", KEY)
    api = FakeApi(3)
    config = Config(api=ApiSettings(url=BASE, parse_processes=setting, retry_max_seconds=60.0))
    with ApiClient.from_config(config, transport=httpx.MockTransport(api)) as client:
        results = fetch_all(client, client.list_clusters())
    assert [r.outcome for r in results.values()] == ["ok"] * 3
    assert [len(workers.pids) for workers in workers_always] == ([setting] if setting else [])


def test_a_worker_imports_neither_httpx_nor_the_client() -> None:
    """A worker imports `pipeline/process.py` and what it needs, not the HTTP side (measured:
    ~0.3 CPU s and ~15 MB less for each worker started)."""
    import subprocess
    import sys

    probe = (
        "import sys; import pipeline.workers; from pipeline.process import process_body; "
        "print(sorted(m for m in ('httpx', 'pipeline.client', 'pipeline.transport') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.stdout.strip() == "[]"
