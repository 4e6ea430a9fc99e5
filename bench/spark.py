"""DuckDB or Spark: the same full refresh on both engines, at a few fleet sizes.

    .venv/bin/python -m bench.spark [--sizes 30 100] [--days 90] [--master local[2]]

For each size, a history is generated straight into a fresh store (bench/history.py), then,
each step in its own subprocess (peak RSS of the step and of the JVM it started, `ru_maxrss`
of self and children):

- duckdb: `gpucost build --full-refresh` on the DuckDB file;
- export: `gpucost lake export` of every run to a fresh lake;
- spark: `gpucost build --engine spark` over that lake (local mode), session start included.

Results go to `bench/results/spark-<sizes>x<days>.json` and a table. Not in `make bench`: a
Spark build on two shared cores takes minutes even for a small fleet.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.build import RESULTS
from bench.build import _run_child as _run_build_child


def _maxrss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def _child_export(db: str, lake: str) -> dict[str, Any]:
    from pipeline.lake import export_lake

    began = time.perf_counter()
    result = export_lake(db, lake)
    size = sum(p.stat().st_size for p in Path(lake).rglob("*.parquet"))
    return {
        "seconds": time.perf_counter() - began,
        "maxrss_mb": _maxrss_mb(),
        "files": result.files_written,
        "lake_mb": round(size / 2**20, 1),
    }


def _child_spark(lake: str, master: str) -> dict[str, Any]:
    from pipeline.config import Thresholds
    from pipeline.engines.spark import build_on_spark, spark_session

    began = time.perf_counter()
    session = spark_session(master)
    try:
        result = build_on_spark(lake, Thresholds(), spark=session)
        jvm_mb = _jvm_peak_mb(session)
    finally:
        session.stop()
    slowest = sorted(result.model_seconds.items(), key=lambda item: -item[1])[:5]
    return {
        "seconds": time.perf_counter() - began,
        "maxrss_mb": _maxrss_mb(),
        # the driver JVM (local mode: driver and executors) is not a waited-for child while
        # pyspark runs: its own peak (VmHWM) is read from /proc
        "jvm_maxrss_mb": jvm_mb,
        "slowest_models": {name: round(value, 2) for name, value in slowest},
        "rows_per_mart": result.rows_per_mart,
    }


def _jvm_peak_mb(session: Any) -> float | None:
    proc = getattr(session.sparkContext._gateway, "proc", None)
    if proc is None:
        return None
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def _run_child(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.spark", "--child", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_spark_bench(sizes: list[int], days: int, master: str) -> dict[str, Any]:
    """Measure the DuckDB full refresh, the lake export and the Spark build per size; write
    the JSON result and return it."""
    results: dict[str, Any] = {
        "benchmark": "spark",
        "days": days,
        "master": master,
        "cpus": os.cpu_count(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_before": os.getloadavg()[0],
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="gpucost-bench-spark-") as tmp:
        for size in sizes:
            db = str(Path(tmp) / f"spark-{size}.duckdb")
            lake = str(Path(tmp) / f"lake-{size}")
            generated = _run_build_child("generate", db, str(size), str(days))
            duck = _run_build_child("build", db, "full")
            exported = _run_child("export", db, lake)
            spark = _run_child("spark", lake, master)
            results["sizes"].append(
                {
                    "clusters": size,
                    "days": days,
                    "gpu_rows": generated["rows"]["snap.gpu_metric_points"],
                    "duckdb": duck,
                    "export": exported,
                    "spark": spark,
                    "spark_over_duckdb": round(spark["seconds"] / duck["seconds"], 2),
                }
            )
    results["loadavg_after"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    name = "spark-" + "-".join(str(s) for s in sizes) + f"x{days}"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def table(results: dict[str, Any]) -> str:
    """The results as a short text table."""
    lines = [
        f"DuckDB vs Spark ({results['master']}), full refresh of {results['days']} days, "
        f"{results['cpus']} CPUs, load {results['loadavg_before']:.1f}",
        f"{'clusters':>8} {'GPU rows':>11} {'duckdb s':>9} {'MB':>6} {'export s':>9} "
        f"{'lake MB':>8} {'spark s':>8} {'JVM MB':>7} {'spark/duckdb':>12}",
    ]
    for size in results["sizes"]:
        lines.append(
            f"{size['clusters']:>8} {size['gpu_rows']:>11,} {size['duckdb']['seconds']:>9.1f} "
            f"{size['duckdb']['maxrss_mb']:>6.0f} {size['export']['seconds']:>9.1f} "
            f"{size['export']['lake_mb']:>8.1f} {size['spark']['seconds']:>8.1f} "
            f"{size['spark'].get('jvm_maxrss_mb') or 0:>7.0f} {size['spark_over_duckdb']:>12.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: run the comparison (or one child step) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 100])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        step, *rest = args.child
        out = _child_export(*rest) if step == "export" else _child_spark(*rest)
        print(json.dumps(out, default=str))
        return
    print(table(run_spark_bench(args.sizes, args.days, args.master)))


if __name__ == "__main__":
    main()
