"""`python -m bench [--quick]` (`make bench`, `make bench-quick`): every benchmark of issue 5.

Each item runs in its own subprocess (so its peak RSS is its own; the items' own measured steps
are subprocesses again), on the simulator, one after the other:

1. snapshot   1,000 clusters x 8 GPUs x 7 days, unlimited rate, beside the floor
              (bench/snapshot.py), three rounds (quick: one), the median round: target at
              most 1.5x the floor, peak RSS under 1 GiB
2. ratelimit  the same fleet behind R requests per second (bench/snapshot.py): wall time within
              10 % of N / R, at most a handful (5) of 429s
3. build      365 days of history for 1,000 clusters x 8 GPUs (bench/build.py): full refresh
              and the nightly incremental build; target incremental <= a tenth of the full
4. report     the report of 1,000 clusters x 30 days (bench/report.py): render time, HTML size
              (target at most 5 MB), focus.csv; `gpucost demo` time (target under a minute)
5. scaling    items 1 and 3 at three sizes: time and memory near-linear or better
6. redaction  `pipeline.redact` on 1 MB fields (quick: 0.25 MB) of plain text, adversarial
              strings and a big JSON body (bench/redaction.py): MB/s, target >= 2 MB/s on
              every shape (a 1 MB field in well under a second; issue 9)

Writes `bench/results/<item>.json` (`bench/results/quick/` with `--quick`) and `latest.md` there,
a short table (item, size, time, ratio/target, peak RSS, pass/miss) with the machine (CPU model,
cores, RAM, Python, DuckDB version, load average before), and prints the table.

    .venv/bin/python -m bench [--quick] [--only snapshot,report] [--sizes 100,300,1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
ITEMS = ("snapshot", "ratelimit", "build", "report", "scaling", "redaction")
SNAPSHOT_RATIO_TARGET = 1.5
RSS_TARGET_MB = 1024.0
RATE_TOLERANCE = 0.10
MAX_429 = 5
INCREMENTAL_TARGET = 0.10
LINEAR_SLACK = 1.25  # "near-linear": time per cluster may grow by a quarter across the sizes


@dataclass(frozen=True)
class Plan:
    """The sizes of one run of the benchmarks."""

    quick: bool
    clusters: int
    rate: float
    days: int
    sizes: tuple[int, ...]


def plan_for(quick: bool, sizes: tuple[int, ...] | None = None) -> Plan:
    """Full mode: 1,000 clusters, 365 days, scaling over 100/300/1,000; quick: a tenth or less.

    The scaling sizes stop at the main size (its run is reused): a 5,000-cluster snapshot alone
    would take the whole ten-minute budget of `make bench` on two cores.
    """
    if quick:
        return Plan(True, 100, 20.0, 30, sizes or (25, 50, 100))
    return Plan(False, 1000, 50.0, 365, sizes or (100, 300, 1000))


# ------------------------------------------------------------------------------ one item (child)


def _item_snapshot(clusters: int, plan: Plan) -> dict[str, Any]:
    import tempfile

    from bench import snapshot

    # bench/snapshot.py's own copy of the JSON goes to a scratch file: ours is the record
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "snapshot.json"
        if hasattr(snapshot, "run_snapshot_bench"):
            return dict(snapshot.run_snapshot_bench(clusters, plan.quick, out=scratch))
        return dict(snapshot.run(clusters, 8, 8, scratch))


def _item_ratelimit(clusters: int, plan: Plan) -> dict[str, Any]:
    import tempfile

    from bench import snapshot

    if not hasattr(snapshot, "run_ratelimit_bench"):
        return {"unavailable": "bench/snapshot.py has no run_ratelimit_bench yet"}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "ratelimit.json"
        # N / R must span several of the limit's windows, or one window's burst is the run:
        # the quick run's 101 requests at 20/s get 1-second windows
        window = 1.0 if plan.quick else 10.0
        return dict(
            snapshot.run_ratelimit_bench(clusters, plan.rate, window_seconds=window, out=scratch)
        )


def _item_build(clusters: int, plan: Plan) -> dict[str, Any]:
    try:
        from bench import build  # type: ignore[attr-defined]
    except ImportError:
        return {"unavailable": "bench/build.py is not there yet"}
    # bench/build.py measures its sizes itself (one history per size): the scaling sizes
    sizes = sorted({n for n in plan.sizes if n <= clusters} | {clusters})
    result: dict[str, Any] = build.run_build_bench(clusters, plan.days, plan.quick, sizes=sizes)
    return result


def _item_report(clusters: int, plan: Plan) -> dict[str, Any]:
    from bench.report import run_report_bench

    # full: a month of generated history (the report's period); quick: the simulator's mixed
    # fleet over two nights
    days = 0 if plan.quick else 30
    return run_report_bench(clusters, plan.quick, days=days, demo=not plan.quick)


def _item_redaction(clusters: int, plan: Plan) -> dict[str, Any]:
    from bench.redaction import run

    return run(0.25 if plan.quick else 1.0)


_RUNNERS: dict[str, Callable[[int, Plan], dict[str, Any]]] = {
    "snapshot": _item_snapshot,
    "ratelimit": _item_ratelimit,
    "build": _item_build,
    "report": _item_report,
    "redaction": _item_redaction,
}


# ------------------------------------------------------------------------------ parent


def machine() -> dict[str, Any]:
    """The machine the figures come from: CPU model, cores, RAM, Python, DuckDB, load."""
    import duckdb

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "os": f"{platform.system()} {platform.release()}",
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }


def _run_item(name: str, clusters: int, plan: Plan, out: Path) -> dict[str, Any]:
    """Run one item in a subprocess; its JSON, with the process's wall time and peak RSS."""
    args = [sys.executable, "-m", "bench", "--item", name, "--size", str(clusters)]
    args += ["--out", str(out)] + (["--quick"] if plan.quick else [])
    began = time.perf_counter()
    errors = out.with_suffix(".stderr")
    with errors.open("w", encoding="utf-8") as stderr:
        proc = subprocess.Popen(args, cwd=ROOT, stderr=stderr)
        # wait4, not wait: the rusage of this child (and what it waited for), not the sum of all
        _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - began
    text = errors.read_text(encoding="utf-8", errors="replace")
    errors.unlink()
    if proc.returncode != 0 or not out.exists():
        sys.stderr.write(text)
        lines = [line for line in text.splitlines() if line.strip()]
        # the last line naming an error says more than a trailing hint
        named = [line for line in lines if "Error" in line] or lines or [""]
        last = named[-1].strip().replace("|", "/")[:160]
        return {"error": f"exit {proc.returncode}: {last}", "wall_seconds": wall}
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    # the item's process and every process it waited for (Linux: kilobytes)
    result["process"] = {"wall_seconds": round(wall, 1), "maxrss_mb": usage.ru_maxrss / 1024}
    out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return result


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _first(data: dict[str, Any], *paths: tuple[str, ...]) -> Any:
    for path in paths:
        value = _dig(data, *path)
        if value is not None:
            return value
    return None


def _fmt_s(seconds: Any) -> str:
    return "–" if seconds is None else f"{float(seconds):.1f} s"


def _fmt_mb(mb: Any) -> str:
    return "–" if mb is None else f"{float(mb):.0f} MB"


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("pass" if ok else "MISS")


Row = tuple[str, str, str, str, str, str]


def _rows_snapshot(r: dict[str, Any], size: str) -> list[Row]:
    rows: list[Row] = []
    for night in (1, 2):
        pipe = _first(r, (f"pipeline_night{night}",), ("nights", str(night), "pipeline"))
        floor = _first(r, (f"floor_night{night}",), ("nights", str(night), "floor"))
        ratio = _first(r, (f"ratio_night{night}",))
        if pipe is None:
            continue
        if ratio is None and floor:
            ratio = pipe["seconds"] / floor["seconds"]
        rss = pipe.get("maxrss_mb")
        # Its worker process's own peak comes on top (absent before it was measured).
        worker = pipe.get("workers_maxrss_mb") or 0
        ok = (
            None
            if ratio is None
            else (ratio <= SNAPSHOT_RATIO_TARGET and (rss or 0) + worker < RSS_TARGET_MB)
        )
        # The pipeline's CPU against the simulator's in the floor run: what the ratio follows
        # (bench/README.md); absent from results recorded before it was measured.
        sim = (floor or {}).get("simulator_cpu_seconds")
        versus = f" (CPU {pipe['cpu_seconds'] / sim:.2f}x the simulator's)" if sim else ""
        rows.append(
            (
                f"1 snapshot, night {night}",
                size,
                f"{_fmt_s(pipe['seconds'])} (floor {_fmt_s(floor and floor['seconds'])})",
                f"{ratio:.2f}x floor / ≤ {SNAPSHOT_RATIO_TARGET}x{versus}" if ratio else "–",
                _fmt_mb(rss) + (f" + worker {worker:.0f} MB" if worker else ""),
                _verdict(ok),
            )
        )
    return rows


def _rows_ratelimit(r: dict[str, Any], size: str) -> list[Row]:
    if "unavailable" in r:
        return [("2 rate-limited snapshot", size, "–", r["unavailable"], "–", "–")]
    wall = _first(r, ("seconds",), ("wall_seconds",), ("pipeline", "seconds"))
    ideal = _first(r, ("ideal_seconds",), ("n_over_r",), ("expected_seconds",))
    count_429 = _first(r, ("count_429",), ("responses_429",), ("429s",), ("throttled",))
    rate = _first(r, ("rate_per_second",), ("rate",))
    rss = _first(r, ("maxrss_mb",), ("pipeline", "maxrss_mb"))
    ratio = wall / ideal if wall and ideal else None
    ok = None
    if ratio is not None:
        ok = abs(ratio - 1) <= RATE_TOLERANCE and (count_429 or 0) <= MAX_429
    return [
        (
            "2 rate-limited snapshot",
            f"{size} at {rate:g}/s" if rate else size,
            f"{_fmt_s(wall)} (N/R {_fmt_s(ideal)})",
            (f"{ratio:.2f}x N/R, {count_429} x 429 / ±10 %, ≤ {MAX_429}" if ratio else "–"),
            _fmt_mb(rss),
            _verdict(ok),
        )
    ]


def _rows_build(r: dict[str, Any], size: str) -> list[Row]:
    if "unavailable" in r:
        return [("3 build", size, "–", r["unavailable"], "–", "–")]
    if r.get("sizes") and isinstance(r["sizes"][-1], dict):
        r = r["sizes"][-1]  # the largest size is the item; the others are the scaling
        size = f"{r.get('clusters', size):,}"
    full = _first(r, ("full_refresh",), ("full",))
    incr = _first(r, ("incremental",), ("nightly",))
    days = _first(r, ("days",))
    label = f"{size} x {days} d" if days else size
    rows: list[Row] = []
    ratio = None
    if full and incr and full.get("seconds"):
        ratio = incr["seconds"] / full["seconds"]
    if full:
        rows.append(
            (
                "3 build, full refresh",
                label,
                _fmt_s(full.get("seconds")),
                "the reference (no target of its own)",
                _fmt_mb(full.get("maxrss_mb")),
                "–",
            )
        )
    if incr:
        rows.append(
            (
                "3 build, nightly incremental",
                label,
                _fmt_s(incr.get("seconds")),
                f"{ratio:.3f}x full / ≤ {INCREMENTAL_TARGET}x" if ratio is not None else "–",
                _fmt_mb(incr.get("maxrss_mb")),
                _verdict(None if ratio is None else ratio <= INCREMENTAL_TARGET),
            )
        )
    return rows


def _rows_report(r: dict[str, Any], size: str) -> list[Row]:
    render = r["render"]
    rows: list[Row] = [
        (
            "4 report render",
            f"{render['clusters']:,} clusters",
            f"{_fmt_s(render['first']['seconds'])} (warm {_fmt_s(render['second']['seconds'])})",
            f"HTML {render['html_bytes'] / 2**20:.2f} MB / ≤ 5 MB; focus.csv "
            f"{render['focus_bytes'] / 2**20:.0f} MB, {render['focus_rows']:,} rows",
            _fmt_mb(render["maxrss_mb"]),
            _verdict(r["html_ok"]),
        )
    ]
    if "demo" in r:
        rows.append(
            (
                "4 gpucost demo",
                "40 x 14 nights",
                _fmt_s(r["demo"]["seconds"]),
                "≤ 60 s",
                _fmt_mb(r["demo"]["maxrss_mb"]),
                _verdict(r["demo_ok"]),
            )
        )
    return rows


def _rows_redaction(r: dict[str, Any], size: str) -> list[Row]:
    slowest = r["slowest"]
    fastest = max(r["shapes"], key=lambda x: x["mb_per_s"])
    return [
        (
            "6 redaction",
            f"{r['megabytes']:g} MB per field, {len(r['shapes'])} shapes",
            f"slowest {slowest['seconds']:.3f} s ({slowest['shape']})",
            f"{slowest['mb_per_s']:.1f}-{fastest['mb_per_s']:.1f} MB/s"
            f" / ≥ {r['target_mb_per_s']:g} MB/s",
            _fmt_mb(_dig(r, "process", "maxrss_mb")),
            _verdict(r["ok"]),
        )
    ]


def _scaling_series(
    runs: dict[int, dict[str, Any]], seconds: Callable[[dict[str, Any]], Any]
) -> list[tuple[int, float]]:
    series = []
    for size, run in sorted(runs.items()):
        value = seconds(run)
        if value is not None:
            series.append((size, float(value)))
    return series


def _rows_scaling(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for kind, pick, rss_pick in (
        (
            "snapshot",
            lambda x: _first(x, ("pipeline_night2", "seconds"), ("pipeline_night1", "seconds")),
            lambda x: _first(x, ("pipeline_night2", "maxrss_mb"), ("pipeline_night1", "maxrss_mb")),
        ),
        (
            "build",
            lambda x: _first(x, ("full_refresh", "seconds"), ("full", "seconds")),
            lambda x: _first(x, ("full_refresh", "maxrss_mb"), ("full", "maxrss_mb")),
        ),
    ):
        runs = {int(k): v for k, v in (r.get(kind) or {}).items() if isinstance(v, dict)}
        series = _scaling_series(runs, pick)
        if len(series) < 2:
            rows.append((f"5 scaling, {kind}", "–", "–", "not measured", "–", "–"))
            continue
        (s0, t0), (s1, t1) = series[0], series[-1]
        growth = (t1 / s1) / (t0 / s0) if t0 > 0 else None
        rss = [rss_pick(runs[s]) for s, _t in series]
        ok = None if growth is None else growth <= LINEAR_SLACK
        if kind == "snapshot" and ok is not None:
            # issue 5: the snapshot's peak RSS under 1 GiB at every size, not only the largest
            ok = ok and all(m is not None and m < RSS_TARGET_MB for m in rss)
        rows.append(
            (
                f"5 scaling, {kind}",
                " / ".join(f"{s:,}" for s, _t in series),
                " / ".join(f"{t:.1f}" for _s, t in series) + " s",
                f"per cluster x{growth:.2f} / ≤ {LINEAR_SLACK}x" if growth else "–",
                " / ".join("–" if m is None else f"{m:.0f}" for m in rss) + " MB",
                _verdict(ok),
            )
        )
    return rows


def _sizes_measured(result: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    """The sizes an item's run already measured: its own, or each of its `sizes` list."""
    if not result or "error" in result or "unavailable" in result:
        return {}
    if isinstance(result.get("sizes"), list):
        return {
            int(one["clusters"]): one
            for one in result["sizes"]
            if isinstance(one, dict) and "clusters" in one
        }
    if "clusters" in result:
        return {int(result["clusters"]): result}
    return {}


def _table(rows: list[Row]) -> str:
    head: Row = ("item", "size", "time", "ratio / target", "peak RSS", "result")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _machine_line(m: dict[str, Any]) -> str:
    load = m["loadavg_before"]
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}, Python "
        f"{m['python']}, DuckDB {m['duckdb']}; load average before {load[0]} / {load[1]} / "
        f"{load[2]}"
    )


def run_all(plan: Plan, only: tuple[str, ...] = ITEMS) -> str:
    """Run the chosen items; write their JSON and latest.md; return the markdown."""
    folder = RESULTS / "quick" if plan.quick else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    info = machine()
    began = time.perf_counter()
    results: dict[str, Any] = {}
    size = f"{plan.clusters:,}"
    for name in ("snapshot", "ratelimit", "build", "report", "redaction"):
        if name in only or (name in ("snapshot", "build") and "scaling" in only):
            print(f"bench: {name} ({size} clusters) ...", flush=True)
            results[name] = _run_item(name, plan.clusters, plan, folder / f"{name}.json")
    if "scaling" in only:
        scaling: dict[str, Any] = {"sizes": list(plan.sizes), "snapshot": {}, "build": {}}
        for kind in ("snapshot", "build"):
            measured = _sizes_measured(results.get(kind))
            if kind == "build" and kind in results:
                # bench/build.py measured every size in the main run (or failed at one):
                # running it again per size would only repeat that
                scaling[kind] = {str(n): one for n, one in measured.items()}
                continue
            for n in plan.sizes:
                if n in measured:
                    scaling[kind][str(n)] = measured[n]  # measured by the main run
                    continue
                print(f"bench: scaling, {kind} at {n:,} clusters ...", flush=True)
                scaling[kind][str(n)] = _run_item(
                    kind, n, plan, folder / f"scaling-{kind}-{n}.json"
                )
        (folder / "scaling.json").write_text(
            json.dumps(scaling, indent=2, default=str) + "\n", encoding="utf-8"
        )
        results["scaling"] = scaling
    total = time.perf_counter() - began
    info["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    info["total_seconds"] = round(total, 1)
    info["at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["only"] = list(only)
    (folder / "machine.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return write_table(plan, results, info)


def write_table(plan: Plan, results: dict[str, Any], info: dict[str, Any]) -> str:
    """latest.md from the items' results and the machine: the table, written and returned."""
    folder = RESULTS / "quick" if plan.quick else RESULTS
    only = tuple(info.get("only") or ITEMS)
    size = f"{plan.clusters:,}"
    rows: list[Row] = []
    for name, summarize in (
        ("snapshot", _rows_snapshot),
        ("ratelimit", _rows_ratelimit),
        ("build", _rows_build),
        ("report", _rows_report),
        ("redaction", _rows_redaction),
    ):
        r = results.get(name)
        if r is None or (name in ("snapshot", "build") and name not in only):
            continue
        if "error" in r:
            label = f"{ITEMS.index(name) + 1} {name}"
            rows.append((label, size, "–", f"failed: {r['error']}", "–", "MISS"))
            continue
        rows.extend(summarize(r, size))
    if "scaling" in results:
        rows.extend(_rows_scaling(results["scaling"]))
    mode = "quick" if plan.quick else "full"
    flag = " --quick" if plan.quick else ""
    md = "\n".join(
        [
            f"# Benchmarks ({mode} mode), {info['at']}",
            "",
            f"Machine: {_machine_line(info)}; after {info['loadavg_after'][0]}.",
            f"All items: {info['total_seconds'] / 60:.1f} min (`python -m bench{flag}`).",
            "",
            _table(rows),
            "",
        ]
    )
    (folder / "latest.md").write_text(md, encoding="utf-8")
    return md


def rewrite_table(plan: Plan) -> str:
    """latest.md again from the JSON of the last run (after a change to the table's code)."""
    folder = RESULTS / "quick" if plan.quick else RESULTS
    info = json.loads((folder / "machine.json").read_text(encoding="utf-8"))
    info.setdefault("at", "(time not recorded)")
    results = {
        name: json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        for name in ITEMS
        if (folder / f"{name}.json").exists()
    }
    return write_table(plan, results, info)


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (about a tenth)")
    parser.add_argument("--only", default=",".join(ITEMS), help="comma-separated items")
    parser.add_argument("--sizes", default=None, help="scaling sizes, e.g. 100,300,1000")
    parser.add_argument(
        "--table", action="store_true", help="only rewrite latest.md from the last run's JSON"
    )
    parser.add_argument("--item", choices=sorted(_RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else None
    plan = plan_for(args.quick, sizes)
    if args.item:
        result = _RUNNERS[args.item](args.size or plan.clusters, plan)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        return
    if args.table:
        print(rewrite_table(plan))
        return
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(only) - set(ITEMS)
    if unknown:
        parser.error(f"unknown items {sorted(unknown)}; choose from {', '.join(ITEMS)}")
    print(run_all(plan, only))


if __name__ == "__main__":
    main()
