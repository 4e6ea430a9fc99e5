"""How to keep each per-GPU bucket once: the measurement behind the store's key strategy.

    .venv/bin/python -m bench.store_keys [--quick] [--clusters 300] [--nights 3]

Loads NIGHTS overlapping 7-day windows (168 hourly buckets x 8 GPUs per cluster, each night
shifted by 24 h, so 6 of 7 days are replaced) into `gpu_metric_points`-shaped tables, in
batches of 50 clusters through Arrow, with three strategies:

- `delete_insert` (what pipeline/store.py does): no PRIMARY KEY; per batch, delete the batch's
  (cluster_id, bucket_at) keys, then insert. Replaces a bucket's GPUs as a set.
- `pk_delete_insert`: the same with PRIMARY KEY (cluster_id, bucket_at, gpu_id).
- `pk_insert_or_replace`: PRIMARY KEY and `INSERT OR REPLACE` (cannot drop the GPUs a resize
  removed, so it would also need the delete).

Reports seconds per night and the file size; results to bench/results/store_keys.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

RESULTS = Path(__file__).resolve().parent / "results"
STRATEGIES = ("delete_insert", "pk_delete_insert", "pk_insert_or_replace")
_TS = pa.timestamp("us", tz="UTC")


def _batch(first: int, last: int, snapshot: datetime, night: int) -> pa.Table:
    cols: dict[str, list[Any]] = {
        "cluster_id": [],
        "bucket_at": [],
        "gpu_id": [],
        "snapshot_at": [],
        "utilization": [],
    }
    for c in range(first, last):
        for h in range(168):
            bucket = snapshot - timedelta(hours=168 - h)
            for g in range(8):
                cols["cluster_id"].append(f"cls_{c:05d}")
                cols["bucket_at"].append(bucket)
                cols["gpu_id"].append(str(g))
                cols["snapshot_at"].append(snapshot)
                cols["utilization"].append(float((h + g + night) % 100))
    return pa.table(
        {
            "cluster_id": pa.array(cols["cluster_id"], pa.string()),
            "bucket_at": pa.array(cols["bucket_at"], _TS),
            "gpu_id": pa.array(cols["gpu_id"], pa.string()),
            "snapshot_at": pa.array(cols["snapshot_at"], _TS),
            "utilization": pa.array(cols["utilization"], pa.float64()),
        }
    )


def measure(strategy: str, clusters: int, nights: int, folder: Path) -> dict[str, Any]:
    """Load `nights` nights with `strategy`; seconds per night, rows and file size."""
    path = folder / f"{strategy}.duckdb"
    con = duckdb.connect(str(path))
    key = ", primary key (cluster_id, bucket_at, gpu_id)" if strategy.startswith("pk_") else ""
    con.execute(
        "create table g (cluster_id varchar not null, bucket_at timestamptz not null,"
        f" gpu_id varchar not null, snapshot_at timestamptz not null, utilization double{key})"
    )
    start = datetime(2026, 11, 20, 3, tzinfo=UTC)
    seconds = []
    for night in range(nights):
        snapshot = start + timedelta(days=night)
        batches = [
            _batch(first, min(first + 50, clusters), snapshot, night)
            for first in range(0, clusters, 50)
        ]
        began = time.perf_counter()
        for table in batches:
            con.register("_in", table)
            con.begin()
            if strategy == "pk_insert_or_replace":
                con.execute("insert or replace into g select * from _in")
            else:
                oldest = snapshot - timedelta(hours=168)
                con.execute(
                    "delete from g using (select distinct cluster_id, bucket_at from _in) k"
                    " where g.bucket_at >= ? and g.cluster_id = k.cluster_id"
                    " and g.bucket_at = k.bucket_at",
                    [oldest],
                )
                con.execute("insert into g select * from _in")
            con.commit()
            con.unregister("_in")
        seconds.append(round(time.perf_counter() - began, 3))
    rows = con.execute("select count(*) from g").fetchall()[0][0]
    con.execute("checkpoint")
    con.close()
    return {
        "seconds_per_night": seconds,
        "rows": rows,
        "file_mb": round(os.path.getsize(path) / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 clusters, 2 nights")
    parser.add_argument("--clusters", type=int, default=None)
    parser.add_argument("--nights", type=int, default=None)
    args = parser.parse_args(argv)
    clusters = args.clusters or (100 if args.quick else 300)
    nights = args.nights or (2 if args.quick else 3)
    results: dict[str, Any] = {
        "benchmark": "store_keys",
        "clusters": clusters,
        "gpus": 8,
        "nights": nights,
        "loadavg_before": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in STRATEGIES:
            results[strategy] = measure(strategy, clusters, nights, Path(tmp))
    results["loadavg_after"] = os.getloadavg()[0]
    name = "store_keys-quick.json" if args.quick else "store_keys.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(
        f"key strategies: {clusters} clusters x 8 GPUs x 168 buckets, {nights} nights "
        f"(load {results['loadavg_before']:.1f} -> {results['loadavg_after']:.1f})"
    )
    print(f"{'strategy':<24}{'s/night (after the 1st)':>26}{'rows':>10}{'file MB':>9}")
    for strategy in STRATEGIES:
        r = results[strategy]
        later = r["seconds_per_night"][1:] or r["seconds_per_night"]
        print(f"{strategy:<24}{sum(later) / len(later):>26.2f}{r['rows']:>10}{r['file_mb']:>9.1f}")
    print(f"results: {RESULTS / name}")


if __name__ == "__main__":
    main()
