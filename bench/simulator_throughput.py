"""How fast the simulator serves 7-day details, against what a client spends loading them.

    .venv/bin/python bench/simulator_throughput.py [--clusters 1000] [--gpus 8] [--workers 8]
        [--snapshot N] [--only-snapshot] [--quick]

Builds a fleet of CLUSTERS training clusters with GPUS GPUs each (168 hourly buckets with
per-GPU series), then measures:

1. server work without a network: `Simulator.handle` for every details request (fleet
   generation + variants + JSON encoding), cold (first pass) and warm (second pass);
2. over real HTTP on loopback, with WORKERS threads each holding a keep-alive httpx client
   that only reads the bytes (no parsing), so the figure is the server's and the transport's;
3. the least a client must do per body: `json.loads(..., parse_float=Decimal)`;
4. with `--snapshot N`: the pipeline's own `run_snapshot` of the first N clusters against the
   simulator in this process, and the time the simulator spent answering it (its share).

The simulator must never be the bottleneck: (2) should take a small fraction of what the
pipeline's snapshot spends on the same clusters, and (3) alone is a floor for that.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from pipeline.simulator.fleet import ClusterPlan, Fleet, FleetSpec
from pipeline.simulator.server import Simulator

START = datetime(2026, 11, 13, 3, tzinfo=UTC)
KEY = "bench-key"
QUERY = "include_metrics=true&include_cost_breakdown=true&metrics_window=7d"


def _fleet(clusters: int, gpus: int) -> Fleet:
    plans = [
        ClusterPlan(
            id=f"cls_{i:05d}",
            name=f"bench-{i}",
            created_at=START - timedelta(days=30),
            gpu_type="H100",
            gpu_count=gpus,
            gpu_price=Decimal("4.5000"),
            archetype="training",
        )
        for i in range(clusters)
    ]
    return Fleet(FleetSpec(seed=1, start=START, plans=plans))


def _server_side(sim: Simulator, ids: list[str]) -> tuple[float, int]:
    began = time.perf_counter()
    size = 0
    for cid in ids:
        response = sim.handle(
            "GET", f"/v1/clusters/{cid}?{QUERY}", {"authorization": f"Bearer {KEY}"}
        )
        assert response.status == 200
        size += len(response.body)
    return time.perf_counter() - began, size


def _over_http(url: str, ids: list[str], workers: int) -> tuple[float, int]:
    chunks = [ids[i::workers] for i in range(workers)]
    sizes = [0] * workers

    def work(n: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
            for cid in chunks[n]:
                response = http.get(f"{url}/clusters/{cid}?{QUERY}")
                response.raise_for_status()
                sizes[n] += len(response.content)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, sum(sizes)


def main() -> None:
    """Run the measurements and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--snapshot",
        type=int,
        default=0,
        metavar="N",
        help="also time the pipeline's snapshot of N clusters (0: skip)",
    )
    parser.add_argument("--only-snapshot", action="store_true", help="skip the other measurements")
    parser.add_argument("--quick", action="store_true", help="100 clusters, snapshot of 100")
    args = parser.parse_args()
    if args.quick:
        args.clusters, args.snapshot = 100, 100
    if args.only_snapshot:
        _snapshot_share(
            _fleet(args.snapshot or args.clusters, args.gpus), args.snapshot or args.clusters
        )
        return

    fleet = _fleet(args.clusters, args.gpus)
    ids = [s["id"] for s in fleet.list_summaries()]
    sim = Simulator(fleet, api_key=KEY)
    n = len(ids)

    cold, size = _server_side(sim, ids)
    warm, _ = _server_side(sim, ids)
    print(
        f"clusters={n} gpus={args.gpus} body={size / n / 1024:.0f} KiB/cluster "
        f"total={size / 2**20:.0f} MiB"
    )
    print(
        f"server work, no network: cold {cold:.2f} s ({cold / n * 1000:.2f} ms/cluster), "
        f"warm {warm:.2f} s ({warm / n * 1000:.2f} ms/cluster)"
    )

    with sim.run_in_thread(port=0) as url:
        for workers in sorted({1, args.workers}):
            elapsed, got = _over_http(url, ids, workers)
            print(
                f"over HTTP, {workers} keep-alive client(s): {elapsed:.2f} s, "
                f"{n / elapsed:.0f} details/s, {got / elapsed / 2**20:.0f} MiB/s"
            )

    bodies = [
        sim.handle("GET", f"/v1/clusters/{cid}?{QUERY}", {"authorization": f"Bearer {KEY}"}).body
        for cid in ids[:200]
    ]
    began = time.perf_counter()
    for body in bodies:
        json.loads(body, parse_float=Decimal)
    parse = (time.perf_counter() - began) / len(bodies)
    print(
        f"client floor, json.loads with Decimal: {parse * 1000:.2f} ms/cluster, "
        f"{parse * n:.2f} s for {n} clusters"
    )
    if args.snapshot:
        _snapshot_share(_fleet(args.snapshot, args.gpus), args.snapshot)


def _snapshot_share(fleet: Fleet, clusters: int) -> None:
    """Time `run_snapshot` against the simulator and the simulator's part of that time."""
    import dataclasses
    import os
    import tempfile
    from pathlib import Path

    from pipeline.config import Config
    from pipeline.snapshot import run_snapshot

    ids = set([s["id"] for s in fleet.list_summaries()][:clusters])
    full = fleet.list_summaries
    fleet.list_summaries = lambda: [s for s in full() if s["id"] in ids]  # type: ignore[method-assign]
    sim = Simulator(fleet, api_key=KEY)
    spent = [0.0]
    handle = sim.handle

    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        # CPU time of this server thread: wall time would count waiting for the GIL
        began = time.thread_time()
        try:
            return handle(*args, **kwargs)
        finally:
            spent[0] += time.thread_time() - began

    sim.handle = timed  # type: ignore[method-assign]
    os.environ.pop("GPUCOST_API_KEY", None)
    with tempfile.TemporaryDirectory() as tmp, sim.run_in_thread(port=0) as url:
        key_file = Path(tmp) / "key"
        key_file.write_text(KEY, encoding="utf-8")
        config = Config()
        config = dataclasses.replace(
            config,
            api=dataclasses.replace(config.api, url=url, api_key_file=str(key_file)),
            store=dataclasses.replace(config.store, db=str(Path(tmp) / "bench.duckdb")),
        )
        began = time.perf_counter()
        result = run_snapshot(config)
        elapsed = time.perf_counter() - began
    print(
        f"pipeline snapshot of {len(ids)} clusters: {elapsed:.2f} s ({result.summary_line()}); "
        f"simulator CPU answering it: {spent[0]:.2f} s = {spent[0] / elapsed:.0%} of that time"
    )


if __name__ == "__main__":
    main()
