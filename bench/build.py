"""Build benchmark: full refresh over a year of history, then one more night built incrementally.

    .venv/bin/python -m bench.build [--quick] [--clusters 300] [--days 365]

For each of three fleet sizes (a tenth, three tenths and all of CLUSTERS clusters x 8 GPUs),
a history of DAYS nights is generated straight into a fresh store (bench/history.py), then, each
step in its own subprocess so that its peak RSS (`ru_maxrss`) is its own:

- full: `gpucost build --full-refresh` over the whole history;
- append: one more night as the snapshot stage writes it (a run, its snapshots, the buckets of
  its 7-day window replacing the stored ones);
- incremental: the nightly `gpucost build` of that night.

Target (issue 5): the incremental build at most a tenth of the full refresh. Each build reports
its slowest models (`BuildResult.model_seconds`). Results go to `bench/results/build[-quick].json`
and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _maxrss_mb() -> float:
    # Linux reports kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------ children


def _child_generate(db: str, clusters: int, days: int) -> dict[str, Any]:
    from bench.history import generate
    from pipeline.store import Store

    began, cpu = time.perf_counter(), _cpu_seconds()
    with Store.open(db) as store:
        rows = generate(store.con, clusters, days)
    return {
        "seconds": time.perf_counter() - began,
        "cpu_seconds": _cpu_seconds() - cpu,
        "rows": rows,
        "maxrss_mb": _maxrss_mb(),
        "db_mb": round(os.path.getsize(db) / 2**20, 1),
    }


def _child_append(db: str, clusters: int, days: int) -> dict[str, Any]:
    from bench.history import append_night
    from pipeline.store import Store

    began = time.perf_counter()
    with Store.open(db) as store:
        run_id = append_night(store.con, clusters, days)
    return {"seconds": time.perf_counter() - began, "run_id": run_id}


def _child_build(db: str, full: bool) -> dict[str, Any]:
    from pipeline.config import Config, StoreSettings
    from pipeline.models import build_models

    began, cpu = time.perf_counter(), _cpu_seconds()
    result = build_models(Config(store=StoreSettings(db=db)), full_refresh=full)
    slowest = sorted(result.model_seconds.items(), key=lambda item: -item[1])[:5]
    return {
        "seconds": time.perf_counter() - began,
        "cpu_seconds": _cpu_seconds() - cpu,
        "maxrss_mb": _maxrss_mb(),
        "models_seconds": round(sum(result.model_seconds.values()), 2),
        "slowest_models": {name: round(value, 2) for name, value in slowest},
        "incremental_marts": result.incremental_marts,
        "batches": result.batches,
        "rows_per_mart": result.rows_per_mart,
    }


def _child_compare(db: str, other: str) -> dict[str, Any]:
    import duckdb

    marts = (
        "idle_waste_daily",
        "idle_waste_gpu_daily",
        "fleet_daily",
        "projection_drift",
        "recommendations",
        "clusters",
        "cluster_drift_accuracy",
    )
    equal = {}
    for mart in marts:
        rows = []
        for path in (db, other):
            con = duckdb.connect(path, read_only=True)
            rows.append(con.execute(f"select * from marts.{mart} order by all").fetchall())
            con.close()
        equal[mart] = rows[0] == rows[1]
    return {"equal": all(equal.values()), "marts": equal}


def _run_child(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.build", "--child", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------ parent


def _one_size(clusters: int, days: int, folder: Path, verify: bool) -> dict[str, Any]:
    """Every step of one fleet size; a step that fails ends the size with its error recorded
    (`failed`: the step and the last lines of its error) beside the steps measured before it,
    so that an hour of measurement is not lost with the step after it."""
    db = str(folder / f"build-{clusters}x{days}.duckdb")
    size: dict[str, Any] = {"clusters": clusters, "gpus": 8, "days": days}
    steps: list[tuple[str, tuple[str, ...]]] = [
        ("generate", ("generate", db, str(clusters), str(days))),
        ("full_refresh", ("build", db, "full")),
        ("append_night", ("append", db, str(clusters), str(days))),
        ("incremental", ("build", db, "incremental")),
    ]
    for name, args in steps:
        try:
            size[name] = _run_child(*args)
        except RuntimeError as exc:
            size["failed"] = {"step": name, "error": str(exc)[-1500:]}
            return size
    size["gpu_rows"] = size["generate"]["rows"]["snap.gpu_metric_points"]
    full, incremental = size["full_refresh"], size["incremental"]
    size["incremental_over_full"] = round(incremental["seconds"] / full["seconds"], 3)
    # CPU time is steadier than wall time on a shared machine: both are reported
    size["incremental_over_full_cpu"] = round(incremental["cpu_seconds"] / full["cpu_seconds"], 3)
    size["incremental_equals_full_refresh"] = None
    if verify:
        # the same database rebuilt from scratch must hold the same marts
        copy = str(folder / "verify.duckdb")
        shutil.copyfile(db, copy)
        _run_child("build", copy, "full")
        size["incremental_equals_full_refresh"] = _run_child("compare", db, copy)
    return size


def run_build_bench(
    clusters: int,
    days: int,
    quick: bool,
    *,
    sizes: list[int] | None = None,
    verify: bool = False,
    keep: Path | None = None,
) -> dict[str, Any]:
    """Measure generation, full refresh and the nightly incremental build at three sizes (a
    tenth, three tenths and all of `clusters`, or `sizes`), `days` nights each; write the JSON
    result and return it: `build-quick.json` when `quick`, `build-<sizes>x<days>.json` for explicit
    sizes, else `build.json`. `verify` also compares the incremental marts with a full refresh
    of the same database (one more full refresh per size). `keep`: the databases are written
    to that folder and left there (a failed build leaves its database as before the build, so
    the failing step can be run again by hand: `python -m bench.build --child build DB
    incremental`)."""
    explicit = sizes is not None
    if sizes is None:
        sizes = sorted({max(1, clusters // 10), max(1, clusters * 3 // 10), clusters})
    results: dict[str, Any] = {
        "benchmark": "build",
        "quick": quick,
        "days": days,
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_before": os.getloadavg()[0],
        "target": "incremental build of one night <= 0.1 x full refresh",
        "sizes": [],
    }
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        for size in sizes:
            results["sizes"].append(_one_size(size, days, keep, verify))
    else:
        with tempfile.TemporaryDirectory(prefix="gpucost-bench-build-") as tmp:
            for size in sizes:
                results["sizes"].append(_one_size(size, days, Path(tmp), verify))
                # each size's database is only needed for its own steps
                for leftover in Path(tmp).iterdir():
                    leftover.unlink()
    largest = results["sizes"][-1]
    results["target_met"] = (
        largest["incremental_over_full"] <= 0.1 if "failed" not in largest else False
    )
    RESULTS.mkdir(exist_ok=True)
    name = "build-quick" if quick else "build"
    if explicit:
        name += "-" + "-".join(str(s) for s in sizes) + f"x{days}"
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def table(results: dict[str, Any]) -> str:
    """The results as a short text table."""
    lines = [
        f"build benchmark: {results['days']} days of history, 8 GPUs per cluster, "
        f"{results['cpus']} CPUs",
        f"{'clusters':>8} {'GPU rows':>11} {'generate s':>10} {'full s':>8} {'cpu s':>7} "
        f"{'full MB':>8} {'incr s':>7} {'cpu s':>6} {'incr MB':>8} {'incr/full':>9} "
        f"{'(cpu)':>6}",
    ]
    for size in results["sizes"]:
        if "failed" in size:
            error = size["failed"]["error"].strip().splitlines()[-1]
            lines.append(f"{size['clusters']:>8} failed at {size['failed']['step']}: {error}")
            continue
        lines.append(
            f"{size['clusters']:>8} {size['gpu_rows']:>11,} {size['generate']['seconds']:>10.1f} "
            f"{size['full_refresh']['seconds']:>8.1f} "
            f"{size['full_refresh']['cpu_seconds']:>7.1f} "
            f"{size['full_refresh']['maxrss_mb']:>8.0f} {size['incremental']['seconds']:>7.1f} "
            f"{size['incremental']['cpu_seconds']:>6.1f} "
            f"{size['incremental']['maxrss_mb']:>8.0f} {size['incremental_over_full']:>9.3f} "
            f"{size['incremental_over_full_cpu']:>6.3f}"
        )
    largest = results["sizes"][-1]
    for step in ("full_refresh", "incremental"):
        if step not in largest:
            continue
        slowest = ", ".join(f"{k} {v:.1f} s" for k, v in largest[step]["slowest_models"].items())
        lines.append(f"slowest models, {step} at {largest['clusters']} clusters: {slowest}")
    verdict = "met" if results["target_met"] else "MISSED"
    lines.append(f"target (incremental <= 0.1 x full refresh): {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: run the benchmark (or one child step) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 clusters x 60 days")
    parser.add_argument("--clusters", type=int, default=None)
    parser.add_argument("--days", type=int, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", help="fleet sizes instead of three")
    parser.add_argument("--verify", action="store_true", help="incremental == full refresh?")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="write the databases to DIR and keep them"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    if args.child:
        step, db, *rest = args.child
        if step == "generate":
            out = _child_generate(db, int(rest[0]), int(rest[1]))
        elif step == "append":
            out = _child_append(db, int(rest[0]), int(rest[1]))
        elif step == "compare":
            out = _child_compare(db, rest[0])
        else:
            out = _child_build(db, rest[0] == "full")
        print(json.dumps(out, default=str))
        return
    clusters = args.clusters or (30 if args.quick else 300)
    days = args.days or (60 if args.quick else 365)
    results = run_build_bench(
        clusters, days, args.quick, sizes=args.sizes, verify=args.verify, keep=args.keep
    )
    print(table(results))
    if any("failed" in size for size in results["sizes"]):
        raise SystemExit(1)  # measured up to the failing step, and recorded


if __name__ == "__main__":
    main()
