"""Snapshot benchmark: the pipeline's `snapshot` stage beside the floor, against the simulator.

    .venv/bin/python -m bench.snapshot [--quick] [--clusters 1000] [--gpus 8] [--concurrency 8]
                                       [--rounds 1]

A fleet of CLUSTERS clusters with GPUS GPUs each and a full 7-day window (168 hourly buckets
with per-GPU series, ~150 KB of JSON per detail) is served by the simulator (no rate limit) from
this process; every measured run is a separate subprocess, so its peak RSS (`ru_maxrss`) is its
own:

- floor: a bare loop that lists the clusters and fetches every detail with the same
  concurrency over one keep-alive httpx client, and only parses each body with orjson (the
  pipeline's first parse): the least any client can do with the same responses;
- pipeline, night 1: `run_snapshot` into an empty database (fetch, redact, normalize, load,
  raw store, ledger);
- pipeline, night 2: the clock advanced one day, the same database: the steady state, where six
  of the seven days are already stored and are replaced by key.

Each floor is measured after a warm-up pass over the same responses, so the simulator's caches
are equally warm for both, and just before the pipeline run it is compared with. With
`--rounds N` (`make bench`: 3) the two nights run N times from an empty database and the round
with the median ratio is reported per night. Results go to `bench/results/snapshot[-quick].json`
and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

START = datetime(2026, 11, 13, 3, tzinfo=UTC)
KEY = "bench-snapshot-key"
RESULTS = Path(__file__).resolve().parent / "results"
# Rounds of `make bench`'s snapshot item (the median round is reported).
DEFAULT_ROUNDS = 3
DETAIL_PARAMS = {
    "include_metrics": "true",
    "include_cost_breakdown": "true",
    "metrics_window": "7d",
}


def _maxrss_mb() -> float:
    # Linux reports kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    # CPU time is steadier than wall time on a shared machine: both are reported.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu_seconds() -> float:
    # The pipeline's worker processes (pipeline/workers.py), once they have ended.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------ children


def _child_floor(url: str, concurrency: int) -> dict[str, Any]:
    import httpx
    import orjson

    began = time.perf_counter()
    cpu = _cpu_seconds()
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=url, headers=headers, limits=limits, timeout=60) as http:
        ids: list[str] = []
        page = 1
        while True:
            body = json.loads(http.get("/clusters", params={"page": page, "limit": 100}).content)
            ids += [c["id"] for c in body["data"]["clusters"]]
            if not body["data"]["pagination"]["has_next"]:
                break
            page += 1

        def fetch(cid: str) -> int:
            response = http.get(f"/clusters/{cid}", params=DETAIL_PARAMS)
            # The same first parse as the pipeline's client.
            orjson.loads(response.content)
            return len(response.content)

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            size = sum(pool.map(fetch, ids))
    return {
        "seconds": time.perf_counter() - began,
        "cpu_seconds": _cpu_seconds() - cpu,
        "clusters": len(ids),
        "bytes": size,
        "maxrss_mb": _maxrss_mb(),
    }


class _ChildPeaks:
    """The peak RSS of this process's child processes (the pipeline's workers), sampled from
    `/proc/<pid>/status` (`VmHWM`, each child's own high-water mark) while they run.

    `RUSAGE_CHILDREN`'s `ru_maxrss` cannot tell it: a child started by fork (or vfork) and exec
    is charged the parent's resident size at the fork, so it reported ~155 MB for a worker whose
    own peak is ~87 MB. Empty on a system without `/proc`."""

    def __init__(self, every: float = 0.1) -> None:
        self.peaks: dict[int, float] = {}
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="child-peaks", daemon=True)

    def __enter__(self) -> _ChildPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            for pid in _child_pids():
                peak = _hwm_mb(pid)
                if peak is not None:
                    self.peaks[pid] = max(peak, self.peaks.get(pid, 0.0))

    @property
    def largest_mb(self) -> float:
        return round(max(self.peaks.values(), default=0.0), 1)


def _child_pids() -> list[int]:
    pids: list[int] = []
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children", encoding="ascii") as children:
                pids += map(int, children.read().split())
    except OSError:
        pass
    return pids


def _hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def _child_pipeline(url: str, concurrency: int, db: str) -> dict[str, Any]:
    from pipeline.config import ApiSettings, Config, StoreSettings
    from pipeline.snapshot import run_snapshot

    config = Config(api=ApiSettings(url=url, concurrency=concurrency), store=StoreSettings(db=db))
    os.environ["GPUCOST_API_KEY"] = KEY
    began = time.perf_counter()
    cpu = _cpu_seconds()
    workers = _children_cpu_seconds()
    with _ChildPeaks() as children:
        result = run_snapshot(config)
    seconds = time.perf_counter() - began
    workers = _children_cpu_seconds() - workers
    return {
        "seconds": seconds,
        # Its worker processes' CPU included (they have ended with the fetch).
        "cpu_seconds": _cpu_seconds() - cpu + workers,
        "workers_cpu_seconds": round(workers, 2),
        "clusters": result.fetched,
        "status": result.status,
        "failed": result.failed,
        "maxrss_mb": _maxrss_mb(),
        # The largest worker process's own peak (not in `maxrss_mb`, which is this process's).
        "workers_maxrss_mb": children.largest_mb,
    }


# `--profile DIR`: the pipeline children run under py-spy (pip install py-spy), which writes
# their collapsed stacks (all threads, native frames off) to DIR/pipeline_night<N>.txt.
_PROFILE: dict[str, Path] = {}


def _machine_ticks() -> tuple[int, int]:
    """(all, idle) CPU ticks of the whole machine so far (/proc/stat; zeros elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(ticks), ticks[3] + ticks[4]  # idle + iowait


def _run_child(*args: str, profile: str | None = None) -> dict[str, Any]:
    """Run one measured child. Besides the child's own figures, records what served it: the CPU
    this process spent meanwhile (`simulator_cpu_seconds`: the simulator runs here, in threads,
    while this thread only waits) and the share of the machine's CPUs that were busy
    (`machine_busy`). The floor waits on the simulator and the pipeline on its own CPU, so the
    ratio follows the pipeline's CPU over the simulator's (bench/README.md)."""
    machine = _machine_ticks()
    served = _cpu_seconds()
    result = _run_one(*args, profile=profile)
    result["simulator_cpu_seconds"] = round(_cpu_seconds() - served, 2)
    ticks, idle = (now - then for now, then in zip(_machine_ticks(), machine, strict=True))
    result["machine_busy"] = round(1 - idle / ticks, 2) if ticks else None
    return result


def _run_one(*args: str, profile: str | None = None) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.snapshot", "--child", *args]
    if profile and "dir" in _PROFILE:
        out = _PROFILE["dir"] / f"{profile}.txt"
        spy = Path(sys.executable).with_name("py-spy")
        command = [
            str(spy),
            "record",
            "--gil",
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            str(out),
            "--",
            *command,
        ]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {args[0]} failed:\n{proc.stderr}")
    # the last JSON line (py-spy, when profiling, prints its own lines after it)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# ------------------------------------------------------------------------------ parent


def _fleet(clusters: int, gpus: int) -> Any:
    from pipeline.simulator.fleet import ClusterPlan, Fleet, FleetSpec

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


def _table_rows(db: str) -> tuple[dict[str, int], float]:
    from pipeline.store import Store

    with Store.open(db, read_only=True) as store:
        rows = {
            table: store.con.execute(f"select count(*) from snap.{table}").fetchall()[0][0]
            for table in ("cluster_snapshots", "metric_points", "gpu_metric_points")
        }
        rows["raw.responses"] = store.con.execute("select count(*) from raw.responses").fetchall()[
            0
        ][0]
    return rows, os.path.getsize(db) / 2**20


def _one_round(clusters: int, gpus: int, concurrency: int) -> dict[str, Any]:
    """Nights 1 and 2 on a fresh fleet (its clock at START) and an empty database: per night a
    warm-up floor, the floor, the pipeline (the floor just before the pipeline it is compared
    with)."""
    from pipeline.simulator.server import Simulator

    sim = Simulator(_fleet(clusters, gpus), api_key=KEY)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, sim.run_in_thread(port=0) as url:
        db = str(Path(tmp) / "bench.duckdb")
        for night in (1, 2):
            _run_child("floor", url, str(concurrency))  # warm-up: the simulator's caches
            out[f"floor_night{night}"] = _run_child("floor", url, str(concurrency))
            out[f"pipeline_night{night}"] = _run_child(
                "pipeline", url, str(concurrency), db, profile=f"pipeline_night{night}"
            )
            rows, size = _table_rows(db)
            out[f"pipeline_night{night}"].update(rows=rows, db_mb=round(size, 1))
            out[f"ratio_night{night}"] = round(
                out[f"pipeline_night{night}"]["seconds"] / out[f"floor_night{night}"]["seconds"],
                2,
            )
            sim.advance(timedelta(days=1))
    return out


def run(
    clusters: int, gpus: int, concurrency: int, out: Path, *, rounds: int = 1
) -> dict[str, Any]:
    """Run the benchmark `rounds` times (each round: nights 1 and 2 from an empty database);
    write and return the results.

    On a shared machine one run's ratio says little (the floor alone has taken 2.9 s and 6.5 s
    in the same run), so each pipeline run is compared with the floor measured just before it,
    and with several rounds the round whose ratio is the median (of an even number of rounds,
    the higher of the two middle ones) is reported per night
    (`floor_night<N>`, `pipeline_night<N>`, `ratio_night<N>`); every round's figures are kept
    under `rounds`."""
    results: dict[str, Any] = {
        "benchmark": "snapshot",
        "clusters": clusters,
        "gpus": gpus,
        "buckets": 168,
        "concurrency": concurrency,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_before": os.getloadavg()[0],
    }
    done = [_one_round(clusters, gpus, concurrency) for _ in range(max(rounds, 1))]
    results["loadavg_after"] = os.getloadavg()[0]
    for night in (1, 2):
        ranked = sorted(done, key=lambda r: r[f"ratio_night{night}"])
        median = ranked[len(ranked) // 2]  # of an even number, the worse middle one
        for key in (f"floor_night{night}", f"pipeline_night{night}", f"ratio_night{night}"):
            results[key] = median[key]
    if len(done) > 1:
        results["rounds"] = done
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def run_snapshot_bench(
    clusters: int, quick: bool, *, out: Path | None = None, rounds: int | None = None
) -> dict[str, Any]:
    """Item 1 of `python -m bench`: `run` with 8 GPUs and concurrency 8, `rounds` times
    (default: 3, quick: 1); returns the results (keys `floor_night1|2`, `pipeline_night1|2`,
    `ratio_night1|2`: the median round). Written to `out` when given, else to
    `bench/results/snapshot[-quick].json` at the standard sizes."""
    if out is None:
        name = "snapshot-quick.json" if quick else "snapshot.json"
        if clusters != (100 if quick else 1000):
            name = f"snapshot-{clusters}.json"
        out = RESULTS / name
    if rounds is None:
        rounds = 1 if quick else DEFAULT_ROUNDS
    return run(clusters, 8, 8, out, rounds=rounds)


def run_ratelimit_bench(
    clusters: int,
    rate_per_second: float,
    *,
    window_seconds: float = 10.0,
    concurrency: int = 8,
    out: Path | None = None,
) -> dict[str, Any]:
    """Item 2: the pipeline against a simulator that allows `rate_per_second` requests per
    second (a fixed window of `window_seconds` holding rate x window requests, as providers
    count). Target: wall time within 10 % of N / R (N the requests the run needs: the list
    pages and one per cluster) and at most a handful of 429s. The pipeline runs in a
    subprocess (its own peak RSS); the 429s are counted by the simulator."""
    from pipeline.simulator.server import RateLimit, Simulator

    limit = RateLimit(max(1, round(rate_per_second * window_seconds)), window_seconds)
    sim = Simulator(_fleet(clusters, 8), api_key=KEY, rate_limit=limit)
    with tempfile.TemporaryDirectory() as tmp, sim.run_in_thread(port=0) as url:
        db = str(Path(tmp) / "bench.duckdb")
        pipeline = _run_child("pipeline", url, str(concurrency), db)
        stats = sim.stats()
    by_status: dict[str, int] = {}
    for counts in stats["requests"].values():
        for status, n in counts.items():
            by_status[str(status)] = by_status.get(str(status), 0) + n
    throttled = by_status.get("429", 0)
    needed = stats["requests_total"] - throttled
    ideal = needed / rate_per_second
    results: dict[str, Any] = {
        "benchmark": "ratelimit",
        "clusters": clusters,
        "rate_per_second": rate_per_second,
        "window_seconds": window_seconds,
        "limit": {"requests": limit.requests, "window_seconds": limit.window_seconds},
        "concurrency": concurrency,
        "requests": needed,
        "count_429": throttled,
        "responses_by_status": by_status,
        "seconds": pipeline["seconds"],
        "ideal_seconds": round(ideal, 2),
        "ratio": round(pipeline["seconds"] / ideal, 3),
        "cpu_seconds": pipeline["cpu_seconds"],
        "maxrss_mb": pipeline["maxrss_mb"],
        "status": pipeline["status"],
        "stored": pipeline["clusters"],
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out = out or RESULTS / f"ratelimit-{clusters}-{rate_per_second:g}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def print_table(results: dict[str, Any]) -> None:
    """The results as a small table on stdout."""
    print(
        f"snapshot benchmark: {results['clusters']} clusters x {results['gpus']} GPUs x "
        f"{results['buckets']} buckets, concurrency {results['concurrency']}, "
        f"{results['cpus']} CPUs, load {results['loadavg_before']:.1f} -> "
        f"{results['loadavg_after']:.1f}"
    )
    print(
        f"{'run':<20}{'seconds':>10}{'CPU s':>8}{'sim CPU s':>10}{'busy':>6}{'clusters/s':>12}"
        f"{'peak RSS MB':>13}{'x floor':>9}"
    )
    for night in (1, 2):
        floor = results[f"floor_night{night}"]
        pipe = results[f"pipeline_night{night}"]
        for name, row, ratio in (
            (f"floor night {night}", floor, 1.0),
            (f"pipeline night {night}", pipe, results[f"ratio_night{night}"]),
        ):
            rate = row["clusters"] / row["seconds"]
            # Results recorded before these two were measured lack them.
            sim = row.get("simulator_cpu_seconds")
            busy = row.get("machine_busy")
            print(
                f"{name:<20}{row['seconds']:>10.2f}{row['cpu_seconds']:>8.1f}"
                f"{'' if sim is None else f'{sim:.1f}':>10}"
                f"{'' if busy is None else f'{busy:.0%}':>6}{rate:>12.1f}"
                f"{row['maxrss_mb']:>13.0f}{ratio:>9.2f}"
            )
    rows = results["pipeline_night2"]["rows"]
    print(f"after night 2: {rows} ; database {results['pipeline_night2']['db_mb']} MB")
    if "rounds" in results:
        for night in (1, 2):
            each = ", ".join(
                f"{r[f'ratio_night{night}']:.2f}x ({r[f'pipeline_night{night}']['cpu_seconds']:.1f}"
                " CPU s)"
                for r in results["rounds"]
            )
            print(f"night {night}, every round: {each}; the median round is shown above")


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 clusters")
    parser.add_argument("--clusters", type=int, default=None)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat nights 1 and 2; the median round is reported"
    )
    parser.add_argument(
        "--rate", type=float, default=None, help="rate-limited run at RATE requests/s instead"
    )
    parser.add_argument("--window", type=float, default=10.0, help="rate-limit window, s")
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy the pipeline runs into this folder"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        _PROFILE["dir"] = args.profile
    if args.child:
        kind, url, concurrency, *rest = args.child
        if kind == "floor":
            print(json.dumps(_child_floor(url, int(concurrency))))
        else:
            print(json.dumps(_child_pipeline(url, int(concurrency), rest[0])))
        return
    clusters = args.clusters or (100 if args.quick else 1000)
    if args.rate:
        limited = run_ratelimit_bench(
            clusters, args.rate, window_seconds=args.window, concurrency=args.concurrency
        )
        print(
            f"rate-limited snapshot: {clusters} clusters at {args.rate:g}/s: "
            f"{limited['seconds']:.1f} s for N/R = {limited['ideal_seconds']:.1f} s "
            f"({limited['ratio']:.2f}x), {limited['count_429']} x 429, "
            f"peak RSS {limited['maxrss_mb']:.0f} MB"
        )
        return
    name = "snapshot-quick.json" if args.quick else "snapshot.json"
    if args.clusters:
        name = f"snapshot-{clusters}.json"
    if args.profile:
        name = name.replace(".json", "-profiled.json")
    results = run(clusters, args.gpus, args.concurrency, RESULTS / name, rounds=args.rounds)
    print_table(results)
    print(f"results: {RESULTS / name}")


if __name__ == "__main__":
    main()
