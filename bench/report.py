"""Report benchmark (issue 5, item 4): the report of a 1,000-cluster fleet, its time and size.

    .venv/bin/python -m bench.report [--quick] [--clusters 1000] [--days 30 | --nights 2] [--demo]

The database: with `--days D`, D nights of generated history (bench/history.py: 8 GPUs per
cluster, archetypes from busy to idle, stops and price changes) and a full build, a month being
the report's period; else the way users make theirs: the simulator serves a mixed fleet (seed
7, the demo's) over loopback HTTP, and NIGHTS nightly `run_snapshot` + `build_models` fill it.
Then a fresh process renders it with `render_report`, twice: the first call is what a nightly
cron pays (imports, the Jinja templates' compilation), the second shows the cost
of the data alone. Measured: render seconds (wall and CPU), the renderer's peak RSS, index.html's
size (target: a few MB at most, here at most 5 MB), the number of cluster sections and charts,
focus.csv's size and rows, and the other CSVs. `--demo` also times `gpucost demo` (40 clusters x
14 nights, the whole pipeline), whose target is well under a minute.

Every measured step runs in its own subprocess, so each peak RSS (`ru_maxrss`) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 11, 13, 3, tzinfo=UTC)
HTML_TARGET_BYTES = 5 * 2**20
DEMO_TARGET_SECONDS = 60.0


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------ children


def _child_prepare(db: str, clusters: int, nights: int) -> dict[str, Any]:
    """Fill `db` with `nights` nights of a `clusters`-strong simulated fleet, built."""

    from pipeline.config import ApiSettings, Config, StoreSettings
    from pipeline.models import build_models
    from pipeline.simulator.fleet import Fleet, FleetSpec
    from pipeline.simulator.server import Simulator
    from pipeline.snapshot import run_snapshot

    key = "bench-report-key"
    os.environ["GPUCOST_API_KEY"] = key
    fleet = Fleet(FleetSpec(seed=7, clusters=clusters, start=START))
    sim = Simulator(fleet, api_key=key)
    nights_out = []
    began = time.perf_counter()
    with sim.run_in_thread(port=0) as url:
        config = Config(api=ApiSettings(url=url), store=StoreSettings(db=db))
        for night in range(nights):
            fleet.set_clock(START + timedelta(days=night))
            t0 = time.perf_counter()
            snap = run_snapshot(config)
            t1 = time.perf_counter()
            build_models(config)
            t2 = time.perf_counter()
            nights_out.append(
                {
                    "night": night + 1,
                    "snapshot_seconds": round(t1 - t0, 2),
                    "build_seconds": round(t2 - t1, 2),
                    "status": snap.status,
                }
            )
    return {
        "seconds": time.perf_counter() - began,
        "nights": nights_out,
        "db_mb": round(os.path.getsize(db) / 2**20, 1),
        "maxrss_mb": _maxrss_mb(),
    }


def _child_history(db: str, clusters: int, days: int) -> dict[str, Any]:
    """Fill `db` with `days` nights of generated history (bench/history.py), fully built."""
    from bench.history import generate
    from pipeline.config import Config, StoreSettings
    from pipeline.models import build_models
    from pipeline.store import Store

    began = time.perf_counter()
    with Store.open(db) as store:
        rows = generate(store.con, clusters, days)
    generated = time.perf_counter()
    build_models(Config(store=StoreSettings(db=db)), full_refresh=True)
    return {
        "seconds": time.perf_counter() - began,
        "generate_seconds": round(generated - began, 2),
        "build_seconds": round(time.perf_counter() - generated, 2),
        "rows": rows,
        "db_mb": round(os.path.getsize(db) / 2**20, 1),
        "maxrss_mb": _maxrss_mb(),
    }


def _child_render(db: str, out: str) -> dict[str, Any]:
    """Render the report of `db` into `out` twice in this fresh process; times and sizes."""
    t0 = time.perf_counter()
    from pipeline.config import Config, StoreSettings
    from pipeline.report import render_report

    import_seconds = time.perf_counter() - t0
    config = Config(store=StoreSettings(db=db))
    runs = []
    result = None
    for _ in range(2):
        cpu = _cpu_seconds()
        began = time.perf_counter()
        result = render_report(config, Path(out))
        runs.append({"seconds": time.perf_counter() - began, "cpu_seconds": _cpu_seconds() - cpu})
    assert result is not None
    html = Path(result.index_html).read_text(encoding="utf-8")
    files = {p.name: p.stat().st_size for p in map(Path, result.files)}
    return {
        "import_seconds": import_seconds,
        "first": runs[0],
        "second": runs[1],
        "clusters": result.clusters,
        "focus_rows": result.focus_rows,
        "html_bytes": files["index.html"],
        "focus_bytes": files["focus.csv"],
        "file_bytes": files,
        "sections": html.count('<article class="cluster"'),
        "charts": len(re.findall(r'<svg class="chart"', html)),
        "maxrss_mb": _maxrss_mb(),
    }


def _child_demo(db: str, out: str) -> dict[str, Any]:
    """`gpucost demo` as a user runs it (40 clusters, 14 nights), timed from the outside."""
    began = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "gpucost"), "demo", "--db", db, "--out", out],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"gpucost demo failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "maxrss_mb": usage.ru_maxrss / 1024,
        "last_line": proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "",
    }


def _run_child(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.report", "--child", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise SystemExit(f"report benchmark child {args[0]} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------ parent


def run_report_bench(
    clusters: int,
    quick: bool = False,
    *,
    nights: int = 2,
    days: int = 0,
    demo: bool = False,
) -> dict[str, Any]:
    """Make a `clusters`-strong database, render its report; the figures.

    With `days` > 0 the database is `days` nights of generated history (bench/history.py,
    then a full build); else `nights` nights of the simulator's mixed fleet over HTTP, each
    snapshotted and built as cron would. `quick` only names the run (the caller picks a smaller
    `clusters`); `demo` also times `gpucost demo`.
    """
    results: dict[str, Any] = {
        "benchmark": "report",
        "quick": quick,
        "clusters": clusters,
        "source": f"history, {days} days" if days else f"simulator, {nights} nights",
        "nights": days or nights,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_before": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="gpucost-bench-report-") as tmp:
        db = str(Path(tmp) / "bench.duckdb")
        if days:
            results["prepare"] = _run_child("history", db, str(clusters), str(days))
        else:
            results["prepare"] = _run_child("prepare", db, str(clusters), str(nights))
        results["render"] = _run_child("render", db, str(Path(tmp) / "out"))
        if demo:
            results["demo"] = _run_child(
                "demo", str(Path(tmp) / "demo.duckdb"), str(Path(tmp) / "demo-out")
            )
    results["loadavg_after"] = os.getloadavg()[0]
    render = results["render"]
    results["html_mb"] = round(render["html_bytes"] / 2**20, 2)
    results["html_ok"] = render["html_bytes"] <= HTML_TARGET_BYTES
    if demo:
        results["demo_ok"] = results["demo"]["seconds"] < DEMO_TARGET_SECONDS
    return results


def print_table(results: dict[str, Any]) -> None:
    """The figures as a few lines on stdout."""
    r = results["render"]
    prep = results["prepare"]
    print(
        f"report benchmark: {r['clusters']} clusters, {results['source']} "
        f"(prepared in {prep['seconds']:.0f} s, database {prep['db_mb']} MB), load "
        f"{results['loadavg_before']:.1f} -> {results['loadavg_after']:.1f}"
    )
    print(
        f"  render: first {r['first']['seconds']:.2f} s (CPU {r['first']['cpu_seconds']:.2f}), "
        f"second {r['second']['seconds']:.2f} s, imports {r['import_seconds']:.2f} s, "
        f"peak RSS {r['maxrss_mb']:.0f} MB"
    )
    print(
        f"  index.html {r['html_bytes'] / 2**20:.2f} MB ({r['sections']} cluster sections, "
        f"{r['charts']} charts); focus.csv {r['focus_bytes'] / 2**20:.1f} MB, "
        f"{r['focus_rows']} rows"
    )
    if "demo" in results:
        d = results["demo"]
        print(f"  gpucost demo (40 clusters x 14 nights): {d['seconds']:.1f} s")


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 clusters")
    parser.add_argument("--clusters", type=int, default=None)
    parser.add_argument("--nights", type=int, default=2, help="simulated nights (no --days)")
    parser.add_argument("--days", type=int, default=0, help="generated history instead")
    parser.add_argument("--demo", action="store_true", help="also time gpucost demo")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "prepare":
            out = _child_prepare(rest[0], int(rest[1]), int(rest[2]))
        elif kind == "history":
            out = _child_history(rest[0], int(rest[1]), int(rest[2]))
        elif kind == "render":
            out = _child_render(rest[0], rest[1])
        else:
            out = _child_demo(rest[0], rest[1])
        print(json.dumps(out))
        return
    clusters = args.clusters or (100 if args.quick else 1000)
    results = run_report_bench(
        clusters, args.quick, nights=args.nights, days=args.days, demo=args.demo
    )
    name = "report-quick.json" if args.quick else "report.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_table(results)
    print(f"results: {RESULTS / name}")


if __name__ == "__main__":
    main()
