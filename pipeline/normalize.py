"""Any contract variant of a provider response -> the rows of the snapshot tables.

`normalize_detail(doc)` is the one path from a parsed (and redacted) ClusterDetail to what the
store writes: a `NormalizedDetail`, which holds, per `snap.*` table of `pipeline/tables.py`, the
columns the document gives (Python values of the columns' types), and what the checks of
`validate.py` and the snapshot's time checks need (the snapshot instant and where it came from,
the metrics window, the interval as sent, the document path of each row). The store only adds
the run's id and writes them.

Whatever variant the provider sent:

- the `{"success": true, "data": X}` wrapper or a bare `X`;
- snake_case or camelCase keys (`gpuCostPerHour` -> `gpu_cost_per_hour`);
- numbers as JSON numbers or as strings; money -> `Decimal` straight from the JSON text (parse with
  `parse_json`, which never lets "6.9" become a binary float), utilization, memory, temperature and
  power -> `float`, counts -> `int`, `gpu_id` -> `str`;
- timestamps as ISO 8601 or integer epoch milliseconds -> aware UTC `datetime`;
- missing optional parts give NULL columns or no rows; unknown fields are dropped (they stay in
  the raw body).

A field of the wrong type raises `NormalizeError`, which names the path of the field
(`metrics.historical.data_points[3].timestamp`); the parts the store does not keep (network,
logs, environment variables) are type-checked all the same. The schema below lists what the
document may hold; every key ending in `_cost_per_hour` in `cost_breakdown` is a cost
component, because the provider may add components.

The bulk of a detail (`metrics.historical.data_points`: 168 hourly points x N GPUs) has a fast
path for its usual shape (snake_case keys, finite floats, distinct buckets and GPU ids): whole
columns are checked at once. Anything unusual takes the general path, point by point, which
gives the same columns or the error naming the field.
"""

from __future__ import annotations

import gc
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from itertools import chain, compress, repeat
from operator import is_, itemgetter
from typing import Any

import pyarrow as pa

from pipeline.errors import ApiError
from pipeline.tables import DERIVED, HORIZON_HOURS, RUN, TABLES, relative

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Timestamps outside these are absurd for a GPU cloud (a year 9999 or a pre-1970 value makes
# the build and the report overflow): refused at ingestion, naming the field.
PLAUSIBLE_FROM = datetime(2000, 1, 1, tzinfo=UTC)
PLAUSIBLE_UNTIL = datetime(2100, 1, 1, tzinfo=UTC)
# The contract's deepest path is 7 levels (data.metrics.historical.data_points[i].gpus[j]);
# anything much deeper is hostile, and would exhaust the recursion of any walk over it.
MAX_NESTING = 64


class NormalizeError(ApiError):
    """A response does not follow the contract; `path` names the offending field."""

    def __init__(self, reason: str, path: str = "", *, body: bytes | None = None):
        self.reason = reason
        self._segments: list[str] = [path] if path else []
        super().__init__(self._message(), body=body)

    @property
    def path(self) -> str:
        """Where in the document: `metrics.historical.data_points[3].timestamp`."""
        out = ""
        for seg in reversed(self._segments):
            out += seg if seg.startswith("[") or not out else "." + seg
        return out

    def _message(self) -> str:
        path = self.path
        return f"{path}: {self.reason}" if path else self.reason

    def _prepend(self, segment: str) -> None:
        # Segments are collected innermost first while the error travels out of the walk, so
        # the path costs nothing when nothing is wrong.
        self._segments.append(segment)
        self.args = (self._message(),)

    def __str__(self) -> str:
        return self._message()


class InexactMoneyError(NormalizeError):
    """`normalize_detail(..., exact_money=True)` met an amount parsed as a binary float: parse
    the body again with `parse_json` (Decimal) and normalize that."""


# --------------------------------------------------------------------------- JSON helpers


def parse_json(body: bytes | str) -> Any:
    """Parse a response body; JSON numbers with a fraction become `Decimal`, never a float.

    A document nested deeper than `MAX_NESTING` raises `NormalizeError`, like invalid JSON.
    """
    try:
        doc = json.loads(body, parse_float=Decimal)
    except RecursionError:
        raise NormalizeError(f"nested deeper than {MAX_NESTING} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise NormalizeError(f"invalid JSON: {exc}") from None
    check_nesting(doc)
    return doc


def check_nesting(doc: Any, limit: int = MAX_NESTING) -> None:
    """Raise `NormalizeError` when `doc` nests objects and arrays deeper than `limit`.

    Level by level, without recursion (a walk by recursion is what a hostile document would
    break): the containers one level down are picked from the values of this level's by C loops
    (`chain`, `compress`), not by one Python iteration per value. A dict that the garbage
    collector does not track is skipped: CPython tracks a dict as soon as one of its values may
    be a container (`gc.is_tracked`), so an untracked dict holds only scalars (the GPU entries of
    every bucket, most of a detail). Were every dict tracked, they would all be looked into.
    """
    dicts = [doc] if type(doc) is dict else []
    lists = [doc] if type(doc) is list else []
    depth = 1
    while dicts or lists:
        if depth > limit:
            raise NormalizeError(f"nested deeper than {limit} levels")
        holders = compress(dicts, map(gc.is_tracked, dicts))
        values = list(chain(chain.from_iterable(map(dict.values, holders)), *lists))
        types = list(map(type, values))
        kinds = set(types)
        dicts = list(compress(values, map(is_, types, repeat(dict)))) if dict in kinds else []
        lists = list(compress(values, map(is_, types, repeat(list)))) if list in kinds else []
        depth += 1


_MARK = "\ue000"
_MARKED_NUMBER = re.compile(r'"\\ue000([-+0-9.eE]+)\\ue000"')


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def dump_json(doc: Any) -> bytes:
    """Compact JSON of a parsed document, `Decimal` written as the JSON number it came from.

    `json` cannot write a Decimal as a number, so each is written as a marked string and the
    marks are taken off afterwards. When the document itself holds the mark character (the
    count of marks tells), Decimals are written as strings instead: still a contract variant.
    """
    count = 0

    def mark(value: Any) -> str:
        nonlocal count
        if isinstance(value, Decimal):
            count += 1
            return f"{_MARK}{value}{_MARK}"
        if isinstance(value, datetime):
            return _iso(value)
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    text = json.dumps(doc, separators=(",", ":"), default=mark)
    if count:
        if text.count("\\ue000") != 2 * count:
            plain = json.dumps(
                doc,
                separators=(",", ":"),
                default=lambda v: _iso(v) if isinstance(v, datetime) else str(v),
            )
            return plain.encode()
        text = _MARKED_NUMBER.sub(r"\1", text)
    return text.encode()


# --------------------------------------------------------------------------- keys

_SNAKE_1 = re.compile(r"([A-Z]+)([A-Z][a-z])")
_SNAKE_2 = re.compile(r"([a-z0-9])([A-Z])")
_SNAKE_CACHE: dict[str, str] = {}


def to_snake(key: str) -> str:
    """`gpuCostPerHour` -> `gpu_cost_per_hour`, `memoryGB` -> `memory_gb`; snake stays snake."""
    out = _SNAKE_CACHE.get(key)
    if out is None:
        out = _SNAKE_2.sub(r"\1_\2", _SNAKE_1.sub(r"\1_\2", key)).replace("-", "_").lower()
        if len(_SNAKE_CACHE) < 10_000:
            _SNAKE_CACHE[key] = out
    return out


# --------------------------------------------------------------------------- scalars

Conv = Callable[[Any], Any]


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number"
    )


def _str(value: Any) -> Any:
    if value is None or type(value) is str:
        return value
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return str(value)
    raise NormalizeError(f"expected a string, got {_type_name(value)} {value!r:.40}")


def _int(value: Any, *, exact: bool = False) -> Any:
    t = type(value)
    if t is int or value is None:
        return value
    try:
        if t is Decimal or t is str:
            d = Decimal(value.strip()) if t is str else value
            if d.is_finite() and d == d.to_integral_value():
                return int(d)
        elif t is float and value.is_integer():
            if abs(value) >= 2**53 and exact:
                # A fast parser turns integers beyond 64 bits into floats: parse exactly.
                raise InexactMoneyError("an integer too large for a binary float")
            return int(value)
    except (InvalidOperation, ValueError):
        pass
    raise NormalizeError(f"expected an integer, got {_type_name(value)} {value!r:.40}")


def _float(value: Any) -> Any:
    t = type(value)
    if t is Decimal or t is int:
        out = float(value)
    elif value is None:
        return None
    elif t is float:
        out = value
    elif t is str:
        try:
            out = float(value)
        except ValueError:
            raise NormalizeError(f"expected a number, got string {value!r:.40}") from None
    else:
        raise NormalizeError(f"expected a number, got {_type_name(value)} {value!r:.40}")
    if not math.isfinite(out):
        raise NormalizeError(f"expected a finite number, got {value!r:.40}")
    return out


def _int_exact(value: Any) -> Any:
    return _int(value, exact=True)


def _money(value: Any, *, exact: bool = False) -> Any:
    t = type(value)
    if t is Decimal:
        out = value
    elif value is None:
        return None
    elif t is str:
        try:
            out = Decimal(value.strip())
        except InvalidOperation:
            raise NormalizeError(f"expected an amount, got string {value!r:.40}") from None
    elif t is int:
        out = Decimal(value)
    elif t is float:
        if exact:
            raise InexactMoneyError("an amount arrived as a binary float")
        # Only when a caller hands in a document parsed without parse_json: the shortest repr
        # is the decimal text the provider most likely sent.
        out = Decimal(repr(value))
    else:
        raise NormalizeError(f"expected an amount, got {_type_name(value)} {value!r:.40}")
    if not out.is_finite():
        raise NormalizeError(f"expected a finite amount, got {value!r:.40}")
    return out


def _money_exact(value: Any) -> Any:
    return _money(value, exact=True)


def _plausible(dt: datetime, sent: Any) -> datetime:
    if not PLAUSIBLE_FROM <= dt < PLAUSIBLE_UNTIL:
        raise NormalizeError(
            f"timestamp {sent!r:.40} is not plausible (expected {PLAUSIBLE_FROM.year} to "
            f"{PLAUSIBLE_UNTIL.year - 1})"
        )
    return dt


def _from_epoch_ms(ms: int) -> datetime:
    try:
        return _plausible(_EPOCH + timedelta(milliseconds=ms), ms)
    except OverflowError:
        raise NormalizeError(f"epoch milliseconds out of range: {ms}") from None


def _timestamp(value: Any) -> Any:
    t = type(value)
    if t is str:
        text = value.strip()
        if text.isdigit():
            return _from_epoch_ms(int(text))
        try:
            dt = datetime.fromisoformat(text)
            dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
        except (ValueError, OverflowError):
            raise NormalizeError(f"expected an ISO 8601 timestamp, got {value!r:.40}") from None
        return _plausible(dt, value)
    if t is int:
        return _from_epoch_ms(value)
    if value is None:
        return None
    if t is datetime:
        # Never from JSON: a document built in Python (tests, tools) with datetimes already.
        dt = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return _plausible(dt, value)
    if t is Decimal and value == value.to_integral_value():
        return _from_epoch_ms(int(value))
    raise NormalizeError(f"expected a timestamp, got {_type_name(value)} {value!r:.40}")


def _generic(value: Any) -> Any:
    """A part whose shape the contract leaves open: keys snake_cased, values as parsed."""
    if isinstance(value, dict):
        return {to_snake(k): _generic(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_generic(v) for v in value]
    return value


def _verbatim_strings(value: Any) -> Any:
    """`environment.variables`: keys are names (kept as sent), values are strings."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise NormalizeError(f"expected an object, got {_type_name(value)}")
    out = {}
    for k, v in value.items():
        try:
            out[k] = _str(v) if not isinstance(v, dict | list) else json.dumps(v, default=str)
        except NormalizeError as exc:
            exc._prepend(k)
            raise
    return out


# --------------------------------------------------------------------------- structures


@dataclass
class _Obj:
    fields: dict[str, Conv]
    required: tuple[str, ...] = ()
    # Keys kept beyond `fields` when they match: cost components the provider may add.
    extra_suffix: str | None = None
    extra_conv: Conv | None = None
    # Sent key -> (canonical name, converter), or None for a key that is dropped; filled as keys
    # are met, so each distinct key is snake_cased and looked up once per process.
    _resolved: dict[str, tuple[str, Conv] | None] = field(default_factory=dict, repr=False)

    def _resolve(self, key: str) -> tuple[str, Conv] | None:
        name = to_snake(key)
        conv = self.fields.get(name)
        if conv is None and self.extra_suffix and name.endswith(self.extra_suffix):
            conv = self.extra_conv
        entry = (name, conv) if conv is not None else None
        if len(self._resolved) < 1_000:
            self._resolved[key] = entry
        return entry

    def __call__(self, value: Any) -> Any:
        if value is None:
            return None
        if type(value) is not dict:
            raise NormalizeError(f"expected an object, got {_type_name(value)}")
        out: dict[str, Any] = {}
        resolved = self._resolved
        for key, item in value.items():
            entry = resolved.get(key, False)
            if entry is False:
                entry = self._resolve(key)
            if entry is None:
                continue
            name, conv = entry  # type: ignore[misc]
            # The common cases inline: most values of a detail are floats already.
            if conv is _float and type(item) is float and math.isfinite(item):
                out[name] = item
                continue
            if conv is _str and type(item) is str:
                out[name] = item
                continue
            try:
                out[name] = conv(item)
            except NormalizeError as exc:
                exc._prepend(name)
                raise
        for name in self.required:
            if out.get(name) is None:
                raise NormalizeError("required field is missing", name)
        return out


@dataclass
class _List:
    item: Conv
    required: bool = field(default=False)

    def __call__(self, value: Any) -> Any:
        if value is None:
            return None
        if type(value) is not list:
            raise NormalizeError(f"expected an array, got {_type_name(value)}")
        out = []
        item = self.item
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except NormalizeError as exc:
                exc._prepend(f"[{i}]")
                raise
        return out


_HEALTH = _Obj(
    {k: _str for k in ("gpu_health", "storage_health", "network_health", "docker_health")}
)

_GPU_CURRENT = _Obj(
    {
        "gpu_id": _str,
        "utilization": _float,
        "memory_used_gb": _float,
        "memory_total_gb": _float,
        "temperature_c": _float,
        "power_draw_w": _float,
    },
    required=("gpu_id",),
)
_GPU_POINT = _Obj(
    {"gpu_id": _str, "utilization": _float, "memory_used_gb": _float, "power_draw_w": _float},
    required=("gpu_id",),
)
_UTILIZATIONS = (
    "gpu_utilization",
    "gpu_memory_utilization",
    "cpu_utilization",
    "memory_utilization",
)
_GPU_VALUES = ("utilization", "memory_used_gb", "power_draw_w")
# The Arrow types of the per-GPU columns, which a detail gives as Arrow arrays.
_GPU_ARROW = {c.name: c.arrow_type for c in TABLES["gpu_metric_points"].columns}


def _data_point(money: Conv) -> _Obj:
    return _Obj(
        {
            "timestamp": _timestamp,
            "status": _str,
            **dict.fromkeys(_UTILIZATIONS, _float),
            "cost": money,
            "gpus": _List(_GPU_POINT),
        },
        required=("timestamp",),
    )


@dataclass
class _Points:
    """`metrics.historical.data_points` as columns (the store's metric_points and
    gpu_metric_points), not as dicts. `index[r]` is the position in the document of the point
    of row r (a bucket sent twice keeps its later entry); `problem` says why the points cannot
    be stored (a GPU id twice in one point) while they are well-formed."""

    bucket_at: list[datetime]
    status: list[str | None]
    gpu_utilization: list[float | None]
    gpu_memory_utilization: list[float | None]
    cpu_utilization: list[float | None]
    memory_utilization: list[float | None]
    cost: list[Decimal | None]
    gpu_series_count: list[int | None]
    index: list[int]
    gpu_id: list[str]
    utilization: list[float | None]
    memory_used_gb: list[float | None]
    power_draw_w: list[float | None]
    problem: str | None = None


_POINT_KEYS = frozenset(("timestamp", "status", *_UTILIZATIONS, "cost", "gpus"))
_GPU_KEYS = frozenset(("gpu_id", *_GPU_VALUES))
_FLOAT_TYPES = frozenset({float, type(None)})
_TEXT_TYPES = frozenset({str, type(None)})
_TS_CACHE: dict[str, datetime] = {}


def _clean_floats(column: list[Any]) -> bool:
    """True when every value is a finite float or None (checked in C, not value by value)."""
    types = set(map(type, column))
    if not _FLOAT_TYPES.issuperset(types):
        return False
    values = column if type(None) not in types else [v for v in column if v is not None]
    # An infinity or NaN makes the sum one (an overflow too: then the general path decides).
    return math.isfinite(sum(values))


def _cached_timestamp(value: Any) -> Any:
    # Every cluster of a fleet reports the same hourly buckets: parse each text once.
    if type(value) is str:
        out = _TS_CACHE.get(value)
        if out is None:
            out = _timestamp(value)
            if len(_TS_CACHE) >= 50_000:
                _TS_CACHE.clear()
            _TS_CACHE[value] = out
        return out
    return _timestamp(value)


def _shapes_within(items: list[Any], allowed: frozenset[str], required: str) -> bool:
    """Every item is a dict whose keys are all `allowed` and include `required`."""
    if frozenset(map(type, items)) != frozenset({dict}):
        return False
    return all(allowed.issuperset(shape) and required in shape for shape in set(map(tuple, items)))


_GPU_ID = itemgetter("gpu_id")
_TIMESTAMP = itemgetter("timestamp")
_GPU_LISTS = frozenset({list, type(None)})


def _distinct_per_point(gpu_ids: list[str], counts: list[int | None]) -> list[str] | None:
    """`gpu_ids` when no GPU id is twice within one point, else None. Usually every point lists
    the same GPUs in the same order: then one comparison of lists (in C) proves it for all
    points, and the ids come back as repeats of the first point's strings (equal values, but
    8 string objects instead of 1,344 for 8 GPUs x 168 buckets: the details a batch holds
    while it fills are that much smaller)."""
    sizes = set(counts)
    if len(sizes) == 1 and None not in sizes and counts:
        size = counts[0] or 0
        first = gpu_ids[:size]
        shared = first * len(counts)
        if len(set(first)) == size and gpu_ids == shared:
            return shared
    gpu_point = chain.from_iterable(repeat(i, c) for i, c in enumerate(counts) if c)
    return gpu_ids if len(set(zip(gpu_point, gpu_ids, strict=True))) == len(gpu_ids) else None


def _points_fast(points: list[Any], money: Conv) -> _Points | None:
    """The points as columns, or None when anything is unusual (the general path then converts
    the points one by one, or names the bad field). Columns are read by C loops (`map` over
    `dict.get` or `itemgetter`), not point by point; a KeyError or TypeError from them (a GPU
    entry without a key every other one has, a GPU entry that is not an object) sends the
    caller to the general path too."""
    if not points or not _shapes_within(points, _POINT_KEYS, "timestamp"):
        return None
    stamps = list(map(_TIMESTAMP, points))
    bucket_at: list[Any] = list(map(_TS_CACHE.get, stamps))
    if None in bucket_at:
        bucket_at = list(map(_cached_timestamp, stamps))
    if None in bucket_at or len(set(bucket_at)) != len(bucket_at):
        return None
    status = list(map(dict.get, points, repeat("status")))
    if not _TEXT_TYPES.issuperset(map(type, status)):
        return None
    utilizations = {}
    for name in _UTILIZATIONS:
        column = list(map(dict.get, points, repeat(name)))
        if not _clean_floats(column):
            return None
        utilizations[name] = column
    sent = list(map(dict.get, points, repeat("cost")))
    if _TEXT_TYPES.issuperset(map(type, sent)):
        # Amounts sent as text repeat (a price per hour): each distinct text converted once.
        amounts = {text: money(text) for text in set(sent)}
        cost = [amounts[text] for text in sent]
    else:
        cost = list(map(money, sent))
    lists: list[Any] = list(map(dict.get, points, repeat("gpus")))
    kinds = set(map(type, lists))
    if not _GPU_LISTS.issuperset(kinds):
        return None
    if type(None) in kinds:
        counts: list[int | None] = [None if g is None else len(g) for g in lists]
        flat: list[Any] = list(chain.from_iterable(g for g in lists if g is not None))
    else:
        counts = list(map(len, lists))
        flat = list(chain.from_iterable(lists))
    # Every GPU entry sends every field (the usual case): as many keys as there are names, and
    # each name's column read by `itemgetter` (KeyError when an entry lacks one) proves that
    # every entry has exactly these keys; otherwise their shapes are compared one by one.
    full = True
    if flat:
        if frozenset(map(type, flat)) != frozenset({dict}):
            return None
        full = len(set(map(len, flat))) == 1 and len(flat[0]) == len(_GPU_KEYS)
        if not full and not _shapes_within(flat, _GPU_KEYS, "gpu_id"):
            return None
    gpu_ids = list(map(_GPU_ID, flat))
    if frozenset(map(type, gpu_ids)) - {str}:
        return None
    distinct = _distinct_per_point(gpu_ids, counts)
    if distinct is None:
        return None
    gpu_ids = distinct
    gpu_columns = {}
    for name in _GPU_VALUES:
        column = list(map(itemgetter(name), flat) if full else map(dict.get, flat, repeat(name)))
        if not _clean_floats(column):
            return None
        gpu_columns[name] = column
    return _Points(
        bucket_at=bucket_at,
        status=status,
        cost=cost,
        gpu_series_count=counts,
        index=list(range(len(points))),
        gpu_id=gpu_ids,
        **utilizations,  # type: ignore[arg-type]
        **gpu_columns,  # type: ignore[arg-type]
    )


def _points_general(points: list[dict[str, Any]]) -> _Points:
    """Canonical point dicts (converted by `_data_point`) as columns: a bucket sent twice keeps
    its later entry; a GPU id twice in one point is a problem (not storable), not an error."""
    latest: dict[datetime, int] = {}
    problem = None
    for i, point in enumerate(points):
        if point is None:  # a null point: well-formed JSON, but nothing to store
            problem = problem or f"metrics.historical.data_points[{i}]: not an object"
            continue
        latest[point["timestamp"]] = i
    index = list(latest.values())
    kept = [points[i] for i in index]
    out = _Points(
        bucket_at=list(latest),
        status=[p.get("status") for p in kept],
        cost=[p.get("cost") for p in kept],
        gpu_series_count=[],
        index=index,
        gpu_id=[],
        utilization=[],
        memory_used_gb=[],
        power_draw_w=[],
        problem=problem,
        **{name: [p.get(name) for p in kept] for name in _UTILIZATIONS},
    )
    for i, point in zip(index, kept, strict=True):
        gpus = point.get("gpus")
        if gpus is None:
            out.gpu_series_count.append(None)
            continue
        if None in gpus:
            out.problem = out.problem or (
                f"metrics.historical.data_points[{i}].gpus: an entry without gpu_id"
            )
            gpus = [g for g in gpus if g is not None]
        out.gpu_series_count.append(len(gpus))
        ids = [g["gpu_id"] for g in gpus]
        if len(set(ids)) != len(ids) and out.problem is None:
            out.problem = f"metrics.historical.data_points[{i}].gpus: a gpu_id sent twice"
        out.gpu_id += ids
        out.utilization += [g.get("utilization") for g in gpus]
        out.memory_used_gb += [g.get("memory_used_gb") for g in gpus]
        out.power_draw_w += [g.get("power_draw_w") for g in gpus]
    return out


@dataclass
class _PointsConv:
    """The converter of `data_points`: the fast path for the usual shape, else point by
    point; either way `_Points`."""

    money: Conv

    def __post_init__(self) -> None:
        self.general = _List(_data_point(self.money))

    def __call__(self, value: Any) -> Any:
        if type(value) is list:
            try:
                fast = _points_fast(value, self.money)
            except InexactMoneyError:
                raise
            except (NormalizeError, KeyError, TypeError, ValueError, OverflowError):
                fast = None
            if fast is not None:
                return fast
        converted = self.general(value)
        return None if converted is None else _points_general(converted)


_ALERT = _Obj(
    {
        "alert_id": _str,
        "severity": _str,
        "metric": _str,
        "condition": _str,
        "threshold": _float,
        "current_value": _float,
        "duration": _str,
        "triggered_at": _timestamp,
        "resolved_at": _timestamp,
        "message": _str,
    }
)
_NETWORK = _Obj(
    {
        "private_ip": _str,
        "public_ip": _str,
        "proxy_url": _str,
        "ssh_connection": _Obj(
            {
                "host": _str,
                "port": _int,
                "username": _str,
                "status": _str,
                "connection_string": _str,
                "password": _str,
                "private_key": _str,
            }
        ),
        "port_mappings": _List(
            _Obj(
                {
                    "internal_port": _int,
                    "external_port": _int,
                    "protocol": _str,
                    "description": _str,
                    "url": _str,
                    "status": _str,
                }
            )
        ),
        "security_groups": _List(_str),
        "firewall_rules": _List(_generic),
    }
)


def _detail_spec(*, exact: bool) -> _Obj:
    """The whole ClusterDetail. With `exact`, an amount (or a huge integer) parsed as a binary
    float raises `InexactMoneyError` instead of being converted from the float."""
    money = _money_exact if exact else _money
    integer = _int_exact if exact else _int
    return _Obj(
        {
            "id": _str,
            "name": _str,
            "description": _str,
            "status": _str,
            "created_at": _timestamp,
            "updated_at": _timestamp,
            "status_details": _Obj(
                {"message": _str, "last_status_change": _timestamp, "health_checks": _HEALTH}
            ),
            "configuration": _Obj(
                {
                    "gpu_type": _str,
                    "gpu_count": integer,
                    "cpu_cores": integer,
                    "memory_gb": _float,
                    "storage_gb": _float,
                    "storage_type": _str,
                    "region": _str,
                    "availability_zone": _str,
                }
            ),
            "project_info": _Obj(
                {"project_id": _str, "project_name": _str, "owner_id": _str, "owner_email": _str}
            ),
            "template_info": _Obj(
                {
                    "template_id": _str,
                    "template_name": _str,
                    "template_version": _str,
                    "docker_image": _str,
                }
            ),
            "environment": _Obj({"variables": _verbatim_strings, "cuda_version": _str}),
            "network": _NETWORK,
            "metrics": _Obj(
                {
                    "window": _str,
                    "interval_seconds": integer,
                    "current": _Obj(
                        {
                            "timestamp": _timestamp,
                            **dict.fromkeys(_UTILIZATIONS, _float),
                            "gpus": _List(_GPU_CURRENT),
                        }
                    ),
                    "historical": _Obj({"data_points": _PointsConv(money)}),
                    "alerts": _List(_ALERT),
                }
            ),
            "cost": _Obj(
                {
                    "currency": _str,
                    "current_hourly_rate": money,
                    "cost_breakdown": _Obj(
                        {"total_cost_to_date": money, "window_cost": money},
                        extra_suffix="_cost_per_hour",
                        extra_conv=money,
                    ),
                    "cost_projections": _Obj(
                        {
                            "daily": money,
                            "weekly": money,
                            "monthly": money,
                            "projection_basis": _str,
                        }
                    ),
                }
            ),
            "logs": _List(
                _Obj({"timestamp": _timestamp, "level": _str, "source": _str, "message": _str})
            ),
        },
        required=("id",),
    )


_DETAIL = _detail_spec(exact=False)
_DETAIL_EXACT = _detail_spec(exact=True)


_SUMMARY = _Obj(
    {
        "id": _str,
        "name": _str,
        "description": _str,
        "status": _str,
        "gpu_type": _str,
        "gpu_count": _int,
        "cpu_cores": _int,
        "memory_gb": _float,
        "storage_gb": _float,
        "region": _str,
        "project_id": _str,
        "template_id": _str,
        "hourly_rate": _money,
        "created_at": _timestamp,
        "updated_at": _timestamp,
    },
    required=("id",),
)
_PAGINATION = _Obj(
    {"page": _int, "limit": _int, "total": _int, "total_pages": _int, "has_next": lambda v: v}
)


# --------------------------------------------------------------------------- public


def unwrap(doc: Any) -> Any:
    """The payload of a `{"success": true, "data": X}` wrapper, or `doc` itself when bare."""
    if isinstance(doc, dict) and "data" in doc and ("success" in doc or len(doc) == 1):
        if doc.get("success") is False:
            message = doc.get("message") or doc.get("error") or "no message"
            raise NormalizeError(f"provider answered success=false: {message!s:.200}")
        return doc["data"]
    return doc


# The columns every row of a detail shares, filled by `NormalizedDetail.table` (run_id is the
# run's, added by the writer).
_SHARED = ("cluster_id", "snapshot_at", "currency")
_CURRENT_INSTANT = "metrics.current.timestamp"


def _as_list(values: Any) -> list[Any]:
    return values.to_pylist() if isinstance(values, pa.Array) else list(values)


@dataclass
class NormalizedDetail:
    """One cluster detail, normalized: the columns of every snapshot table it gives, and what
    the contract's checks and the snapshot's time checks read.

    `columns[table]` holds, per declared column of `pipeline/tables.py` that varies from row to
    row, its values: a list of Python objects of the column's type, except for the per-GPU
    columns of `gpu_metric_points`, which are Arrow arrays (`table` and `rows` give lists for
    every table); the columns every row shares
    (`cluster_id`, `snapshot_at`, `currency`, the bucket tables' `interval_seconds`) are fields
    here, so a repair (`validate` upper-cases a currency) is made once. `index[table]` is the
    position in the document's list of each row of `alerts`, `gpu_current` and
    `metric_points` (for `path`). `problem` says why a well-formed detail cannot be stored (no
    snapshot instant, a GPU id twice in one point): the loader records it as a failure.
    """

    cluster_id: str
    snapshot_at: datetime | None
    snapshot_source: str  # "metrics.current.timestamp" or "updated_at"
    currency: str | None
    interval_seconds: int | None  # as stored: sent, else inferred from the buckets
    interval_sent: int | None
    metrics_window: str | None
    has_metrics: bool
    has_cost: bool
    columns: dict[str, dict[str, Any]]  # lists; `gpu_metric_points`: Arrow arrays
    index: dict[str, list[int]] = field(default_factory=dict)
    problem: str | None = None

    def count(self, table: str) -> int:
        """The number of rows this detail gives `table`."""
        return len(next(iter(self.columns[table].values())))

    def table(self, table: str) -> dict[str, list[Any]]:
        """Every declared column of `table` but `run_id`, in order, with one value per row."""
        n = self.count(table)
        shared = {
            "cluster_id": self.cluster_id,
            "snapshot_at": self.snapshot_at,
            "currency": self.currency,
            "interval_seconds": self.interval_seconds,
        }
        own = self.columns[table]
        if table == "gpu_metric_points":
            # Each GPU row belongs to the bucket before it (rows follow their point's order).
            points = self.columns["metric_points"]
            counts = points["gpu_series_count"]
            own = {
                **{name: _as_list(values) for name, values in own.items()},
                "bucket_at": [
                    b
                    for b, c in zip(points["bucket_at"], counts, strict=True)
                    for _ in range(c or 0)
                ],
            }
        return {
            c.name: own[c.name] if c.name in own else [shared[c.name]] * n
            for c in TABLES[table].columns
            if c.name != "run_id"
        }

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The rows of `table` as dicts (for tests and tools; the writer takes `table`)."""
        columns = self.table(table)
        return [
            dict(zip(columns, values, strict=True))
            for values in zip(*columns.values(), strict=True)
        ]

    def path(self, table: str, row: int, column: str) -> str:
        """Where in the provider's document the value of `column` in row `row` came from:
        `metrics.historical.data_points[3].gpus[1].utilization`."""
        own = self.columns[table]
        if table == "cost_components":
            return f"cost.cost_breakdown.{own['component'][row]}_cost_per_hour"
        if table == "projections":
            return f"cost.cost_projections.{own['horizon'][row]}"
        if table == "gpu_metric_points":
            counts = self.columns["metric_points"]["gpu_series_count"]
            point = 0
            while row >= (counts[point] or 0):
                row -= counts[point] or 0
                point += 1
            first = self.index["metric_points"][point]
            return f"metrics.historical.data_points[{first}].gpus[{row}].{column}"
        spec = TABLES[table]
        source = spec.column(column).source
        if table in self.index:
            prefix = spec.rows_from.removesuffix("[]")
            return f"{prefix}[{self.index[table][row]}].{relative(source, spec.rows_from)}"
        return source


def _get(doc: Any, path: str) -> Any:
    """doc[a][b]... for the path `a.b`, or None when any part is missing."""
    for key in path.split("."):
        if doc is None:
            return None
        doc = doc.get(key)
    return doc


def _infer_interval(stamps: list[datetime]) -> int:
    """The bucket length when not sent: the smallest gap between buckets, else one hour."""
    ordered = sorted(stamps)
    gaps = [int((b - a).total_seconds()) for a, b in zip(ordered, ordered[1:], strict=False)]
    gaps = [g for g in gaps if g > 0]
    return min(gaps) if gaps else 3600


def _snapshot_row(detail: dict[str, Any]) -> dict[str, list[Any]]:
    # Every column with a plain source path is read from it; the rest are derived here.
    row: dict[str, list[Any]] = {}
    for c in TABLES["cluster_snapshots"].columns:
        if c.name in _SHARED or c.name in ("run_id", "interval_seconds"):
            continue
        if c.source in (RUN, DERIVED):
            continue
        row[c.name] = [_get(detail, c.source)]
    return row


def _listed_rows(
    table: str, items: list[dict[str, Any]] | None, id_column: str
) -> tuple[dict[str, list[Any]], list[int], str | None]:
    """alerts / gpu_current: each item's columns read by their source path; of two items with
    the same id, the later one's values are kept (at the first one's place). A null item is a
    problem (nothing to store), not an error."""
    spec = TABLES[table]
    names = [c for c in spec.columns if c.name not in _SHARED and c.name != "run_id"]
    by_id: dict[str, tuple[int, dict[str, Any]]] = {}
    problem = None
    for i, item in enumerate(items or ()):
        if item is None:
            what = "not an object" if table == "alerts" else "no gpu_id"
            problem = problem or f"{spec.rows_from.removesuffix('[]')}[{i}]: {what}"
            continue
        key: str = item.get(id_column) or ""  # never None for a GPU: its spec requires gpu_id
        if table == "alerts" and not key:
            key = f"#{i}"  # an alert without an id (or an empty one) is kept by position
        by_id[key] = (i, {**item, id_column: key})
    columns: dict[str, list[Any]] = {
        c.name: [item.get(relative(c.source, spec.rows_from)) for _, item in by_id.values()]
        for c in names
    }
    return columns, [i for i, _ in by_id.values()], problem


def normalize_detail(doc: Any, *, exact_money: bool = False) -> NormalizedDetail:
    """One cluster detail (wrapped or bare, any variant) -> its snapshot tables' columns.

    `doc` should come from `parse_json` (money exact) and already be redacted. A document
    parsed with plain `json.loads` holds JSON numbers as floats: with `exact_money=True` an
    amount among them raises `InexactMoneyError` (parse again with `parse_json`) instead of
    being converted from the float; utilization and the like are floats either way.
    """
    body = unwrap(doc)
    if not isinstance(body, dict):
        raise NormalizeError(f"expected a cluster object, got {_type_name(body)}")
    detail: dict[str, Any] = (_DETAIL_EXACT if exact_money else _DETAIL)(body)
    metrics = detail.get("metrics")
    current = (metrics or {}).get("current") or {}
    points: _Points | None = _get(metrics, "historical.data_points") if metrics else None
    cost = detail.get("cost")
    breakdown = (cost or {}).get("cost_breakdown")
    projections = (cost or {}).get("cost_projections") or {}

    stamp = current.get("timestamp")
    source = _CURRENT_INSTANT if stamp is not None else "updated_at"
    snapshot_at = stamp if stamp is not None else detail.get("updated_at")
    sent_interval = metrics.get("interval_seconds") if metrics else None
    interval = None
    if metrics is not None:
        interval = sent_interval or _infer_interval(points.bucket_at if points else [])

    snapshots = _snapshot_row(detail)
    snapshots["metrics_window"] = [metrics.get("window") if metrics else None]
    snapshots["has_metrics"] = [metrics is not None]
    snapshots["has_gpu_series"] = [points is not None and any(points.gpu_series_count)]
    snapshots["has_cost_breakdown"] = [breakdown is not None]
    snapshots["interval_seconds"] = [interval]
    components = [
        (name.removesuffix("_cost_per_hour"), value)
        for name, value in (breakdown or {}).items()
        if name.endswith("_cost_per_hour") and value is not None
    ]
    horizons = [(h, hours, projections.get(h)) for h, hours in HORIZON_HOURS.items()]
    horizons = [(h, hours, v) for h, hours, v in horizons if v is not None]
    alerts, alert_index, alerts_problem = _listed_rows(
        "alerts", (metrics or {}).get("alerts"), "alert_id"
    )
    gpus, gpu_index, gpus_problem = _listed_rows("gpu_current", current.get("gpus"), "gpu_id")
    if points is None:
        points = _points_general([])
    columns: dict[str, dict[str, Any]] = {
        "cluster_snapshots": snapshots,
        "cost_components": {
            "component": [name for name, _ in components],
            "cost_per_hour": [value for _, value in components],
        },
        "projections": {
            "horizon": [h for h, _, _ in horizons],
            "horizon_hours": [hours for _, hours, _ in horizons],
            "projected_cost": [v for _, _, v in horizons],
            "basis": [projections.get("projection_basis")] * len(horizons),
        },
        "alerts": alerts,
        "gpu_current": gpus,
        "metric_points": {
            "bucket_at": points.bucket_at,
            "snapshot_at": [snapshot_at] * len(points.bucket_at),
            "status": points.status,
            **{name: getattr(points, name) for name in _UTILIZATIONS},
            "cost": points.cost,
            "gpu_series_count": points.gpu_series_count,
        },
        # The bulk of a detail (8 GPUs x 168 buckets: 1,344 rows) as Arrow, converted while
        # its values are warm in the cache: at write time, a batch later, the same conversion
        # took 3-4x longer, and the Python lists held 4x the memory until then.
        "gpu_metric_points": {
            "gpu_id": pa.array(points.gpu_id, type=_GPU_ARROW["gpu_id"]),
            **{
                name: pa.array(getattr(points, name), type=_GPU_ARROW[name]) for name in _GPU_VALUES
            },
        },
    }
    problem = None
    if not detail["id"]:
        problem = "id: missing"
    elif snapshot_at is None:
        problem = "no snapshot instant: neither metrics.current.timestamp nor updated_at"
    else:
        problem = alerts_problem or gpus_problem or points.problem
    return NormalizedDetail(
        cluster_id=detail["id"],
        snapshot_at=snapshot_at,
        snapshot_source=source,
        currency=(cost or {}).get("currency"),
        interval_seconds=interval,
        interval_sent=sent_interval,
        metrics_window=snapshots["metrics_window"][0],
        has_metrics=metrics is not None,
        has_cost=cost is not None,
        columns=columns,
        index={"alerts": alert_index, "gpu_current": gpu_index, "metric_points": points.index},
        problem=problem,
    )


def normalize_summary(doc: Any) -> dict[str, Any]:
    """One ClusterSummary (any variant) -> canonical snake_case summary with Python types."""
    out: dict[str, Any] = _SUMMARY(doc)
    return out


@dataclass
class ListPage:
    """One page of the cluster list: canonical summaries, pagination when sent, bad items."""

    clusters: list[dict[str, Any]]
    pagination: dict[str, Any] | None
    errors: list[NormalizeError]
    raw_count: int


def normalize_list_page(doc: Any) -> ListPage:
    """A list response (wrapper or bare; `{"clusters": [...], "pagination": {...}}` or a bare
    array) -> its summaries. An item that does not normalize is reported in `errors`, not
    raised, so that one bad summary does not hide the rest of the fleet."""
    body = unwrap(doc)
    pagination = None
    if isinstance(body, dict):
        items = None
        for key, value in body.items():
            name = to_snake(key)
            if name in ("clusters", "items", "data", "results"):
                items = value
            elif name == "pagination":
                pagination = _PAGINATION(value)
        if items is None:
            raise NormalizeError("list response has no clusters array")
    else:
        items = body
    if not isinstance(items, list):
        raise NormalizeError(f"expected an array of clusters, got {_type_name(items)}", "clusters")
    clusters, errors = [], []
    for i, item in enumerate(items):
        try:
            clusters.append(normalize_summary(item))
        except NormalizeError as exc:
            exc._prepend(f"[{i}]")
            exc._prepend("clusters")
            errors.append(exc)
    return ListPage(clusters, pagination, errors, len(items))
