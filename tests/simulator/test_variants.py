"""Each response variant changes the shape the contract allows, and only that."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import pytest

from pipeline.simulator.variants import (
    LOSSLESS,
    VARIANT_NAMES,
    VariantSpec,
    apply_detail,
    snake_to_camel,
)
from tests.shared import api_example

CANONICAL = {
    "id": "cls_1",
    "status": "running",
    "created_at": "2026-11-01T09:12:00Z",
    "configuration": {"gpu_type": "H100", "gpu_count": 2},
    "environment": {"variables": {"HF_TOKEN": "x", "world_size": "2"}},
    "metrics": {
        "interval_seconds": 3600,
        "current": {
            "timestamp": "2026-11-20T03:00:00Z",
            "gpu_utilization": 45.5,
            "gpus": [{"gpu_id": "0", "utilization": 91.0}],
        },
        "historical": {
            "data_points": [
                {
                    "timestamp": "2026-11-13T03:00:00Z",
                    "cost": "6.9000",
                    "gpus": [{"gpu_id": "0", "utilization": 2.0}],
                }
            ]
        },
    },
    "cost": {
        "currency": "USD",
        "current_hourly_rate": "6.9000",
        "cost_breakdown": {"gpu_cost_per_hour": "6.2000", "total_cost_to_date": "3091.2000"},
        "cost_projections": {"daily": "165.6000", "projection_basis": "current_hourly_rate"},
    },
}


def _epoch_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _walk(doc):
    """Every (key, value) pair of a JSON document, depth first."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(doc, list):
        for item in doc:
            yield from _walk(item)


def test_snake_to_camel():
    assert snake_to_camel("gpu_cost_per_hour") == "gpuCostPerHour"
    assert snake_to_camel("id") == "id"
    assert snake_to_camel("gpu_id") == "gpuId"


def test_default_spec_wraps_the_canonical_document_unchanged():
    assert apply_detail(CANONICAL, VariantSpec()) == {"success": True, "data": CANONICAL}


def test_camel_renames_schema_keys_but_not_environment_variable_names():
    doc = apply_detail(CANONICAL, VariantSpec(camel=True, bare=True))
    assert doc["configuration"] == {"gpuType": "H100", "gpuCount": 2}
    assert doc["environment"]["variables"] == {"HF_TOKEN": "x", "world_size": "2"}
    assert doc["metrics"]["historical"]["dataPoints"][0]["gpus"][0]["gpuId"] == "0"
    assert doc["cost"]["costBreakdown"]["gpuCostPerHour"] == "6.2000"
    assert not [k for k, _ in _walk(doc) if "_" in k and k not in ("HF_TOKEN", "world_size")]


def test_string_numbers_quote_every_number_and_money_numbers_unquote_money():
    strings = apply_detail(CANONICAL, VariantSpec(string_numbers=True, bare=True))
    assert strings["configuration"]["gpu_count"] == "2"
    assert strings["metrics"]["current"]["gpu_utilization"] == "45.5"
    assert not [v for _, v in _walk(strings) if isinstance(v, int | float)]
    money = apply_detail(CANONICAL, VariantSpec(money_numbers=True, bare=True))
    assert money["cost"]["current_hourly_rate"] == 6.9
    assert money["cost"]["cost_breakdown"]["total_cost_to_date"] == 3091.2
    assert money["cost"]["cost_projections"] == {
        "daily": 165.6,
        "projection_basis": "current_hourly_rate",
    }
    assert money["metrics"]["historical"]["data_points"][0]["cost"] == 6.9
    assert money["environment"]["variables"]["world_size"] == "2"  # data, not money


def test_epoch_ms_turns_every_timestamp_into_integer_milliseconds():
    doc = apply_detail(CANONICAL, VariantSpec(epoch_ms=True, string_numbers=True, bare=True))
    assert doc["created_at"] == _epoch_ms("2026-11-01T09:12:00Z") == 1793524320000
    assert doc["metrics"]["historical"]["data_points"][0]["timestamp"] == _epoch_ms(
        "2026-11-13T03:00:00Z"
    )
    assert isinstance(doc["metrics"]["current"]["timestamp"], int)


def test_parse_accepts_every_name_and_rejects_unknown_ones():
    spec = VariantSpec.parse(VARIANT_NAMES)
    assert spec.names == list(VARIANT_NAMES)
    assert VariantSpec.parse(["camelCase", "string-numbers"]).names == ["camel", "string_numbers"]
    with pytest.raises(ValueError):
        VariantSpec.parse(["yaml"])


def _running_with_gpus(fleet):
    for summary in fleet.list_summaries():
        if summary["status"] != "running":
            continue
        detail = fleet.detail(summary["id"], window="7d")
        points = detail["metrics"]["historical"]["data_points"]
        if points and "gpus" in points[-1]:
            return summary["id"], detail
    raise AssertionError("no running cluster with per-GPU series")


def _get(http, url, path, **params):
    response = http.get(f"{url}{path}", params={"metrics_window": "7d", **params})
    assert response.status_code == 200
    return response.json()


def test_bare_camel_list_looks_like_the_v2_example(serve, fleet40):
    _, url, http = serve(
        fleet40, variants=VariantSpec(bare=True, camel=True, epoch_ms=True, extra_fields=True)
    )
    items = _get(http, url, "/clusters", limit=100)
    assert isinstance(items, list) and len(items) == len(fleet40.list_summaries())
    v2 = json.loads(api_example("cluster_list_v2_bare_camel.json").read_text())
    assert set(v2[0]) - {"hourlyRate"} <= set(items[0])  # gpuType, gpuCount, volumeSize, ...
    assert isinstance(items[0]["createdAt"], int) and "x_internal" in items[0]


def test_bare_list_pages_end_with_a_short_page(serve, fleet40):
    _, url, http = serve(fleet40, variants=VariantSpec(bare=True))
    total = len(fleet40.list_summaries())
    seen, page = [], 1
    while True:
        items = _get(http, url, "/clusters", limit=7, page=page)
        seen += [item["id"] for item in items]
        if len(items) < 7:
            break
        page += 1
    assert sorted(seen) == sorted(s["id"] for s in fleet40.list_summaries())
    assert len(seen) == total


def test_camel_detail_over_http_has_camel_keys_with_the_fleets_values(serve, fleet40):
    _, url, http = serve(fleet40, variants=VariantSpec(camel=True))
    cid, canonical = _running_with_gpus(fleet40)
    data = _get(http, url, f"/clusters/{cid}")["data"]
    assert data["configuration"]["gpuType"] == canonical["configuration"]["gpu_type"]
    assert (
        data["cost"]["costBreakdown"]["gpuCostPerHour"]
        == (canonical["cost"]["cost_breakdown"]["gpu_cost_per_hour"])
    )
    assert len(data["metrics"]["historical"]["dataPoints"]) == len(
        canonical["metrics"]["historical"]["data_points"]
    )


def test_numbers_as_strings_and_epoch_ms_over_http_keep_the_values(serve, fleet40):
    _, url, http = serve(fleet40, variants=VariantSpec(string_numbers=True, epoch_ms=True))
    cid, canonical = _running_with_gpus(fleet40)
    data = _get(http, url, f"/clusters/{cid}")["data"]
    assert data["configuration"]["gpu_count"] == str(canonical["configuration"]["gpu_count"])
    point, expected = (
        data["metrics"]["historical"]["data_points"][-1],
        canonical["metrics"]["historical"]["data_points"][-1],
    )
    assert point["timestamp"] == _epoch_ms(expected["timestamp"])
    assert float(point["gpu_utilization"]) == expected["gpu_utilization"]
    assert isinstance(point["gpu_utilization"], str)


def test_money_as_numbers_over_http_parse_to_the_same_decimal(serve, fleet40):
    _, url, http = serve(fleet40, variants=VariantSpec(money_numbers=True))
    cid, canonical = _running_with_gpus(fleet40)
    response = http.get(f"{url}/clusters/{cid}", params={"metrics_window": "7d"})
    data = json.loads(response.content, parse_float=Decimal)["data"]
    assert not isinstance(data["cost"]["current_hourly_rate"], str)
    assert data["cost"]["current_hourly_rate"] == Decimal(canonical["cost"]["current_hourly_rate"])
    for got, want in zip(
        data["metrics"]["historical"]["data_points"],
        canonical["metrics"]["historical"]["data_points"],
        strict=True,
    ):
        if "cost" in want:
            assert Decimal(got["cost"]) == Decimal(want["cost"])


def test_missing_optional_parts_over_http(serve, fleet40):
    spec = VariantSpec(no_stopped_metrics=True, no_gpus=True, no_breakdown=True)
    _, url, http = serve(fleet40, variants=spec)
    statuses = set()
    for summary in fleet40.list_summaries():
        data = _get(http, url, f"/clusters/{summary['id']}")["data"]
        statuses.add(data["status"])
        assert ("metrics" in data) == (data["status"] != "stopped")
        assert "gpus" not in {k for k, _ in _walk(data)}
        assert "cost_breakdown" not in data["cost"] and "current_hourly_rate" in data["cost"]
    assert {"stopped", "running"} <= statuses


def test_empty_data_points_over_http(serve, fleet40):
    _, url, http = serve(fleet40, variants=VariantSpec(empty_points=True))
    cid, _ = _running_with_gpus(fleet40)
    assert _get(http, url, f"/clusters/{cid}")["data"]["metrics"]["historical"] == {
        "data_points": []
    }


def test_extra_fields_are_added_and_the_known_ones_kept(serve, fleet40):
    _, url, http = serve(fleet40, variants=VariantSpec(extra_fields=True))
    cid, canonical = _running_with_gpus(fleet40)
    data = _get(http, url, f"/clusters/{cid}")["data"]
    assert {"containerDiskSize", "x_internal"} <= set(data)
    assert {k: v for k, v in data.items() if k in canonical and k != "metrics"} == {
        k: v for k, v in canonical.items() if k != "metrics"
    }
    assert data["metrics"]["historical"]["data_points"][0]["x_sample_count"] == 60


def test_mixed_gives_each_cluster_its_own_stable_subset(serve, fleet40):
    spec = VariantSpec(mixed=True, seed=1)
    _, url, http = serve(fleet40, variants=spec)
    ids = [s["id"] for s in fleet40.list_summaries()]
    shapes = set()
    for cid in ids:
        light = {"include_metrics": "false"}
        first = http.get(f"{url}/clusters/{cid}", params=light).content
        assert http.get(f"{url}/clusters/{cid}", params=light).content == first  # stable
        doc = json.loads(first)
        flags = spec.resolve(cid)
        assert isinstance(doc, dict) and (("success" in doc) != flags.bare)
        data = doc if flags.bare else doc["data"]
        assert ("gpuType" in data["configuration"]) == flags.camel
        assert (
            isinstance(data["created_at" if not flags.camel else "createdAt"], int)
            == flags.epoch_ms
        )
        shapes.add(tuple(getattr(flags, name) for name in LOSSLESS))
    assert len(shapes) >= 8  # the fleet really sees many combinations
