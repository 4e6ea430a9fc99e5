"""Response variants a real provider sends (CONTRACT.md "Variants"), applied on the way out.

The fleet produces canonical documents (snake_case, ISO `Z` timestamps, money as decimal
strings, numbers as JSON numbers). `VariantSpec` selects what the server changes before
encoding; the flags combine freely. The converter here is the simulator's own: it shares no code
with the client's normalizer, so a bug in one cannot hide a bug in the other.

Names (`VARIANT_NAMES`, used by `gpucost simulate serve --variant NAME`):

    bare                no `{"success": true, "data": ...}` wrapper; a bare list is a JSON
                        array without a pagination object
    camel               camelCase keys (`gpu_type` -> `gpuType`); environment variable names
                        are data and keep their spelling
    string_numbers      every JSON number as a JSON string (`45.5` -> `"45.5"`)
    money_numbers       money as JSON numbers (`"6.9000"` -> `6.9`) instead of strings
    epoch_ms            timestamps as integer epoch milliseconds
    extra_fields        unknown extra fields (`containerDiskSize`, `volumeSize`, `x_internal`, ...)
    no_stopped_metrics  no `metrics` object for a cluster whose status is `stopped`
    no_gpus             no per-GPU `gpus` series (current and data points)
    no_breakdown        no `cost_breakdown` (the rate and projections stay)
    empty_points        `historical.data_points` is an empty list
    mixed               each cluster (and each list page) gets its own deterministic random
                        subset of the lossless variants (bare, camel, string_numbers,
                        money_numbers, epoch_ms, extra_fields); lossy ones apply as selected

`string_numbers` wins over `money_numbers`; epoch milliseconds stay integers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

from pipeline.simulator.faults import unit_hash

VARIANT_NAMES: tuple[str, ...] = (
    "bare",
    "camel",
    "string_numbers",
    "money_numbers",
    "epoch_ms",
    "extra_fields",
    "no_stopped_metrics",
    "no_gpus",
    "no_breakdown",
    "empty_points",
    "mixed",
)

# The variants that lose no information: `mixed` draws from these per cluster.
LOSSLESS: tuple[str, ...] = (
    "bare",
    "camel",
    "string_numbers",
    "money_numbers",
    "epoch_ms",
    "extra_fields",
)

_MONEY_KEYS = frozenset(
    {
        "hourly_rate",
        "current_hourly_rate",
        "total_cost_to_date",
        "window_cost",
        "cost",
    }
)
_PROJECTION_KEYS = frozenset({"daily", "weekly", "monthly"})
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]00:00)$")
# Maps whose keys are data (variable names), not schema: never re-cased.
_DATA_MAPS = frozenset({"variables"})


@dataclass(frozen=True)
class VariantSpec:
    """Which variants the server applies; the default is the documented shape (wrapped,
    snake_case, money as strings, ISO timestamps, every optional part present)."""

    bare: bool = False
    camel: bool = False
    string_numbers: bool = False
    money_numbers: bool = False
    epoch_ms: bool = False
    extra_fields: bool = False
    no_stopped_metrics: bool = False
    no_gpus: bool = False
    no_breakdown: bool = False
    empty_points: bool = False
    mixed: bool = False
    seed: int = 0

    @classmethod
    def parse(cls, names: Iterable[str], *, seed: int = 0) -> VariantSpec:
        """Build from variant names (`VARIANT_NAMES`), e.g. `["bare", "camel"]`."""
        chosen: dict[str, bool] = {}
        for name in names:
            key = name.strip().lower().replace("-", "_")
            if key == "camelcase":
                key = "camel"
            if key not in VARIANT_NAMES:
                raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANT_NAMES)}")
            chosen[key] = True
        return cls(seed=seed, **chosen)

    @property
    def names(self) -> list[str]:
        """The selected variant names."""
        return [name for name in VARIANT_NAMES if getattr(self, name)]

    @property
    def converts(self) -> bool:
        """True when keys or values change (camel, string/money numbers, epoch ms)."""
        return self.camel or self.string_numbers or self.money_numbers or self.epoch_ms

    @property
    def lossy(self) -> bool:
        """True when optional parts are removed."""
        return self.no_stopped_metrics or self.no_gpus or self.no_breakdown or self.empty_points

    def resolve(self, key: str) -> VariantSpec:
        """The flags for one cluster id or list page key (`mixed` drawn deterministically)."""
        if not self.mixed:
            return self
        drawn = {name: unit_hash(self.seed, "variant", name, key) < 0.5 for name in LOSSLESS}
        return replace(self, mixed=False, **drawn)


def snake_to_camel(key: str) -> str:
    """`gpu_cost_per_hour` -> `gpuCostPerHour` (keys without `_` unchanged)."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _epoch_ms(text: str) -> int:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    return int(round(dt.timestamp() * 1000))


def _is_money(key: str, parent: str) -> bool:
    return (
        key in _MONEY_KEYS
        or key.endswith("_cost_per_hour")
        or (parent == "cost_projections" and key in _PROJECTION_KEYS)
    )


def _convert(value: Any, spec: VariantSpec, key: str = "", parent: str = "") -> Any:
    """Recursively apply the value- and key-level variants to a canonical JSON value."""
    if isinstance(value, dict):
        data_map = key in _DATA_MAPS
        out: dict[str, Any] = {}
        for k, v in value.items():
            new_v = v if data_map else _convert(v, spec, k, key)
            out[snake_to_camel(k) if spec.camel and not data_map else k] = new_v
        return out
    if isinstance(value, list):
        return [_convert(item, spec, key, parent) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        if spec.epoch_ms and _ISO.match(value):
            return _epoch_ms(value)
        if spec.money_numbers and not spec.string_numbers and _is_money(key, parent):
            try:
                number = float(value)
            except ValueError:
                return value
            return int(number) if number.is_integer() and "." not in value else number
        return value
    if isinstance(value, int | float) and spec.string_numbers:
        return repr(value) if isinstance(value, float) else str(value)
    return value


def _drop_optional(doc: dict[str, Any], spec: VariantSpec) -> dict[str, Any]:
    """Remove the optional parts the lossy variants select (works on a copy)."""
    doc = dict(doc)
    metrics = doc.get("metrics")
    if spec.no_stopped_metrics and doc.get("status") == "stopped":
        doc.pop("metrics", None)
        metrics = None
    if isinstance(metrics, dict) and (spec.no_gpus or spec.empty_points):
        metrics = dict(metrics)
        if spec.no_gpus and isinstance(metrics.get("current"), dict):
            metrics["current"] = {k: v for k, v in metrics["current"].items() if k != "gpus"}
        historical = metrics.get("historical")
        if isinstance(historical, dict):
            points = historical.get("data_points") or []
            if spec.empty_points:
                points = []
            elif spec.no_gpus:
                points = [{k: v for k, v in p.items() if k != "gpus"} for p in points]
            metrics["historical"] = {**historical, "data_points": points}
        doc["metrics"] = metrics
    if spec.no_breakdown and isinstance(doc.get("cost"), dict):
        doc["cost"] = {k: v for k, v in doc["cost"].items() if k != "cost_breakdown"}
    return doc


def _shard(cluster_id: str) -> int:
    return int(unit_hash("shard", cluster_id) * 64)


def _add_summary_extras(item: dict[str, Any], canonical: dict[str, Any]) -> dict[str, Any]:
    cid = str(canonical.get("id", ""))
    return {
        **item,
        "containerDiskSize": 50 + 10 * (_shard(cid) % 8),
        "volumeSize": canonical.get("storage_gb"),
        "x_internal": {"shard": _shard(cid), "scheduler": "v3"},
    }


def _add_detail_extras(
    doc: dict[str, Any], canonical: dict[str, Any], camel: bool
) -> dict[str, Any]:
    cid = str(canonical.get("id", ""))
    doc = {
        **doc,
        "containerDiskSize": 50 + 10 * (_shard(cid) % 8),
        "x_internal": {"shard": _shard(cid), "placement": {"rack": f"r{_shard(cid) % 7}"}},
    }
    metrics_key = "metrics"
    metrics = doc.get(metrics_key)
    if isinstance(metrics, dict):
        historical = metrics.get("historical")
        points_key = "dataPoints" if camel else "data_points"
        if isinstance(historical, dict) and isinstance(historical.get(points_key), list):
            points = [
                {**p, "x_sample_count": 60} if isinstance(p, dict) else p
                for p in historical[points_key]
            ]
            metrics = {
                **metrics,
                "historical": {**historical, points_key: points},
                "x_collector": "dcgm-exporter",
            }
            doc[metrics_key] = metrics
    return doc


def apply_detail(canonical: dict[str, Any], spec: VariantSpec) -> Any:
    """The variant form of one canonical ClusterDetail, ready for `json.dumps`."""
    flags = spec.resolve(str(canonical.get("id", "")))
    doc = _drop_optional(canonical, flags) if flags.lossy else canonical
    if flags.converts:  # a full walk costs more than encoding: only when something changes
        doc = _convert(doc, flags)
    if flags.extra_fields:
        doc = _add_detail_extras(doc, canonical, flags.camel)
    return doc if flags.bare else {"success": True, "data": doc}


def apply_summary(canonical: dict[str, Any], spec: VariantSpec) -> dict[str, Any]:
    """The variant form of one canonical ClusterSummary (item-level flags only)."""
    flags = spec.resolve(str(canonical.get("id", "")))
    item = _convert(canonical, flags) if flags.converts else canonical
    if flags.extra_fields:
        item = _add_summary_extras(item, canonical)
    return item


def apply_list(
    items: list[dict[str, Any]], pagination: dict[str, Any], spec: VariantSpec, page_key: str
) -> Any:
    """A list page: items in their variant form inside the wrapper, or a bare array.

    With `mixed`, the envelope (bare or wrapped, key case) is drawn per page from `page_key`.
    """
    envelope = spec.resolve(page_key)
    converted = [apply_summary(item, spec) for item in items]
    if envelope.bare:
        return converted
    # Pagination stays numeric: a client must find its way through the pages in every variant.
    body_pagination = {snake_to_camel(k) if envelope.camel else k: v for k, v in pagination.items()}
    return {"success": True, "data": {"clusters": converted, "pagination": body_pagination}}


def variant_field_names() -> list[str]:
    """The boolean flags of `VariantSpec` (for help texts and tests)."""
    return [f.name for f in fields(VariantSpec) if f.type in ("bool", bool)]
