"""The FOCUS 1.2 export against the specification's column constraints and the marts.

The constraints come from the FinOps FOCUS 1.2 column pages, extracted to
/work/shared/focus/focus-1.2-columns.json (env GPUCOST_FOCUS_SPEC to point elsewhere; a copy is
embedded at the end of this file for a clean clone, and checked equal to the JSON): every
Mandatory column present, types, nullability, allowed values, date/time, numeric, currency, unit
and JSON formats. The numbers are the hand-computed fixture's (tests/report_fixtures.py).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipeline.focus import FOCUS_COLUMNS, build_focus, reconcile
from pipeline.report import write_csv
from tests.report_fixtures import (
    FLEET_DAILY,
    HOSTILE_FORMULA,
    IDLE_WASTE_DAILY,
    build_snapshot_marts,
    create_fixture_db,
)

D = Decimal
SPEC_PATH = Path(os.environ.get("GPUCOST_FOCUS_SPEC", "/work/shared/focus/focus-1.2-columns.json"))
# The Conditional columns this data can fill (the brief's list): they must be present.
CONDITIONAL_FILLED = {
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "RegionId",
    "RegionName",
    "SubAccountId",
    "SubAccountName",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ListUnitPrice",
    "PricingCategory",
    "SkuId",
    "Tags",
}
DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
NUMBER = re.compile(r"-?\d+(\.\d+)?([eE]-?\d+)?")
CURRENCY = re.compile(r"[A-Z]{3}")
UNIT = re.compile(r"[A-Za-z]+(-[A-Za-z]+)*")
ISO_4217_SEEN = {"USD", "EUR"}


def _spec_tuple(column: dict) -> tuple:
    return (
        column["column"],
        column["feature_level"],
        column["allows_nulls"],
        column["data_type"],
        column["value_format"],
        tuple(column.get("allowed_values", ())),
        column.get("number_range", ""),
    )


@pytest.fixture(scope="module")
def spec() -> dict[str, dict]:
    """The FOCUS 1.2 columns: the shared JSON when present, else the embedded copy of it."""
    if SPEC_PATH.is_file():
        data = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
        assert data["focus_version"] == "1.2"
        rows = [_spec_tuple(c) for c in data["columns"]]
    else:
        rows = list(EMBEDDED_SPEC)
    keys = (
        "column",
        "feature_level",
        "allows_nulls",
        "data_type",
        "value_format",
        "allowed_values",
        "number_range",
    )
    return {row[0]: dict(zip(keys, row, strict=True)) for row in rows}


def test_embedded_spec_is_the_shared_json():
    if not SPEC_PATH.is_file():
        pytest.skip(f"{SPEC_PATH} is not on this machine; the embedded copy is used")
    data = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    assert [_spec_tuple(c) for c in data["columns"]] == EMBEDDED_SPEC


@pytest.fixture(scope="module")
def focus_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("focus")
    db = create_fixture_db(tmp / "gpucost.duckdb")
    con, _rows = _focus(db)
    # written by the report's own CSV writer: the file exactly as users get it
    path = write_csv(build_focus(con), tmp / "focus.csv")
    con.close()
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _focus(db: Path) -> tuple[duckdb.DuckDBPyConnection, list[dict]]:
    # the marts from the snapshots as a build after the test's changes would make them
    writer = duckdb.connect(str(db))
    build_snapshot_marts(writer)
    writer.close()
    con = duckdb.connect(str(db), read_only=True)
    con.execute("set TimeZone = 'UTC'")
    return con, build_focus(con).to_dicts()


def test_every_mandatory_and_recommended_column_is_present(spec, focus_rows):
    header = list(focus_rows[0])
    assert header == list(FOCUS_COLUMNS)
    for name, column in spec.items():
        if column["feature_level"] in ("Mandatory", "Recommended"):
            assert name in header, f"{column['feature_level']} column {name} missing"
    assert set(header) >= CONDITIONAL_FILLED


def test_every_column_is_a_focus_column_or_prefixed_x(spec, focus_rows):
    for name in focus_rows[0]:
        assert name in spec or name.startswith("x_"), name


def test_values_satisfy_each_columns_type_nullability_and_format(spec, focus_rows):
    for i, row in enumerate(focus_rows):
        for name, value in row.items():
            if name.startswith("x_"):
                continue
            column = spec[name]
            where = f"row {i} {name}={value!r}"
            if value == "":
                assert column["allows_nulls"] == "True", f"null not allowed: {where}"
                continue
            assert value.strip() == value and value.upper() not in ("NULL", "N/A", "NAN"), where
            fmt = column["value_format"].lower()
            if column["data_type"] == "Decimal":
                assert NUMBER.fullmatch(value), where
                if "non-negative" in column.get("number_range", ""):
                    assert D(value) >= 0, where
            elif column["data_type"] == "Date/Time":
                assert DATETIME.fullmatch(value), where
            elif column["data_type"] == "JSON":
                assert isinstance(json.loads(value), dict), where
            if fmt.startswith("allowed values"):
                assert value in column["allowed_values"], where
            elif fmt == "currency format":
                assert CURRENCY.fullmatch(value) and value in ISO_4217_SEEN, where
            elif fmt.startswith("unit format"):
                assert UNIT.fullmatch(value), where


def test_charge_periods_are_utc_days_inside_their_billing_month(focus_rows):
    for row in focus_rows:
        start = datetime.fromisoformat(row["ChargePeriodStart"])
        end = datetime.fromisoformat(row["ChargePeriodEnd"])
        assert end - start == timedelta(days=1) and start.hour == 0
        assert datetime.fromisoformat(row["BillingPeriodStart"]) <= start
        assert end <= datetime.fromisoformat(row["BillingPeriodEnd"])
        assert row["BillingPeriodStart"].endswith("-01T00:00:00Z")


def test_cost_columns_sum_to_fleet_daily_to_the_cent(focus_rows):
    totals: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(lambda: defaultdict(D))
    for row in focus_rows:
        key = (row["ChargePeriodStart"][:10], row["BillingCurrency"])
        for column in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"):
            totals[key][column] += D(row[column])
    expected = {(str(day), currency): cost for day, currency, cost, *_ in FLEET_DAILY}
    assert set(totals) == set(expected)
    for key, cost in expected.items():
        for column, total in totals[key].items():
            assert abs(total - cost) < D("0.01"), (key, column, total, cost)
            assert total == cost  # exact, in fact: remainders go to the largest part


def test_gpu_consumed_quantity_equals_the_marts_gpu_hours(focus_rows):
    gpu = {
        (r["ResourceId"], r["ChargePeriodStart"][:10]): D(r["ConsumedQuantity"])
        for r in focus_rows
        if r["x_CostComponent"] == "gpu"
    }
    for cluster_id, day, _cur, gpu_hours, *_ in IDLE_WASTE_DAILY:
        if gpu_hours:
            assert gpu[(cluster_id, str(day))] == D(str(gpu_hours)), (cluster_id, day)
        else:
            assert (cluster_id, str(day)) not in gpu  # stopped: no GPU charge at all
    units = {r["ConsumedUnit"] for r in focus_rows if r["x_CostComponent"] == "gpu"}
    assert units == {"GPU-Hours"}


def test_components_are_hand_computed(focus_rows):
    by = {
        (r["ResourceId"], r["ChargePeriodStart"][:10], r["x_CostComponent"]): r for r in focus_rows
    }
    # cls_a: gpu 6.00/h x 24 = 144.00 for 48 GPU-hours at 3.00; storage 0.10 x 24 = 2.40
    gpu = by[("cls_a", "2026-11-18", "gpu")]
    assert (D(gpu["BilledCost"]), D(gpu["ConsumedQuantity"]), D(gpu["ListUnitPrice"])) == (
        D("144"),
        D("48"),
        D("3"),
    )
    assert D(by[("cls_a", "2026-11-18", "storage")]["BilledCost"]) == D("2.40")
    # the network component bills 0.00: no row
    assert ("cls_a", "2026-11-18", "network") not in by
    # cls_c stopped on 11-19: storage alone, 0.20 x 24 = 4.80, priced per hour
    stopped = [k for k in by if k[0] == "cls_c" and k[1] == "2026-11-19"]
    assert stopped == [("cls_c", "2026-11-19", "storage")]
    row = by[("cls_c", "2026-11-19", "storage")]
    assert (D(row["BilledCost"]), row["PricingUnit"], D(row["PricingQuantity"])) == (
        D("4.80"),
        "Hours",
        D("24"),
    )
    assert row["BillingCurrency"] == "EUR"


def test_list_unit_price_times_quantity_is_list_cost(focus_rows):
    for r in focus_rows:
        if r["ListUnitPrice"]:
            product = D(r["ListUnitPrice"]) * D(r["PricingQuantity"])
            assert abs(product - D(r["ListCost"])) < D("0.01"), r


def test_dimensions_describe_the_cluster(focus_rows):
    row = next(r for r in focus_rows if r["ResourceId"] == "cls_a")
    assert row["ResourceName"] == "train-a"
    assert (row["RegionId"], row["AvailabilityZone"]) == ("us-west-2", "us-west-2a")
    assert (row["SubAccountId"], row["SubAccountName"]) == ("proj_ml", "ML Research")
    assert row["SkuId"] == "H100" and row["PricingCategory"] == "Standard"
    assert json.loads(row["Tags"])["template_name"] == "PyTorch 2.5"
    hostile = next(r for r in focus_rows if r["ResourceId"] == "cls_c")
    assert hostile["ResourceName"] == "'" + HOSTILE_FORMULA


def test_buckets_without_cost_are_priced_by_the_nearest_snapshot(tmp_path):
    db = create_fixture_db(tmp_path / "gpucost.duckdb")
    con = duckdb.connect(str(db))
    # cls_b running on 11-18 and cls_c stopped on 11-19 lose their bucket costs
    con.execute(
        "update snap.metric_points set cost = null where"
        " (cluster_id = 'cls_b' and bucket_at < '2026-11-19')"
        " or (cluster_id = 'cls_c' and bucket_at >= '2026-11-19')"
    )
    con.close()
    con, rows = _focus(db)
    day_cost: dict[tuple[str, str], Decimal] = defaultdict(D)
    for r in rows:
        day_cost[(r["ResourceId"], r["ChargePeriodStart"][:10])] += r["BilledCost"]
    assert day_cost[("cls_b", "2026-11-18")] == D("54.00")  # 2.25/h x 24 from the snapshot
    assert day_cost[("cls_c", "2026-11-19")] == D("4.80")  # stopped: storage 0.20/h x 24
    assert reconcile(con) == []


def test_nearest_snapshot_rule_ties_go_later_and_billed_buckets_prefer_billing_snapshots(
    tmp_path,
):
    """Three snapshots of one cluster, buckets without cost, every rate distinct:

    06:00 runs at 1.00/h (GPU 0.80), 12:00 is stopped (storage 0.10/h only, bills no GPUs),
    18:00 runs at 3.00/h (GPU 2.40). Buckets are 1 h; a bucket's midpoint is bucket_at + 30 min.
    - 08:30 running: midpoint 09:00 is 3 h from 06:00 and 12:00; 12:00 bills no GPUs, so the
      nearest billing snapshot prices it: 06:00, 1.00.
    - 11:30 running: midpoint 12:00 (the stopped snapshot) -> nearest billing: 06:00 (6 h) vs
      18:00 (6 h), a tie -> the later, 18:00: 3.00.
    - 08:30 stopped (next day, same layout shifted by 24 h): a stopped bucket takes the
      nearest snapshot at all: 06:00 and 12:00 tie at 3 h -> the later, 12:00: storage 0.10.
    - 20:30 running: after the last snapshot -> 18:00: 3.00.
    Day 1: 1.00 + 3.00 + 3.00 = 7.00; day 2: 0.10.
    """
    db = create_fixture_db(tmp_path / "gpucost.duckdb")
    con = duckdb.connect(str(db))
    cid = "cls_rule"
    snaps = [
        ("2026-11-18 06:00", "running", "1.00", (("gpu", "0.80"), ("cpu", "0.20"))),
        ("2026-11-18 12:00", "stopped", "0.10", (("storage", "0.10"),)),
        ("2026-11-18 18:00", "running", "3.00", (("gpu", "2.40"), ("cpu", "0.60"))),
        ("2026-11-19 06:00", "running", "1.00", (("gpu", "0.80"), ("cpu", "0.20"))),
        ("2026-11-19 12:00", "stopped", "0.10", (("storage", "0.10"),)),
    ]
    for at, status, rate, parts in snaps:
        con.execute(
            "insert into snap.cluster_snapshots (run_id, cluster_id, snapshot_at, name,"
            " status, gpu_type, gpu_count, currency, hourly_rate, has_metrics,"
            " has_gpu_series, has_cost_breakdown)"
            " values ('r', ?, ?, 'rule', ?, 'H100', 1, 'USD', ?, true, false, true)",
            [cid, f"{at}+00", status, D(rate)],
        )
        for component, per_hour in parts:
            con.execute(
                "insert into snap.cost_components values ('r', ?, ?, ?, ?, 'USD')",
                [cid, f"{at}+00", component, D(per_hour)],
            )
    for at, status in (
        ("2026-11-18 08:30", "running"),
        ("2026-11-18 11:30", "running"),
        ("2026-11-18 20:30", "running"),
        ("2026-11-19 08:30", "stopped"),
    ):
        con.execute(
            "insert into snap.metric_points (run_id, cluster_id, bucket_at, interval_seconds,"
            " snapshot_at, status, cost, currency, gpu_series_count)"
            " values ('r', ?, ?, 3600, ?, ?, null, 'USD', 1)",
            [cid, f"{at}+00", f"{at}+00", status],
        )
    con.close()
    _con, rows = _focus(db)
    day_cost: dict[str, Decimal] = defaultdict(D)
    for r in rows:
        if r["ResourceId"] == cid:
            day_cost[r["ChargePeriodStart"][:10]] += r["BilledCost"]
    assert dict(day_cost) == {"2026-11-18": D("7.00"), "2026-11-19": D("0.10")}


def test_rounding_remainders_keep_each_cluster_day_exact(tmp_path):
    db = create_fixture_db(tmp_path / "gpucost.duckdb")
    con = duckdb.connect(str(db))
    # cls_d costs 0.60 per bucket, 14.40 a day; split over seven equal components that is
    # 2.0571428... each: 7 x 2.057143 = 14.400001, so one part must give back 0.000001.
    con.execute("delete from snap.cost_components where cluster_id = 'cls_d'")
    for snap_at in ("2026-11-19", "2026-11-20"):
        for name in ("gpu", "cpu", "memory", "storage", "network", "license", "support"):
            con.execute(
                "insert into snap.cost_components values ('r', 'cls_d', ?, ?, 0.10, 'USD')",
                [snap_at, name],
            )
    con.close()
    con, rows = _focus(db)
    parts = sorted(
        r["BilledCost"]
        for r in rows
        if r["ResourceId"] == "cls_d" and r["ChargePeriodStart"].startswith("2026-11-18")
    )
    assert len(parts) == 7
    assert sum(parts) == D("14.40")
    assert parts == [D("2.057142")] + [D("2.057143")] * 6
    assert reconcile(con) == []


def test_reconcile_reports_a_day_where_the_marts_disagree(tmp_path):
    db = create_fixture_db(tmp_path / "gpucost.duckdb")
    con = duckdb.connect(str(db))
    con.execute(
        "update marts.fleet_daily set cost = cost + 0.05"
        " where day = '2026-11-19' and currency = 'EUR'"
    )
    con.close()
    con, _rows = _focus(db)
    mismatches = reconcile(con)
    assert [(str(m[0]), m[1]) for m in mismatches] == [("2026-11-19", "EUR")]


# Extracted from the FinOps FOCUS 1.2 column pages (CC-BY-4.0) via focus-1.2-columns.json:
# (column, feature level, allows nulls, data type, value format, allowed values, number range).
# Used when the shared JSON is absent (a clean clone); checked equal to it when present.
EMBEDDED_SPEC: list[tuple[str, str, str, str, str, tuple[str, ...], str]] = [
    ("AvailabilityZone", "Recommended", "True", "String", "\\<not specified>", (), ""),
    (
        "BilledCost",
        "Mandatory",
        "False",
        "Decimal",
        "Numeric Format",
        (),
        "Any valid decimal value",
    ),
    ("BillingAccountId", "Mandatory", "False", "String", "\\<not specified>", (), ""),
    ("BillingAccountName", "Mandatory", "True", "String", "\\<not specified>", (), ""),
    ("BillingAccountType", "Conditional", "False", "String", "\\<not specified>", (), ""),
    ("BillingCurrency", "Mandatory", "False", "String", "Currency Format", (), ""),
    ("BillingPeriodEnd", "Mandatory", "False", "Date/Time", "Date/Time Format", (), ""),
    ("BillingPeriodStart", "Mandatory", "False", "Date/Time", "Date/Time Format", (), ""),
    ("CapacityReservationId", "Conditional", "True", "String", "\\<not specified>", (), ""),
    (
        "CapacityReservationStatus",
        "Conditional",
        "True",
        "String",
        "Allowed Values",
        ("Used", "Unused"),
        "",
    ),
    (
        "ChargeCategory",
        "Mandatory",
        "False",
        "String",
        "Allowed values",
        ("Usage", "Purchase", "Tax", "Credit", "Adjustment"),
        "",
    ),
    ("ChargeClass", "Mandatory", "True", "String", "Allowed values", ("Correction",), ""),
    ("ChargeDescription", "Mandatory", "True", "String", "\\<not specified>", (), ""),
    (
        "ChargeFrequency",
        "Recommended",
        "False",
        "String",
        "Allowed values",
        ("One-Time", "Recurring", "Usage-Based"),
        "",
    ),
    ("ChargePeriodEnd", "Mandatory", "False", "Date/Time", "Date/Time Format", (), ""),
    ("ChargePeriodStart", "Mandatory", "False", "Date/Time", "Date/Time Format", (), ""),
    (
        "CommitmentDiscountCategory",
        "Conditional",
        "True",
        "String",
        "Allowed Values",
        ("Spend", "Usage"),
        "",
    ),
    ("CommitmentDiscountId", "Conditional", "True", "String", "\\<not specified>", (), ""),
    ("CommitmentDiscountName", "Conditional", "True", "String", "\\<not specified>", (), ""),
    (
        "CommitmentDiscountQuantity",
        "Conditional",
        "True",
        "Decimal",
        "Numeric Format",
        (),
        "Any valid decimal value",
    ),
    (
        "CommitmentDiscountStatus",
        "Conditional",
        "True",
        "String",
        "Allowed Values",
        ("Used", "Unused"),
        "",
    ),
    ("CommitmentDiscountType", "Conditional", "True", "String", "\\<not specified>", (), ""),
    ("CommitmentDiscountUnit", "Conditional", "True", "String", "Unit Format", (), ""),
    (
        "ConsumedQuantity",
        "Conditional",
        "True",
        "Decimal",
        "Numeric Format",
        (),
        "Any valid decimal value",
    ),
    ("ConsumedUnit", "Conditional", "True", "String", "Unit Format recommended", (), ""),
    (
        "ContractedCost",
        "Mandatory",
        "False",
        "Decimal",
        "Numeric Format",
        (),
        "Any valid decimal value",
    ),
    (
        "ContractedUnitPrice",
        "Conditional",
        "True",
        "Decimal",
        "Numeric Format",
        (),
        "Any valid non-negative decimal value",
    ),
    (
        "EffectiveCost",
        "Mandatory",
        "False",
        "Decimal",
        "Numeric Format",
        (),
        "Any valid decimal value",
    ),
    ("InvoiceId", "Recommended", "True", "String", "\\<not specified>", (), ""),
    ("InvoiceIssuerName", "Mandatory", "False", "String", "\\<not specified>", (), ""),
    ("ListCost", "Mandatory", "False", "Decimal", "Numeric Format", (), "Any valid decimal value"),
    (
        "ListUnitPrice",
        "Conditional",
        "True",
        "Decimal",
        "Numeric Format",
        (),
        "Any valid non-negative decimal value",
    ),
    (
        "PricingCategory",
        "Conditional",
        "True",
        "String",
        "Allowed values",
        ("Standard", "Dynamic", "Committed", "Other"),
        "",
    ),
    ("PricingCurrency", "Conditional", "True", "String", "Currency Format", (), ""),
    (
        "PricingCurrencyContractedUnitPrice",
        "Conditional",
        "True",
        "Decimal",
        "Numeric Format",
        (),
        "Any valid non-negative decimal value",
    ),
    (
        "PricingCurrencyEffectiveCost",
        "Conditional",
        "True",
        "Decimal",
        "Numeric Format",
        (),
        "Any valid decimal value",
    ),
    (
        "PricingCurrencyListUnitPrice",
        "Conditional",
        "True",
        "Decimal",
        "Numeric Format",
        (),
        "Any valid non-negative decimal value",
    ),
    ("PricingQuantity", "Mandatory", "True", "Decimal", "Numeric Format", (), ""),
    ("PricingUnit", "Mandatory", "True", "String", "Unit Format", (), ""),
    ("ProviderName", "Mandatory", "False", "String", "\\<not specified>", (), ""),
    ("PublisherName", "Mandatory", "False", "String", "\\<not specified>", (), ""),
    ("RegionId", "Conditional", "True", "String", "\\<not specified>", (), ""),
    ("RegionName", "Conditional", "True", "String", "\\<not specified>", (), ""),
    ("ResourceId", "Conditional", "True", "String", "\\<not specified>", (), ""),
    ("ResourceName", "Conditional", "True", "String", "\\<not specified>", (), ""),
    ("ResourceType", "Conditional", "True", "String", "\\<not specified>", (), ""),
    (
        "ServiceCategory",
        "Mandatory",
        "False",
        "String",
        "Allowed Values",
        (
            "AI and Machine Learning",
            "Analytics",
            "Business Applications",
            "Compute",
            "Databases",
            "Developer Tools",
            "Multicloud",
            "Identity",
            "Integration",
            "Internet of Things",
            "Management and Governance",
            "Media",
            "Migration",
            "Mobile",
            "Networking",
            "Security",
            "Storage",
            "Web",
            "Other",
        ),
        "",
    ),
    ("ServiceName", "Mandatory", "False", "String", "\\<not specified>", (), ""),
    (
        "ServiceSubcategory",
        "Recommended",
        "False",
        "String",
        "Allowed Values",
        (
            "AI Platforms",
            "Bots",
            "Generative AI",
            "Machine Learning",
            "Natural Language Processing",
            "Other (AI and Machine Learning)",
            "Analytics Platforms",
            "Business Intelligence",
            "Data Processing",
            "Search",
            "Streaming Analytics",
            "Other (Analytics)",
            "Productivity and Collaboration",
            "Other (Business Applications)",
            "Containers",
            "End User Computing",
            "Quantum Compute",
            "Serverless Compute",
            "Virtual Machines",
            "Other (Compute)",
            "Caching",
            "Data Warehouses",
            "Ledger Databases",
            "NoSQL Databases",
            "Relational Databases",
            "Time Series Databases",
            "Other (Databases)",
            "Developer Platforms",
            "Continuous Integration and Deployment",
            "Development Environments",
            "Source Code Management",
            "Quality Assurance",
            "Other (Developer Tools)",
            "Identity and Access Management",
            "Other (Identity)",
            "API Management",
            "Messaging",
            "Workflow Orchestration",
            "Other (Integration)",
            "IoT Analytics",
            "IoT Platforms",
            "Other (Internet of Things)",
            "Architecture",
            "Compliance",
            "Cost Management",
            "Data Governance",
            "Disaster Recovery",
            "Endpoint Management",
            "Observability",
            "Support",
            "Other (Management and Governance)",
            "Content Creation",
            "Gaming",
            "Media Streaming",
            "Mixed Reality",
            "Other (Media)",
            "Data Migration",
            "Resource Migration",
            "Other (Migration)",
            "Other (Mobile)",
            "Multicloud Integration",
            "Other (Multicloud)",
            "Application Networking",
            "Content Delivery",
            "Network Connectivity",
            "Network Infrastructure",
            "Network Routing",
            "Network Security",
            "Other (Networking)",
            "Secret Management",
            "Security Posture Management",
            "Threat Detection and Response",
            "Other (Security)",
            "Backup Storage",
            "Block Storage",
            "File Storage",
            "Object Storage",
            "Storage Platforms",
            "Other (Storage)",
            "Application Platforms",
            "Other (Web)",
            "Other (Other)",
        ),
        "",
    ),
    ("SkuId", "Conditional", "True", "String", "\\<not specified>", (), ""),
    ("SkuMeter", "Conditional", "True", "String", "\\<not specified>", (), ""),
    ("SkuPriceDetails", "Conditional", "True", "JSON", "KeyValueFormat", (), ""),
    ("SkuPriceId", "Conditional", "True", "String", "\\<not specified>", (), ""),
    ("SubAccountId", "Conditional", "True", "String", "\\<not specified>", (), ""),
    ("SubAccountName", "Conditional", "True", "String", "\\<not specified>", (), ""),
    ("SubAccountType", "Conditional", "True", "String", "\\<not specified>", (), ""),
    ("Tags", "Conditional", "True", "JSON", "Key-Value Format", (), ""),
]
