"""Every contract variant normalizes to the same snapshot-table columns; bad fields are named."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from pipeline.errors import ApiError
from pipeline.normalize import (
    NormalizeError,
    dump_json,
    normalize_detail,
    normalize_list_page,
    normalize_summary,
    parse_json,
    to_snake,
    unwrap,
)
from tests.shared import api_examples_dir

EXAMPLES = api_examples_dir()


def _example(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


# The test's own variant makers: written here, independently of pipeline.normalize, so that a
# bug in the converter under test cannot hide behind the same bug in its test.
def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _to_camel(doc: Any, *, inside_variables: bool = False) -> Any:
    if isinstance(doc, dict):
        return {
            (k if inside_variables else _camel(k)): _to_camel(v, inside_variables=k == "variables")
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [_to_camel(v) for v in doc]
    return doc


def _numbers_as_strings(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _numbers_as_strings(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_numbers_as_strings(v) for v in doc]
    if isinstance(doc, int | float | Decimal) and not isinstance(doc, bool):
        return str(doc)
    return doc


_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _epoch_ms(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _epoch_ms(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_epoch_ms(v) for v in doc]
    if isinstance(doc, str) and _ISO.match(doc):
        y, mo, d, h, mi, s = map(int, re.findall(r"\d+", doc))
        return int(datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp()) * 1000
    return doc


def _extra_fields(doc: Any) -> Any:
    if isinstance(doc, dict):
        # Not inside `variables`: there a new key is a new variable, not an unknown field.
        out = {k: v if k == "variables" else _extra_fields(v) for k, v in doc.items()}
        out["x_internal"] = {"shard": 7, "note": "unknown to the contract"}
        return out
    if isinstance(doc, list):
        return [_extra_fields(v) for v in doc]
    return doc


def _base() -> dict[str, Any]:
    # Plain json (floats) on the test side: the variants are re-serialized as a provider would.
    doc: dict[str, Any] = json.loads(_example("cluster_detail.json"))
    return doc


VARIANTS = {
    "wrapped": lambda d: d,
    "bare": lambda d: d["data"],
    "camel": lambda d: _to_camel(d),
    "numbers_as_strings": lambda d: _numbers_as_strings(d),
    "epoch_ms": lambda d: _epoch_ms(d),
    "extra_fields": lambda d: {"success": True, "data": _extra_fields(d["data"])},
    "all_at_once": lambda d: _to_camel(_epoch_ms(_numbers_as_strings(_extra_fields(d["data"])))),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_normalizes_to_the_same_canonical_detail(variant: str) -> None:
    expected = normalize_detail(parse_json(_example("cluster_detail.json")))
    sent = VARIANTS[variant](_base())
    # Through real JSON text, as the client would receive it.
    text = json.dumps(sent)
    assert normalize_detail(parse_json(text)) == expected


def _row(detail: Any, table: str = "cluster_snapshots", k: int = 0) -> dict[str, Any]:
    return detail.rows(table)[k]


def test_normalized_detail_has_python_types_from_the_example() -> None:
    detail = normalize_detail(parse_json(_example("cluster_detail.json")))
    snap = _row(detail)
    assert snap["hourly_rate"] == Decimal("6.9000")
    assert str(snap["hourly_rate"]) == "6.9000"
    components = {r["component"]: r["cost_per_hour"] for r in detail.rows("cost_components")}
    assert components["gpu"] == Decimal("6.2000")
    projections = {r["horizon"]: r["projected_cost"] for r in detail.rows("projections")}
    assert projections["monthly"] == Decimal("4968.0000")
    points = detail.rows("metric_points")
    assert [p["bucket_at"] for p in points] == [
        datetime(2026, 11, 13, 3, tzinfo=UTC),
        datetime(2026, 11, 13, 4, tzinfo=UTC),
        datetime(2026, 11, 13, 6, tzinfo=UTC),
    ]
    assert points[0]["cost"] == Decimal("6.9000")
    assert points[0]["gpu_series_count"] == 2
    assert _gpu_row(detail, 1) == ("1", 0.0, 8.0, 117.0)
    assert _row(detail, "gpu_metric_points", 1)["bucket_at"] == points[0]["bucket_at"]
    assert snap["gpu_count"] == 2
    assert snap["memory_gb"] == 256.0
    assert _row(detail, "gpu_current")["temperature_c"] == 71.0
    assert _row(detail, "alerts")["triggered_at"] == datetime(2026, 11, 20, 0, 50, tzinfo=UTC)


def _gpu_columns(detail: Any) -> dict[str, list[Any]]:
    # A detail gives its per-GPU columns as Arrow arrays (the rest as lists).
    return {
        name: values.to_pylist() for name, values in detail.columns["gpu_metric_points"].items()
    }


def _gpu_row(detail: Any, k: int) -> tuple[Any, ...]:
    cols = _gpu_columns(detail)
    return tuple(cols[n][k] for n in ("gpu_id", "utilization", "memory_used_gb", "power_draw_w"))


def test_parts_not_stored_are_type_checked_all_the_same() -> None:
    doc = json.loads(_example("cluster_detail.json"))
    doc["data"]["network"]["ssh_connection"]["port"] = "twenty-two"
    with pytest.raises(NormalizeError) as info:
        normalize_detail(doc)
    assert info.value.path == "network.ssh_connection.port"


def test_money_sent_as_a_json_number_never_passes_through_a_float() -> None:
    # 0.1 + 0.2 style: a binary float cannot hold these digits.
    text = '{"id": "c1", "cost": {"current_hourly_rate": 1234567.8912345678901, "currency": "USD"}}'
    detail = normalize_detail(parse_json(text))
    assert _row(detail)["hourly_rate"] == Decimal("1234567.8912345678901")


def test_epoch_milliseconds_become_aware_utc_datetimes() -> None:
    detail = normalize_detail(
        {"id": "c1", "updatedAt": 1795143600000, "createdAt": "1795143600123"}
    )
    snap = _row(detail)
    assert snap["updated_at"] == datetime(2026, 11, 20, 3, tzinfo=UTC)
    assert snap["created_at"] == datetime(2026, 11, 20, 3, 0, 0, 123000, tzinfo=UTC)
    assert snap["updated_at"].tzinfo is UTC
    assert detail.snapshot_at == snap["updated_at"] and detail.snapshot_source == "updated_at"


def test_iso_timestamps_with_offsets_become_utc() -> None:
    detail = normalize_detail({"id": "c1", "updated_at": "2026-11-20T04:00:00+01:00"})
    updated = _row(detail)["updated_at"]
    assert updated == datetime(2026, 11, 20, 3, tzinfo=UTC)
    assert updated.utcoffset().total_seconds() == 0


def test_bare_camel_list_example_normalizes_summaries() -> None:
    page = normalize_list_page(parse_json(_example("cluster_list_v2_bare_camel.json")))
    assert page.pagination is None and page.errors == [] and page.raw_count == 2
    first, second = page.clusters
    assert first["gpu_type"] == "H100" and first["gpu_count"] == 2
    assert first["hourly_rate"] == Decimal("6.9")
    assert second["hourly_rate"] == Decimal("0.07")
    assert first["created_at"] == datetime(2025, 11, 1, 9, 12, tzinfo=UTC)  # 1761988320000 ms
    assert "container_disk_size" not in first and "containerDiskSize" not in first


def test_wrapped_list_example_gives_pagination_and_the_same_summary_values() -> None:
    page = normalize_list_page(parse_json(_example("cluster_list.json")))
    assert page.pagination == {
        "page": 1,
        "limit": 100,
        "total": 2,
        "total_pages": 1,
        "has_next": False,
    }
    assert [c["id"] for c in page.clusters] == ["cluster_abc123", "cluster_def456"]
    assert page.clusters[0]["hourly_rate"] == Decimal("6.9000")
    assert page.clusters[1]["updated_at"] == datetime(2026, 11, 15, 18, 20, tzinfo=UTC)


def test_one_bad_summary_is_reported_and_the_rest_kept() -> None:
    page = normalize_list_page([{"id": "a"}, {"name": "no id"}, {"id": "c", "gpuCount": "x"}])
    assert [c["id"] for c in page.clusters] == ["a"]
    assert [e.path for e in page.errors] == ["clusters[1].id", "clusters[2].gpu_count"]


def test_missing_optional_parts_give_no_rows_and_null_columns() -> None:
    base = _base()["data"]
    base = copy.deepcopy(base)
    del base["metrics"]["current"]["gpus"]
    for point in base["metrics"]["historical"]["data_points"]:
        del point["gpus"]
    base["metrics"]["historical"]["data_points"] = []
    del base["cost"]["cost_breakdown"]
    del base["network"]
    detail = normalize_detail(base)
    assert detail.count("gpu_current") == 0 and detail.count("metric_points") == 0
    assert detail.count("cost_components") == 0
    snap = _row(detail)
    assert snap["has_cost_breakdown"] is False and snap["total_cost_to_date"] is None
    assert snap["has_metrics"] is True and snap["has_gpu_series"] is False
    stopped = normalize_detail({"id": "c9", "status": "stopped", "metrics": None})
    snap = _row(stopped)
    assert (snap["status"], snap["has_metrics"], snap["interval_seconds"]) == (
        "stopped",
        False,
        None,
    )
    assert all(stopped.count(t) == 0 for t in stopped.columns if t != "cluster_snapshots")


def test_environment_variables_are_never_stored() -> None:
    detail = normalize_detail(
        {
            "id": "c1",
            "environment": {"variables": {"HF_TOKEN": "x", "myVar": "y"}, "cudaVersion": "12.4"},
        }
    )
    assert _row(detail)["cuda_version"] == "12.4"
    assert "HF_TOKEN" not in repr(detail) and "myVar" not in repr(detail)


def test_new_cost_components_are_kept_and_unknown_fields_dropped() -> None:
    detail = normalize_detail(
        {
            "id": "c1",
            "cost": {"costBreakdown": {"egressCostPerHour": "0.0300", "gpuCostPerHour": 1}},
            "containerDiskSize": 100,
        }
    )
    assert detail.columns["cost_components"] == {
        "component": ["egress", "gpu"],
        "cost_per_hour": [Decimal("0.0300"), Decimal(1)],
    }
    assert "container" not in repr(detail)


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        (
            {
                "id": "c",
                "metrics": {
                    "historical": {
                        "data_points": [
                            {"timestamp": "2026-11-13T03:00:00Z"},
                            {"timestamp": "yesterday"},
                        ]
                    }
                },
            },
            "metrics.historical.data_points[1].timestamp",
        ),
        (
            {"id": "c", "metrics": {"historical": {"data_points": "none"}}},
            "metrics.historical.data_points",
        ),
        ({"name": "no id"}, "id"),
        ({"id": "c", "configuration": {"gpu_count": "eight"}}, "configuration.gpu_count"),
        (
            {"id": "c", "metrics": {"current": {"gpus": [{"gpu_id": "0", "utilization": "hot"}]}}},
            "metrics.current.gpus[0].utilization",
        ),
        ({"id": "c", "cost": {"currentHourlyRate": "a lot"}}, "cost.current_hourly_rate"),
        ({"id": "c", "cost": "free"}, "cost"),
        (
            {"id": "c", "metrics": {"historical": {"data_points": [{"cost": "1"}]}}},
            "metrics.historical.data_points[0].timestamp",
        ),
    ],
)
def test_bad_field_raises_normalize_error_naming_its_path(doc: dict[str, Any], path: str) -> None:
    with pytest.raises(NormalizeError) as info:
        normalize_detail(doc)
    assert info.value.path == path
    assert str(info.value).startswith(path + ": ")
    assert isinstance(info.value, ApiError)


def test_invalid_json_raises_normalize_error() -> None:
    with pytest.raises(NormalizeError, match="invalid JSON"):
        parse_json(b'{"success": true, "data": {"id": "c1", "na')


def test_unsuccessful_wrapper_is_an_error() -> None:
    with pytest.raises(NormalizeError, match="success=false"):
        unwrap({"success": False, "data": None, "message": "maintenance"})


@pytest.mark.parametrize(
    ("key", "snake"),
    [
        ("gpuType", "gpu_type"),
        ("costBreakdown", "cost_breakdown"),
        ("gpuCostPerHour", "gpu_cost_per_hour"),
        ("dataPoints", "data_points"),
        ("temperatureC", "temperature_c"),
        ("memoryGB", "memory_gb"),
        ("gpuID", "gpu_id"),
        ("privateIP", "private_ip"),
        ("gpu_type", "gpu_type"),
        ("id", "id"),
    ],
)
def test_to_snake_converts_camel_case_keys(key: str, snake: str) -> None:
    assert to_snake(key) == snake


def test_dump_json_writes_decimals_as_the_numbers_they_came_from() -> None:
    doc = parse_json(b'{"a":6.9000,"b":[1,"x",0.10],"c":{"d":null,"e":true}}')
    assert dump_json(doc) == b'{"a":6.9000,"b":[1,"x",0.10],"c":{"d":null,"e":true}}'


def test_dump_json_falls_back_to_strings_when_a_value_holds_the_mark() -> None:
    doc = parse_json('{"a": 1.5, "b": "\\ue0002\\ue000"}')
    assert json.loads(dump_json(doc)) == {"a": "1.5", "b": "\ue0002\ue000"}


def test_summary_normalizes_numbers_sent_as_strings() -> None:
    summary = normalize_summary(
        {"id": "c", "gpuCount": "4", "hourlyRate": "12.50", "memoryGb": "64"}
    )
    assert summary == {
        "id": "c",
        "gpu_count": 4,
        "hourly_rate": Decimal("12.50"),
        "memory_gb": 64.0,
    }


def _fleet_detail_text() -> str:
    from pipeline.simulator.fleet import Fleet, FleetSpec

    fleet = Fleet(FleetSpec(seed=7, clusters=4, start=datetime(2026, 11, 13, 3, tzinfo=UTC)))
    running = [s["id"] for s in fleet.list_summaries() if s["status"] == "running"]
    return json.dumps(fleet.detail(running[0], window="7d"))


def test_fast_path_gives_the_general_paths_columns() -> None:
    text = _fleet_detail_text()
    doc = json.loads(text)
    # parse_json yields Decimals, which the fast path declines: the general path's answer.
    expected = normalize_detail(parse_json(text))
    detail = normalize_detail(orjson.loads(text), exact_money=True)
    assert detail == expected
    points = doc["metrics"]["historical"]["data_points"]
    assert len(points) == 168
    cols = detail.columns["metric_points"]
    assert cols["bucket_at"] == [datetime.fromisoformat(p["timestamp"]) for p in points]
    assert cols["cost"] == [Decimal(p["cost"]) for p in points]
    assert cols["gpu_utilization"] == [p.get("gpu_utilization") for p in points]
    assert cols["gpu_series_count"] == [len(p["gpus"]) for p in points]
    gpus = [g for p in points for g in p["gpus"]]
    gcols = _gpu_columns(detail)
    assert gcols["gpu_id"] == [g["gpu_id"] for g in gpus]
    assert gcols["utilization"] == [g["utilization"] for g in gpus]
    assert gcols["power_draw_w"] == [g["power_draw_w"] for g in gpus]


@pytest.mark.parametrize(
    "change",
    [
        lambda pts: pts[3]["gpus"][0].update(utilization=100),  # an integer: becomes 100.0
        lambda pts: pts[4].update(timestamp=pts[5]["timestamp"]),  # a bucket sent twice
        lambda pts: pts[6]["gpus"][1].update(gpu_id=pts[6]["gpus"][0]["gpu_id"]),
        lambda pts: pts[7].update(gpuUtilization=3.5),  # a camelCase key
        lambda pts: pts[8]["gpus"][2].update(utilization="7.5"),  # a number as a string
    ],
    ids=["int", "dup-bucket", "dup-gpu", "camel", "string"],
)
def test_unusual_points_take_the_general_path_with_the_same_result(change) -> None:
    doc = json.loads(_fleet_detail_text())
    change(doc["metrics"]["historical"]["data_points"])
    text = json.dumps(doc)
    detail = normalize_detail(orjson.loads(text), exact_money=True)
    assert detail == normalize_detail(parse_json(text))


@pytest.mark.parametrize(
    "change",
    [
        lambda pts: pts[3]["gpus"].reverse(),  # the same GPUs in another order
        lambda pts: pts[4]["gpus"].pop(),  # a point with one GPU fewer
        lambda pts: pts[5]["gpus"][1].pop("power_draw_w"),  # a field missing: stays absent
        lambda pts: pts[6]["gpus"][2].update(utilization=None),  # a null stays None
    ],
    ids=["reordered", "fewer-gpus", "missing-field", "null"],
)
def test_irregular_but_clean_points_keep_the_fast_path_and_its_result(change) -> None:
    doc = json.loads(_fleet_detail_text())
    points = doc["metrics"]["historical"]["data_points"]
    change(points)
    text = json.dumps(doc)
    detail = normalize_detail(orjson.loads(text), exact_money=True)
    assert detail == normalize_detail(parse_json(text))
    flat = [g for p in points for g in p["gpus"]]
    cols = _gpu_columns(detail)
    assert cols["gpu_id"] == [g["gpu_id"] for g in flat]
    assert cols["power_draw_w"] == [g.get("power_draw_w") for g in flat]
    assert cols["utilization"] == [g.get("utilization") for g in flat]
    assert detail.columns["metric_points"]["gpu_series_count"] == [len(p["gpus"]) for p in points]


def test_a_bucket_sent_twice_keeps_its_later_entry_and_a_gpu_sent_twice_cannot_be_stored() -> None:
    doc = json.loads(_fleet_detail_text())
    points = doc["metrics"]["historical"]["data_points"]
    points[4]["timestamp"] = points[5]["timestamp"]
    points[5]["gpu_utilization"] = 42.0
    detail = normalize_detail(doc)
    cols = detail.columns["metric_points"]
    assert len(cols["bucket_at"]) == 167 and detail.problem is None
    assert cols["gpu_utilization"][4] == 42.0 and detail.index["metric_points"][4] == 5
    points[6]["gpus"][1]["gpu_id"] = points[6]["gpus"][0]["gpu_id"]
    assert normalize_detail(doc).problem == (
        "metrics.historical.data_points[6].gpus: a gpu_id sent twice"
    )


def test_an_alert_without_an_id_is_kept_by_position_and_a_repeated_id_keeps_the_later() -> None:
    detail = normalize_detail(
        {
            "id": "c",
            "updated_at": "2026-11-20T03:00:00Z",
            "metrics": {
                "alerts": [
                    {"alert_id": ""},
                    {"severity": "info"},
                    {"alert_id": "a", "severity": "warning"},
                    {"alert_id": "a", "severity": "critical"},
                ]
            },
        }
    )
    alerts = detail.columns["alerts"]
    assert alerts["alert_id"] == ["#0", "#1", "a"]
    assert alerts["severity"] == [None, "info", "critical"]
    assert detail.path("alerts", 2, "severity") == "metrics.alerts[3].severity"
