"""Ingest paths: one detail's per-GPU points turned into the store's rows, three ways.

    .venv/bin/python -m bench.ingest_paths [--clusters 300] [--gpus 8]

Issue 12 asks to measure DuckDB reading the bodies itself. The snapshot's wall time is about
its CPU time that holds the GIL (bench/README.md, "Reading the snapshot ratio"), so this
measures, for 7-day details with GPUS GPUs each (the simulator's bodies, made in this process
by `Simulator.handle`, no HTTP):

1. today's path, stage by stage, every stage holding the GIL: the parse with its nesting check
   (`process.parse_body`: orjson), `redact_document`, the raw body written again
   (`orjson.dumps`), `normalize_detail` and `validate_detail`;
2. DuckDB: `from_json` over the batch's bodies (one text column), unnested into one row per
   GPU per bucket, as Arrow; one DuckDB thread, so that its CPU compares with 1;
3. pyarrow: `pyarrow.json.read_json` of each body with an explicit schema (one thread), the
   points flattened with `pyarrow.compute`.

Each is reported in CPU ms per detail and by its speed-up when two threads share the work
(about 2 when it releases the GIL, about 1 when it holds it). The per-GPU rows of 2 and 3 are
checked equal to those of 1 (cluster, bucket, GPU, and the three values), so the three do the
same work on the points. Neither 2 nor 3 does the rest of a detail (the cluster, its cost and
projections: a few KB), its redaction or its contract checks: `today_without_points` is what
today's path spends on that rest (the same bodies with no points). Results:
`bench/results/ingest-paths.json`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
KEY = "bench-ingest-key"
QUERY = "include_metrics=true&include_cost_breakdown=true&metrics_window=7d"
GPU_VALUES = ("utilization", "memory_used_gb", "power_draw_w")

# The per-GPU rows of a batch of bodies, by DuckDB's JSON reader (one text column `body`).
_POINTS_STRUCTURE = json.dumps(
    {
        "data": {
            "id": "VARCHAR",
            "metrics": {
                "historical": {
                    "data_points": [
                        {
                            "timestamp": "VARCHAR",
                            "gpus": [{"gpu_id": "VARCHAR", **dict.fromkeys(GPU_VALUES, "DOUBLE")}],
                        }
                    ]
                }
            },
        }
    }
)
_DUCKDB_GPU_ROWS = f"""
with docs as (select from_json(body, '{_POINTS_STRUCTURE}') as doc from bodies),
points as (
    select doc.data.id as cluster_id, unnest(doc.data.metrics.historical.data_points) as point
    from docs
),
gpus as (
    select cluster_id, cast(point.timestamp as timestamptz) as bucket_at, unnest(point.gpus) as g
    from points
)
select cluster_id, bucket_at, g.gpu_id, g.utilization, g.memory_used_gb, g.power_draw_w
from gpus
"""


def _cpu() -> float:
    return time.process_time()


def _bodies(clusters: int, gpus: int) -> list[bytes]:
    from bench.snapshot import _fleet
    from pipeline.simulator.server import Simulator

    sim = Simulator(_fleet(clusters, gpus), api_key=KEY)
    out = []
    for i in range(clusters):
        target = f"/v1/clusters/cls_{i:05d}?{QUERY}"
        response = sim.handle("GET", target, {"authorization": f"Bearer {KEY}"})
        if response.status != 200:
            raise SystemExit(f"the simulator answered {response.status} for {target}")
        out.append(bytes(response.body))
    return out


def _without_points(body: bytes) -> bytes:
    import orjson

    doc = orjson.loads(body)
    doc["data"]["metrics"]["historical"]["data_points"] = []
    return bytes(orjson.dumps(doc))


def _per_detail(work: Callable[[Sequence[Any]], Any], items: Sequence[Any]) -> float:
    """CPU ms per item of `work(items)` (after one warm-up call on a few)."""
    work(items[:5])
    began = _cpu()
    work(items)
    return (_cpu() - began) / len(items) * 1e3


def _two_thread_speedup(work: Callable[[Sequence[Any]], Any], items: Sequence[Any]) -> float:
    """Wall time of `work` over all items in one thread, over that of two threads each doing
    half: about 2 when `work` releases the GIL (two cores), about 1 when it holds it (below 1
    when the two threads also fight over it). The median of three tries (a shared machine)."""
    halves = [items[: len(items) // 2], items[len(items) // 2 :]]
    tries = []
    for _ in range(3):
        began = time.perf_counter()
        work(items)
        alone = time.perf_counter() - began
        threads = [threading.Thread(target=work, args=(half,)) for half in halves]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        tries.append(alone / (time.perf_counter() - began))
    return round(sorted(tries)[1], 2)


def _today(bodies: list[bytes]) -> tuple[dict[str, Any], set[tuple[Any, ...]]]:
    from pipeline.normalize import normalize_detail
    from pipeline.process import fast_dumps, parse_body
    from pipeline.redact import redact_document
    from pipeline.validate import validate_detail

    docs: list[Any] = []
    redacted: list[Any] = []
    details: list[Any] = []

    def parse(items: Sequence[bytes]) -> None:
        docs[:] = [parse_body(b) for b in items]

    def redact(items: Sequence[Any]) -> None:
        redacted[:] = [redact_document(d) for d in items]

    def dumps(items: Sequence[Any]) -> None:
        for doc in items:
            fast_dumps(doc)

    def normalize(items: Sequence[Any]) -> None:
        details[:] = [normalize_detail(d, exact_money=True) for d in items]

    def validate(items: Sequence[Any]) -> None:
        for detail in items:
            validate_detail(detail)

    stages: dict[str, float] = {}
    # Each stage times the whole list; its warm-up on the first five is redone by the timed
    # call (redaction in place: a second pass over a redacted document changes nothing).
    stages["parse"] = _per_detail(parse, bodies)
    stages["redact"] = _per_detail(redact, docs)
    stages["dumps"] = _per_detail(dumps, redacted)
    stages["normalize"] = _per_detail(normalize, redacted)
    stages["validate"] = _per_detail(validate, details)
    rows = set()
    for detail in details:
        table = detail.table("gpu_metric_points")
        rows.update(
            zip(
                table["cluster_id"],
                table["bucket_at"],
                table["gpu_id"],
                *(table[name] for name in GPU_VALUES),
                strict=True,
            )
        )

    def whole(items: Sequence[bytes]) -> None:
        for body in items:
            doc = redact_document(parse_body(body))
            fast_dumps(doc)
            validate_detail(normalize_detail(doc, exact_money=True))

    return {
        "cpu_ms_per_detail": round(sum(stages.values()), 3),
        "stages_cpu_ms": {k: round(v, 3) for k, v in stages.items()},
        "two_thread_speedup": _two_thread_speedup(whole, bodies),
    }, rows


def _duckdb(bodies: list[bytes]) -> tuple[dict[str, Any], set[tuple[Any, ...]]]:
    import duckdb
    import pyarrow as pa

    table = pa.table({"body": pa.array([b.decode() for b in bodies], pa.string())})
    found: list[Any] = []

    def read(items: Any) -> None:
        if isinstance(items, _Rows):
            items = items.table
        con = duckdb.connect()
        con.execute("set threads = 1")
        con.execute("set timezone = 'UTC'")
        con.register("bodies", items)
        found[:] = [con.sql(_DUCKDB_GPU_ROWS).to_arrow_table()]
        con.close()

    per = _per_detail(read, _Rows(table))
    rows = set(zip(*(column.to_pylist() for column in found[0].columns), strict=True))
    return {
        "cpu_ms_per_detail": round(per, 3),
        "two_thread_speedup": _two_thread_speedup(read, _Rows(table)),
    }, rows


class _Rows(Sequence[Any]):
    """An Arrow table sliced like a list (for `_per_detail` and the two-thread split)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __getitem__(self, index: Any) -> Any:
        if not isinstance(index, slice):
            raise TypeError("slices only")
        start, stop, _ = index.indices(len(self))
        return self.table.slice(start, stop - start)


def _pyarrow(bodies: list[bytes]) -> tuple[dict[str, Any], set[tuple[Any, ...]]]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    # The schema the bodies share (read from all of them at once: inferred block by block it
    # can differ), with timestamps kept as text as the normalizer receives them.
    inferred = pj.read_json(
        io.BytesIO(b"\n".join(bodies)), read_options=pj.ReadOptions(block_size=1 << 28)
    ).schema

    def as_text(kind: Any) -> Any:
        if pa.types.is_timestamp(kind):
            return pa.string()
        if pa.types.is_struct(kind):
            return pa.struct([pa.field(f.name, as_text(f.type)) for f in kind])
        if pa.types.is_list(kind):
            return pa.list_(as_text(kind.value_type))
        return kind

    schema = pa.schema([pa.field(f.name, as_text(f.type)) for f in inferred])
    options = pj.ReadOptions(use_threads=False, block_size=1 << 22)
    parse = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    found: list[Any] = []

    def read(items: Sequence[bytes]) -> None:
        out = []
        for body in items:
            data = pj.read_json(io.BytesIO(body), read_options=options, parse_options=parse)
            doc = data.column("data").chunk(0)
            points = pc.list_flatten(doc.field("metrics").field("historical").field("data_points"))
            gpus = points.field("gpus")
            flat = pc.list_flatten(gpus)
            counts = pc.list_value_length(gpus).to_numpy(zero_copy_only=False)
            out.append(
                (
                    doc.field("id")[0].as_py(),
                    points.field("timestamp"),
                    counts,
                    [flat.field(name) for name in ("gpu_id", *GPU_VALUES)],
                )
            )
        found[:] = out

    per = _per_detail(read, bodies)
    rows = set()
    for cluster_id, stamps, counts, columns in found:
        buckets = [
            datetime.fromisoformat(s.replace("Z", "+00:00"))
            for s, n in zip(stamps.to_pylist(), counts, strict=True)
            for _ in range(int(n))
        ]
        values = [c.to_pylist() for c in columns]
        rows.update(zip([cluster_id] * len(buckets), buckets, *values, strict=True))
    return {
        "cpu_ms_per_detail": round(per, 3),
        "two_thread_speedup": _two_thread_speedup(read, bodies),
    }, rows


def run(clusters: int, gpus: int, out: Path) -> dict[str, Any]:
    """Measure the three paths; write and return the results."""
    bodies = _bodies(clusters, gpus)
    results: dict[str, Any] = {
        "benchmark": "ingest_paths",
        "clusters": clusters,
        "gpus": gpus,
        "body_kb": round(sum(map(len, bodies)) / len(bodies) / 1024, 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_before": os.getloadavg()[0],
    }
    today, truth = _today(bodies)
    results["today"] = today
    # What today's path spends on the rest of a detail: the same bodies without their points
    # (what would stay in Python if the points went to DuckDB or pyarrow).
    rest, _ = _today([_without_points(body) for body in bodies])
    results["today_without_points"] = {
        k: v for k, v in rest.items() if k in ("cpu_ms_per_detail", "stages_cpu_ms")
    }
    for name, measure in (("duckdb_from_json", _duckdb), ("pyarrow_json", _pyarrow)):
        figures, rows = measure(bodies)
        figures["gpu_rows"] = len(rows)
        figures["gpu_rows_equal_today"] = rows == truth
        results[name] = figures
    results["today"]["gpu_rows"] = len(truth)
    results["loadavg_after"] = os.getloadavg()[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=300)
    parser.add_argument("--gpus", type=int, default=8)
    args = parser.parse_args(argv)
    out = RESULTS / "ingest-paths.json"
    r = run(args.clusters, args.gpus, out)
    print(
        f"ingest paths: {r['clusters']} details x {r['gpus']} GPUs x 168 buckets "
        f"({r['body_kb']} KB each), load {r['loadavg_before']:.1f} -> {r['loadavg_after']:.1f}"
    )
    print(f"{'path':<20}{'CPU ms/detail':>14}{'2-thread speed-up':>19}{'GPU rows':>10}  equal")
    for name in ("today", "duckdb_from_json", "pyarrow_json"):
        f = r[name]
        equal = "(truth)" if name == "today" else ("yes" if f["gpu_rows_equal_today"] else "NO")
        print(
            f"{name:<20}{f['cpu_ms_per_detail']:>14.3f}{f['two_thread_speedup']:>19.2f}"
            f"{f['gpu_rows']:>10}  {equal}"
        )
    for name in ("today", "today_without_points"):
        stages = ", ".join(f"{k} {v:.3f}" for k, v in r[name]["stages_cpu_ms"].items())
        print(f"{name}, by stage (CPU ms/detail): {stages}")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
