"""The contract's checks (pipeline/validate.py) and the normalizer's bounds, unit by unit."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from pipeline.normalize import (
    MAX_NESTING,
    NormalizedDetail,
    NormalizeError,
    check_nesting,
    normalize_detail,
    parse_json,
)
from pipeline.validate import (
    ContractError,
    TimeGuard,
    cluster_id_problem,
    provider_clock,
    validate_detail,
)
from tests.shared import api_example

BASE = json.loads(api_example("cluster_detail.json").read_bytes())
AT = datetime(2026, 11, 20, 3, tzinfo=UTC)


def _detail(change=None, *, fast: bool = True):
    doc = copy.deepcopy(BASE)
    if change is not None:
        change(doc["data"])
    text = json.dumps(doc)
    # floats take the points' fast path (whole columns); Decimals the point-by-point one
    return normalize_detail(json.loads(text) if fast else parse_json(text))


@pytest.mark.parametrize("cid", ["cls_1", "a:b", "A-Z.0~9", "x@y"])
def test_plain_path_segments_are_cluster_ids(cid):
    assert cluster_id_problem(cid) is None


@pytest.mark.parametrize("cid", [".", "..", "a/b", "a%2Fb", "a\x00", "a b", "é", "", "x" * 257])
def test_anything_else_is_not_a_cluster_id(cid):
    assert cluster_id_problem(cid)


def test_the_contract_example_passes_and_a_lower_case_currency_is_repaired():
    detail = _detail(lambda d: d["cost"].update(currency=" usd"))
    validate_detail(detail)
    assert detail.currency == "USD"
    assert {
        r["currency"] for t in ("cluster_snapshots", "metric_points") for r in detail.rows(t)
    } == {"USD"}


@pytest.mark.parametrize("fast", [True, False], ids=["columns", "dicts"])
@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            lambda d: d["metrics"]["historical"]["data_points"][1].update(gpu_utilization=100.5),
            "metrics.historical.data_points[1].gpu_utilization: 100.5 is above 100",
        ),
        (
            lambda d: d["metrics"]["historical"]["data_points"][2]["gpus"][1].update(
                utilization=-0.5
            ),
            "metrics.historical.data_points[2].gpus[1].utilization: negative value -0.5",
        ),
        (
            lambda d: d["metrics"]["historical"]["data_points"][0].update(cost="-6.90"),
            "metrics.historical.data_points[0].cost: negative amount -6.90",
        ),
        (
            lambda d: d["metrics"]["historical"]["data_points"][0]["gpus"][0].update(
                power_draw_w=-1.0
            ),
            "metrics.historical.data_points[0].gpus[0].power_draw_w: negative value -1.0",
        ),
    ],
)
def test_bulk_values_outside_the_contract_are_named_by_both_paths(change, named, fast):
    detail = _detail(change, fast=fast)
    with pytest.raises(ContractError) as caught:
        validate_detail(detail)
    assert str(caught.value) == named


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d["cost"].update(currency="<b>"), "cost.currency: expected an ISO 4217 code"),
        (lambda d: d["cost"].pop("currency"), "cost.currency: missing"),
        (lambda d: d["cost"].update(currency=None), "cost.currency: missing"),
        (lambda d: d["cost"].update(current_hourly_rate="-1"), "cost.current_hourly_rate"),
        (
            lambda d: d["cost"]["cost_projections"].update(daily="1000000000000"),
            "cost.cost_projections.daily: amount 1000000000000 is out of range",
        ),
        (lambda d: d["configuration"].update(gpu_count=-2), "configuration.gpu_count"),
        (lambda d: d["metrics"].update(interval_seconds=0), "metrics.interval_seconds"),
        (
            lambda d: d["metrics"]["current"]["gpus"][0].update(utilization=101),
            "metrics.current.gpus[0].utilization",
        ),
    ],
)
def test_the_rest_of_the_detail_is_checked_too(change, named):
    detail = _detail(change)
    with pytest.raises(ContractError, match=named.replace("[", r"\[").replace("]", r"\]")):
        validate_detail(detail)


def test_buckets_outside_the_window_before_the_snapshot_are_refused():
    def old_bucket(d):
        d["metrics"]["historical"]["data_points"][1]["timestamp"] = "2026-10-01T00:00:00Z"

    detail = _detail(old_bucket)
    with pytest.raises(ContractError, match=r"data_points\[1\].timestamp: bucket 2026-10-01"):
        validate_detail(detail)


@pytest.mark.parametrize(
    "sent", ["9999-12-31T00:00:00Z", "1969-12-31T23:59:59Z", -1, 4_102_444_800_000, "1999-12-31"]
)
def test_absurd_timestamps_are_refused_by_the_normalizer(sent):
    doc = copy.deepcopy(BASE)
    doc["data"]["created_at"] = sent
    with pytest.raises(NormalizeError, match="created_at: timestamp .* is not plausible"):
        normalize_detail(parse_json(json.dumps(doc)))


def test_nesting_is_bounded_without_recursion():
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(NormalizeError, match=f"nested deeper than {MAX_NESTING}"):
        parse_json(deep)
    check_nesting(json.loads("[" * MAX_NESTING + "]" * MAX_NESTING))
    with pytest.raises(NormalizeError):
        check_nesting(json.loads("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1)))


def _depth(node: object) -> int:
    # The reference: containers counted by recursion (the shapes below are shallow enough).
    if isinstance(node, dict):
        return 1 + max(map(_depth, node.values()), default=0)
    if isinstance(node, list):
        return 1 + max(map(_depth, node), default=0)
    return 0


def _nest(depth: int, kind: str) -> object:
    node: object = {"leaf": 1.5, "s": "x"} if kind == "dict" else [1.5, "x"]
    for i in range(depth - 1):
        node = {"k": node, "n": i} if (i + (kind == "dict")) % 2 else [i, node]
    return node


@pytest.mark.parametrize("depth", [MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1])
@pytest.mark.parametrize("kind", ["dict", "list"])
@pytest.mark.parametrize("via", ["bare", "among scalar-only records", "parsed"])
def test_nesting_is_counted_exactly_whatever_carries_the_deep_branch(depth, kind, via):
    # check_nesting skips the dicts the garbage collector does not track (they hold no
    # container): a deep branch hidden among thousands of scalar-only records still counts.
    deep = _nest(depth, kind)
    doc: object = deep
    if via != "bare":
        records: list[object] = [{"gpu_id": str(g), "u": 1.0} for g in range(2000)]
        records[1234] = {"gpu_id": "x", "u": deep}
        doc = {"points": [{"t": 1, "gpus": records}]}
    if via == "parsed":
        doc = json.loads(json.dumps(doc))
    if _depth(doc) > MAX_NESTING:
        with pytest.raises(NormalizeError, match=f"nested deeper than {MAX_NESTING}"):
            check_nesting(doc)
    else:
        check_nesting(doc)


def _at(instant: datetime, *, current: bool = True) -> NormalizedDetail:
    if current:
        return normalize_detail({"id": "c", "metrics": {"current": {"timestamp": instant}}})
    return normalize_detail({"id": "c", "updated_at": instant})


def test_the_time_guard_refuses_an_instant_ahead_of_the_providers_date():
    guard = TimeGuard(now=AT + timedelta(days=30))
    guard.check(_at(AT), "Fri, 20 Nov 2026 03:00:00 GMT")
    with pytest.raises(ContractError, match="ahead of the provider's clock"):
        guard.check(_at(AT + timedelta(hours=2)), "Fri, 20 Nov 2026 03:00:00 GMT")


def test_a_date_header_ahead_of_the_local_clock_is_not_trusted():
    clock, what = provider_clock("Wed, 01 Jan 2031 00:00:00 GMT", AT)
    assert clock == AT and "local clock" in what
    clock, _ = provider_clock("not a date", AT)
    assert clock == AT
    clock, what = provider_clock("Thu, 19 Nov 2026 03:00:00 GMT", AT)
    assert clock == AT - timedelta(days=1) and "provider's clock" in what


def test_the_time_guard_refuses_an_instant_far_from_its_peers_either_way():
    guard = TimeGuard(now=AT + timedelta(days=3000))
    guard.seed([AT, AT, AT + timedelta(minutes=5)])
    guard.check(_at(AT + timedelta(hours=20)), None)
    with pytest.raises(ContractError, match="after the other clusters' snapshot times"):
        guard.check(_at(AT + timedelta(days=2)), None)
    with pytest.raises(ContractError, match="before the other clusters' snapshot times"):
        guard.check(_at(AT - timedelta(days=400)), None)
    # `updated_at` (no metrics) may be old: a stopped cluster changes rarely.
    guard.check(_at(AT - timedelta(days=400), current=False), None)


def test_money_stays_decimal_through_validation():
    detail = _detail()
    validate_detail(detail)
    assert detail.columns["cluster_snapshots"]["hourly_rate"] == [Decimal("6.9000")]


def test_a_run_on_a_virtual_clock_ahead_of_the_providers_date_is_judged_by_its_peers():
    date = "Fri, 20 Nov 2026 03:00:00 GMT"
    guard = TimeGuard(now=AT)
    ahead = AT + timedelta(days=14)  # the simulator's virtual night, its Date the real clock
    group = [(_at(ahead), date) for _ in range(5)] + [(_at(YEAR_2031), date)]
    errors = guard.check_many(group)
    assert errors[:5] == [None] * 5
    assert errors[5] is not None and "after the other clusters' snapshot times" in str(errors[5])


def test_a_whole_fleet_years_ahead_of_the_providers_date_fails():
    date = "Fri, 20 Nov 2026 03:00:00 GMT"
    errors = TimeGuard(now=AT).check_many([(_at(YEAR_2031), date) for _ in range(5)])
    assert all(e is not None and "ahead of the provider's clock" in str(e) for e in errors)


YEAR_2031 = datetime(2031, 1, 1, tzinfo=UTC)


def test_a_cluster_without_metrics_is_vouched_for_by_the_runs_peers_on_a_virtual_clock():
    date = "Fri, 20 Nov 2026 03:00:00 GMT"
    ahead = AT + timedelta(days=14)
    group = [(_at(ahead), date) for _ in range(3)]
    group += [
        (_at(ahead, current=False), date),
        (_at(ahead + timedelta(days=3), current=False), date),
    ]
    errors = TimeGuard(now=AT).check_many(group)
    assert errors[:4] == [None] * 4
    assert errors[4] is not None and "ahead of the provider's clock" in str(errors[4])
