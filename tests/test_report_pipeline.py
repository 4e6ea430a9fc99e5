"""The report over the real pipeline: simulator over HTTP -> snapshot -> build -> report.

The FOCUS export computes bucket costs from the snapshot tables on its own (pipeline/focus.py);
the marts compute them in SQL (sql/intermediate/buckets.sql). Here the two meet on a simulated
fleet with stops, resizes, price changes, errors and several currencies: every day's FOCUS total
must equal marts.fleet_daily to the cent, and the GPU-hours must equal the marts' GPU-hours.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.config import Config, ReportSettings, StoreSettings
from pipeline.demo import run_demo
from pipeline.simulator.fleet import CANARY

D = Decimal


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pipeline")
    config = Config(
        store=StoreSettings(db=str(tmp / "demo.duckdb")),
        report=ReportSettings(out_dir=str(tmp / "out")),
    )
    result = run_demo(config, nights=2, clusters=12, seed=7)
    return Path(result.index_html).parent


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_focus_export_adds_up_to_fleet_daily_to_the_cent(demo):
    focus: dict[tuple[str, str], Decimal] = defaultdict(D)
    for row in _rows(demo / "focus.csv"):
        key = (row["ChargePeriodStart"][:10], row["BillingCurrency"])
        focus[key] += D(row["BilledCost"])
        assert row["BilledCost"] == row["EffectiveCost"] == row["ListCost"]
    marts = {(r["day"], r["currency"]): D(r["cost"]) for r in _rows(demo / "fleet_daily.csv")}
    assert len(marts) >= 7 and {c for _d, c in marts} >= {"USD"}
    # days with no cost at all may have no FOCUS row
    assert set(focus) <= set(marts)
    for key, cost in marts.items():
        assert abs(focus.get(key, D(0)) - cost) < D("0.01"), (key, focus.get(key), cost)


def test_focus_gpu_hours_equal_the_marts_gpu_hours(demo):
    gpu: dict[tuple[str, str], Decimal] = defaultdict(D)
    for row in _rows(demo / "focus.csv"):
        if row["x_CostComponent"] == "gpu" and row["ConsumedQuantity"]:
            gpu[(row["ResourceId"], row["ChargePeriodStart"][:10])] += D(row["ConsumedQuantity"])
    idle = _rows(demo / "idle_waste_daily.csv")
    assert idle
    for row in idle:
        key = (row["cluster_id"], row["day"])
        assert gpu.get(key, D(0)) == D(row["gpu_hours"]), key


def test_report_notes_no_disagreement_and_leaks_no_secret(demo):
    html = (demo / "index.html").read_text(encoding="utf-8")
    assert "does not add up" not in html
    for path in demo.iterdir():
        assert CANARY not in path.read_text(encoding="utf-8"), path.name
