"""The idle models on real GPU utilization: Alibaba's GenTD26 trace (143 inference pods, a
sample every ~57 s for ~22.8 h), read from the shared data folder beside the project (never
copied into the repo).

Each pod becomes a one-GPU cluster; its samples become hourly buckets holding the mean of the
hour's samples (utilization in %, memory in bytes / 1e9 = GB). The expected numbers come from a
separate computation in pure Python (csv module, dicts) over the same files, not from polars or
SQL.
"""

from __future__ import annotations

import csv
import io
import tarfile
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from tests.models_fixtures import FixtureDB
from tests.shared import real_data_dir

DATA = real_data_dir("alibaba-genai-2026") or Path("/nonexistent/alibaba-genai-2026")
UTIL_ARCHIVE = DATA / "pod_gpu_duty_cycle_anon.tar.gz"
MEMORY_ARCHIVE = DATA / "pod_gpu_memory_used_bytes_anon.tar.gz"
# One GPU at 2.00 per hour, plus cpu 0.30, storage 0.10, network 0.10: 2.50 per hour.
COMPONENTS = {
    "gpu": Decimal("2.00"),
    "cpu": Decimal("0.30"),
    "storage": Decimal("0.10"),
    "network": Decimal("0.10"),
}
RATE = sum(COMPONENTS.values(), Decimal(0))
IDLE_PCT = 5.0
HELD_GB = 1.0

pytestmark = pytest.mark.skipif(not UTIL_ARCHIVE.exists(), reason="real data not present")


def _csv_bytes(archive: Path) -> bytes:
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".csv"))
        handle = tar.extractfile(member)
        assert handle is not None
        return handle.read()


def _load_with_polars(db: FixtureDB, util_csv: bytes, memory_csv: bytes) -> int:
    """The test's loader: hourly means per pod with polars, written as snapshots and buckets."""

    def hourly(raw: bytes, name: str) -> pl.DataFrame:
        return (
            pl.read_csv(raw)
            .with_columns((pl.col("timestamp_anon") // 3600 * 3600).cast(pl.Int64).alias("hour"))
            .group_by("container_ip", "hour")
            .agg(pl.col("value").mean().alias(name))
        )

    buckets = hourly(util_csv, "util").join(
        hourly(memory_csv, "memory_bytes"), on=["container_ip", "hour"], how="left"
    )
    for (pod,), rows in buckets.sort("hour").group_by(["container_ip"], maintain_order=True):
        last = rows["hour"].max()
        snapshot_at = datetime.fromtimestamp(last + 3600, UTC)
        db.snapshot(
            pod,
            snapshot_at,
            gpu_count=1,
            components=dict(COMPONENTS),
            created_at=snapshot_at - timedelta(days=2),
        )
        for hour, util, memory in rows.select("hour", "util", "memory_bytes").iter_rows():
            memory_gb = memory / 1e9 if memory is not None else None
            db.bucket(
                pod,
                datetime.fromtimestamp(hour, UTC),
                gpus=[(util, memory_gb)],
                cost=RATE,
                snapshot_at=snapshot_at,
            )
    return buckets.height


def _expected_in_pure_python(util_csv: bytes, memory_csv: bytes) -> dict[str, dict]:
    """Per pod: hours, idle hours, memory-held idle hours, unused share, from the raw rows."""
    util_sum: dict[tuple[str, int], float] = defaultdict(float)
    util_n: dict[tuple[str, int], int] = defaultdict(int)
    for row in csv.DictReader(io.StringIO(util_csv.decode())):
        key = (row["container_ip"], int(float(row["timestamp_anon"])) // 3600)
        util_sum[key] += float(row["value"])
        util_n[key] += 1
    mem_sum: dict[tuple[str, int], float] = defaultdict(float)
    mem_n: dict[tuple[str, int], int] = defaultdict(int)
    for row in csv.DictReader(io.StringIO(memory_csv.decode())):
        key = (row["container_ip"], int(float(row["timestamp_anon"])) // 3600)
        mem_sum[key] += float(row["value"])
        mem_n[key] += 1
    out: dict[str, dict] = defaultdict(lambda: {"hours": 0, "idle": 0, "held": 0, "unused": 0.0})
    for key, total in util_sum.items():
        mean = total / util_n[key]
        pod = out[key[0]]
        pod["hours"] += 1
        pod["unused"] += 1 - mean / 100
        if mean < IDLE_PCT:
            pod["idle"] += 1
            if mem_n.get(key) and mem_sum[key] / mem_n[key] / 1e9 >= HELD_GB:
                pod["held"] += 1
    return dict(out)


@pytest.fixture(scope="module")
def built():
    util_csv, memory_csv = _csv_bytes(UTIL_ARCHIVE), _csv_bytes(MEMORY_ARCHIVE)
    db = FixtureDB()
    _load_with_polars(db, util_csv, memory_csv)
    db.build()
    return db, _expected_in_pure_python(util_csv, memory_csv)


def _per_pod(db: FixtureDB) -> dict[str, dict]:
    rows = db.rows(
        "select cluster_id, sum(gpu_hours) as hours, sum(idle_gpu_hours) as idle, "
        "sum(memory_held_idle_gpu_hours) as held, sum(idle_cost) as idle_cost, "
        "sum(unused_capacity_cost) as unused_cost from marts.idle_waste_daily group by 1"
    )
    return {r["cluster_id"]: r for r in rows}


def test_idle_and_memory_held_hours_of_every_pod_match_an_independent_count(built):
    db, expected = built
    mine = _per_pod(db)
    assert len(expected) == 143 and set(mine) == set(expected)
    for pod, e in expected.items():
        assert mine[pod]["hours"] == e["hours"], pod
        assert mine[pod]["idle"] == e["idle"], pod
        assert mine[pod]["held"] == e["held"], pod
    total_hours = sum(e["hours"] for e in expected.values())
    idle_hours = sum(e["idle"] for e in expected.values())
    held_hours = sum(e["held"] for e in expected.values())
    # the trace's "allocated but idle" pattern: many idle hours, most of them holding memory
    assert idle_hours > total_hours * 0.2
    assert held_hours > idle_hours * 0.5


def test_idle_and_unused_cost_of_every_pod_follow_from_the_gpu_price(built):
    db, expected = built
    mine = _per_pod(db)
    for pod, e in expected.items():
        # GPU price: bucket cost 2.50 x gpu share 2.00/2.50 / 1 GPU = 2.00 per GPU-hour
        assert mine[pod]["idle_cost"] == e["idle"] * Decimal("2.00"), pod
        assert float(mine[pod]["unused_cost"]) == pytest.approx(e["unused"] * 2.0, abs=1e-4)


def test_real_pods_idle_all_day_are_told_to_stop(built):
    db, expected = built
    # stop_idle: idle in >= 95 % of >= 24 billed hours; a pod has one GPU, so no downsize
    should_stop = {
        pod
        for pod, e in expected.items()
        if e["hours"] >= 24 and e["idle"] * 100 >= 95 * e["hours"]
    }
    recs = db.rows("select cluster_id, kind, reason from marts.recommendations")
    assert {r["cluster_id"] for r in recs if r["kind"] == "stop_idle"} == should_stop
    assert not [r for r in recs if r["kind"] == "downsize"]
    for r in recs:
        if r["kind"] == "stop_idle":
            e = expected[r["cluster_id"]]
            assert f"in {e['idle']} of {e['hours']} billed hours" in r["reason"]
