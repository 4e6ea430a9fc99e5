"""Property-based: generated hostile documents through the per-cluster path (parse, redact,
normalize, validate, time check, rows): nothing but a per-cluster failure ever comes out.

The documented per-cluster exception is `pipeline.normalize.NormalizeError` (its subclass
`pipeline.validate.ContractError` for values outside the contract); `ApiClient.fetch_detail`
turns it into a "failed" result, and `LoadBatch.add_detail` turns a `LoadError` into one.
"""

from __future__ import annotations

import copy
import json
import math
from decimal import Decimal
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.client import ApiClient
from pipeline.normalize import NormalizedDetail, NormalizeError, normalize_detail, parse_json
from pipeline.store import LoadBatch
from pipeline.tables import TABLES
from pipeline.validate import MAX_AMOUNT, TimeGuard, validate_detail
from tests.shared import api_example

BASE_DOC = json.loads(api_example("cluster_detail.json").read_bytes())
CLUSTER = BASE_DOC["data"]["id"]
# No example database in the checkout; slow machines must not fail a property.
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_HOSTILE_TEXT = st.sampled_from(
    [
        "NaN",
        "-Infinity",
        "1e400",
        "-1",
        "-0.01",
        "101",
        "1E+15",
        "9999-12-31T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "2031-01-01T00:00:00Z",
        "<b>",
        "usd",
        "",
        "../..",
        "\x00",
        "\ud800",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    _HOSTILE_TEXT,
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc[:3]):  # a few points are enough: the rest are alike
            out += _paths(value, (*prefix, i))
    return out


PATHS = [p for p in _paths(BASE_DOC) if p]


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


@st.composite
def hostile_documents(draw: st.DrawFn) -> bytes:
    """The contract example with a few fields replaced by hostile values, or nested deep."""
    doc = copy.deepcopy(BASE_DOC)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(PATHS))
        try:
            _set(doc, path, draw(_JSON))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed the parent
    deep = draw(st.booleans()) and isinstance(doc.get("data"), dict)
    if deep:
        doc["data"]["description"] = "__DEEP__"
    text = json.dumps(doc, allow_nan=True)
    if deep:
        depth = draw(st.sampled_from([10, 70, 2000, 100_000]))
        text = text.replace('"__DEEP__"', "[" * depth + "]" * depth)
    return text.encode("utf-8", "surrogatepass")


def _client(body: list[bytes]) -> ApiClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=body[0], headers={"Date": "Fri, 20 Nov 2026 03:00:00 GMT"}
        )

    return ApiClient(
        "http://127.0.0.1:9/v1", "property-key", transport=httpx.MockTransport(handler)
    )


def _assert_in_contract(detail: NormalizedDetail) -> None:
    money = []
    for table in TABLES.values():
        for column in table.columns:
            if column.is_money and column.name in detail.columns[table.name]:
                money += detail.columns[table.name][column.name]
    for amount in money:
        if isinstance(amount, Decimal):
            assert amount.is_finite() and 0 <= amount < MAX_AMOUNT, amount
    points = detail.columns["metric_points"]
    for name in ("gpu_utilization", "cpu_utilization"):
        for value in points[name]:
            if value is not None:
                assert math.isfinite(value) and 0 <= value <= 100, (name, value)
    for value in detail.columns["gpu_metric_points"]["utilization"].to_pylist():
        if value is not None:
            assert 0 <= value <= 100, value
    if any(a is not None for a in money):
        currency = detail.currency
        assert isinstance(currency, str) and len(currency) == 3 and currency.isupper()


@PROPERTY
@given(body=hostile_documents())
def test_a_hostile_detail_is_a_per_cluster_outcome_never_an_exception(body: bytes) -> None:
    holder = [body]
    with _client(holder) as client:
        result = client.fetch_detail(CLUSTER)
    assert result.outcome in ("ok", "failed")
    if result.outcome == "failed":
        assert result.reason
        return
    assert result.detail is not None
    _assert_in_contract(result.detail)
    guard = TimeGuard()
    try:
        guard.check(result.detail, result.provider_date)
    except NormalizeError:
        return
    batch = LoadBatch("run-1")
    batch.add_detail(result.detail, raw_body=result.raw_body)
    assert len(batch) == 1  # stored or recorded as a failure, never raised


@PROPERTY
@given(doc=_JSON)
def test_any_json_document_normalizes_or_fails_with_normalize_error(doc: Any) -> None:
    body = json.dumps({"success": True, "data": doc}, allow_nan=True).encode(
        "utf-8", "surrogatepass"
    )
    try:
        detail = normalize_detail(parse_json(body))
        validate_detail(detail)
    except NormalizeError:
        return
    _assert_in_contract(detail)
