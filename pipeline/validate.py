"""The contract's checks on a normalized detail, before anything is written.

The provider is not trusted (DESIGN.md, "Reliability and security rules"): a response that parses
and normalizes may still carry values no bill can hold. What cannot be repaired unambiguously
fails that cluster alone, with a `ContractError` naming the field and the value; the rest of the
fleet is stored. The one repair: a currency in lower case (`usd` -> `USD`).

- Money (`current_hourly_rate`, every `*_cost_per_hour`, `total_cost_to_date`, `window_cost`,
  projections, a bucket's `cost`, a summary's `hourly_rate`): finite (normalize checks that),
  not negative, below `MAX_AMOUNT`.
- Utilizations (`*_utilization`, a GPU's `utilization`): 0 to 100. Memory, power, sizes,
  counts: not negative. `interval_seconds`: positive, at most a day.
- Currency: three letters (ISO 4217), whenever the detail carries money.
- Time (`check_bucket_times`, `TimeGuard`): buckets lie within the metrics window before the
  snapshot instant; the snapshot instant is not far from the other clusters' snapshot times of
  the run, nor ahead of the provider's own clock (its HTTP `Date`, else the local clock).
  Absurd timestamps (before 2000, from 2100) are refused earlier, by normalize.
- Cluster ids (`cluster_id_problem`): a plain URL path segment, never `.` or `..`.

Every check reads the columns `normalize.normalize_detail` made (`NormalizedDetail`): the bulk
of a detail (168 buckets x N GPUs) is checked column by column (min and max of a column in C),
so the checks cost little per cluster; `NormalizedDetail.path` names the field of a bad value.
"""

from __future__ import annotations

import functools
import re
import statistics
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.normalize import NormalizedDetail, NormalizeError

# DECIMAL(18, 6) holds 12 integer digits: an amount at or beyond this cannot be stored.
MAX_AMOUNT = Decimal(10) ** 12
MAX_PERCENT = 100.0
MAX_INTERVAL_SECONDS = 86_400
# A snapshot instant may be this much ahead of the provider's clock (`Date` has whole seconds;
# services of one provider may disagree by a little), never more: data is not from the future.
MAX_AHEAD = timedelta(hours=1)
# How far one cluster's snapshot instant may lie from the median of the run's others. A night's
# run takes minutes (hours at worst, under a rate limit); a day apart is a wrong clock.
MAX_SPREAD = timedelta(days=1)
# Buckets may start this much before the metrics window (a provider rounding to whole days).
BUCKET_SLACK = timedelta(days=1)
DEFAULT_WINDOW = timedelta(days=7)
# The peers a median needs before it is a reference.
MIN_PEERS = 3
# How far the run's own time (its clusters' median) may be ahead of the provider's clock: the
# simulator and replays run on virtual clocks, weeks from the real one; years ahead is wrong.
MAX_RUN_AHEAD = timedelta(days=90)
_WINDOW = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_CURRENCY = re.compile(r"[A-Za-z]{3}")
# RFC 3986 `segment-nz` without percent-encoding: unreserved, sub-delims, ":" and "@".
_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]{1,256}")
_UTILIZATIONS = (
    "gpu_utilization",
    "gpu_memory_utilization",
    "cpu_utilization",
    "memory_utilization",
)


class ContractError(NormalizeError):
    """A value the contract does not allow (negative money, utilization above 100, no
    currency, a time far from the run's): that cluster fails; the path names the field."""


def cluster_id_problem(cluster_id: Any) -> str | None:
    """Why `cluster_id` cannot be put in a URL path as one segment, or None when it can."""
    if not isinstance(cluster_id, str) or not cluster_id:
        return "cluster id is empty"
    if cluster_id in (".", ".."):
        return f"cluster id {cluster_id!r} is a relative path segment"
    if not _SEGMENT.fullmatch(cluster_id):
        return f"cluster id {cluster_id[:80]!r} is not a plain URL path segment"
    return None


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _span(delta: timedelta) -> str:
    seconds = abs(delta.total_seconds())
    if seconds >= 2 * 86_400 * 365:
        return f"{seconds / (86_400 * 365.25):.1f} years"
    if seconds >= 2 * 86_400:
        return f"{seconds / 86_400:.1f} days"
    return f"{seconds / 3600:.1f} hours"


# --------------------------------------------------------------------------- values


def _amount(value: Any, path: str) -> None:
    if value is None:
        return
    if value < 0:
        raise ContractError(f"negative amount {value}", path)
    if value >= MAX_AMOUNT:
        raise ContractError(f"amount {value} is out of range (at most {MAX_AMOUNT - 1})", path)


def _bounded(value: Any, path: str, high: float | None) -> None:
    if value is None:
        return
    if value < 0:
        raise ContractError(f"negative value {value!r}", path)
    if high is not None and value > high:
        raise ContractError(f"{value!r} is above {high:g}", path)


def _column(values: Any, high: float | None, where: Any) -> None:
    """Check a whole column (a list, or an Arrow array: the per-GPU columns) at once; `where(k)`
    names item k only when it is wrong."""
    if isinstance(values, pa.Array):
        bounds = pc.min_max(values)  # nulls skipped; normalize lets no NaN through
        lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
        if lo is None or (lo >= 0 and (high is None or hi <= high)):
            return
        values = values.to_pylist()  # something is out of range: find it, name it
    if not values:
        return
    try:
        # Usually no value is missing: min and max in C, without a scan for None first (a
        # None among numbers makes them raise TypeError; a lone None comes back as itself).
        lo, hi = min(values), max(values)
        if lo is None:
            raise TypeError
    except TypeError:
        present = [v for v in values if v is not None]
        if not present:
            return
        lo, hi = min(present), max(present)
    if lo < 0:
        _bounded(lo, where(values.index(lo)), high)
    if high is not None and hi > high:
        _bounded(hi, where(values.index(hi)), high)


def _currency(detail: NormalizedDetail, needed: bool) -> None:
    sent = detail.currency
    if sent is None:
        if needed:
            raise ContractError("missing, while the detail carries money", "cost.currency")
        return
    if _CURRENCY.fullmatch(sent.strip()):
        detail.currency = sent.strip().upper()  # `usd` means USD: the one safe repair
        return
    raise ContractError(f"expected an ISO 4217 code, got {sent[:40]!r}", "cost.currency")


def _columns(
    detail: NormalizedDetail, table: str, checks: Iterable[tuple[str, float | None]]
) -> None:
    own = detail.columns[table]
    for name, high in checks:
        _column(own[name], high, lambda k, n=name: detail.path(table, k, n))


def _amounts(detail: NormalizedDetail, table: str, name: str) -> bool:
    """Check a money column; returns whether it holds any amount."""
    values = detail.columns[table][name]
    present = [v for v in values if v is not None]
    if present and (min(present) < 0 or max(present) >= MAX_AMOUNT):
        for k, value in enumerate(values):
            _amount(value, detail.path(table, k, name))
    return bool(present)


def validate_detail(detail: NormalizedDetail) -> None:
    """Check a normalized detail against the contract; raises `ContractError` naming the field
    and the value. Repairs a lower-case currency in place."""
    _columns(
        detail,
        "cluster_snapshots",
        ((name, None) for name in ("gpu_count", "cpu_cores", "memory_gb", "storage_gb")),
    )
    has_money = False
    if detail.has_cost:
        has_money = True
        _amounts(detail, "cluster_snapshots", "hourly_rate")
        _amounts(detail, "cost_components", "cost_per_hour")
        _amounts(detail, "cluster_snapshots", "total_cost_to_date")
        _amounts(detail, "cluster_snapshots", "window_cost")
        _amounts(detail, "projections", "projected_cost")
    if detail.has_metrics:
        interval = detail.interval_sent
        if interval is not None and not 0 < interval <= MAX_INTERVAL_SECONDS:
            raise ContractError(
                f"{interval} is not a bucket length (1 to {MAX_INTERVAL_SECONDS} s)",
                "metrics.interval_seconds",
            )
        _columns(
            detail,
            "cluster_snapshots",
            ((f"current_{name}", MAX_PERCENT) for name in _UTILIZATIONS),
        )
        _columns(
            detail,
            "gpu_current",
            (
                ("utilization", MAX_PERCENT),
                ("memory_used_gb", None),
                ("memory_total_gb", None),
                ("power_draw_w", None),
            ),
        )
        _columns(detail, "metric_points", ((name, MAX_PERCENT) for name in _UTILIZATIONS))
        has_money = _amounts(detail, "metric_points", "cost") or has_money
        _columns(
            detail,
            "gpu_metric_points",
            (("utilization", MAX_PERCENT), ("memory_used_gb", None), ("power_draw_w", None)),
        )
        check_bucket_times(detail)
    _currency(detail, has_money)


# --------------------------------------------------------------------------- time


def snapshot_time(detail: NormalizedDetail) -> tuple[datetime | None, bool]:
    """(the snapshot instant, whether it is `metrics.current.timestamp`) as DESIGN defines it:
    `metrics.current.timestamp`, else `updated_at`."""
    return detail.snapshot_at, detail.snapshot_source == "metrics.current.timestamp"


def _window(text: str | None) -> timedelta:
    match = _WINDOW.match(str(text or ""))
    if not match:
        return DEFAULT_WINDOW
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def check_bucket_times(detail: NormalizedDetail) -> None:
    """Every bucket lies within the metrics window before the snapshot instant (with
    `BUCKET_SLACK` before it and `MAX_AHEAD` after it); raises `ContractError` otherwise."""
    if not detail.has_metrics:
        return
    stamps = detail.columns["metric_points"]["bucket_at"]
    if not stamps:
        return
    instant, _ = snapshot_time(detail)
    if instant is None:
        return
    earliest = instant - _window(detail.metrics_window) - BUCKET_SLACK
    latest = instant + MAX_AHEAD
    lo, hi = min(stamps), max(stamps)
    if lo < earliest:
        raise ContractError(
            f"bucket {_iso(lo)} is {_span(instant - lo)} before the snapshot time "
            f"{_iso(instant)}, outside the metrics window",
            detail.path("metric_points", stamps.index(lo), "bucket_at"),
        )
    if hi > latest:
        raise ContractError(
            f"bucket {_iso(hi)} is {_span(hi - instant)} after the snapshot time {_iso(instant)}",
            detail.path("metric_points", stamps.index(hi), "bucket_at"),
        )


@functools.lru_cache(maxsize=256)
def _http_date(header: str) -> datetime | None:
    # A run's responses share few `Date` values (whole seconds): each is parsed once.
    try:
        sent = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return sent.replace(tzinfo=UTC) if sent.tzinfo is None else sent.astimezone(UTC)


def provider_clock(date_header: str | None, now: datetime | None = None) -> tuple[datetime, str]:
    """The reference for "now" of one response: its HTTP `Date` header, unless it is missing,
    unparsable or itself ahead of the local clock; then the local clock. Returns (time, what)."""
    local = now or datetime.now(UTC)
    if date_header:
        sent = _http_date(date_header)
        if sent is not None:
            if sent <= local + MAX_AHEAD:
                return sent, f"the provider's clock (Date: {date_header[:40]})"
            return local, f"the local clock (the provider's Date {date_header[:40]!r} is ahead)"
    return local, "the local clock (no Date header)"


class TimeGuard:
    """The run's sense of "now" (data time comes from the data, DESIGN.md "Time"): the median
    snapshot instant of the run's clusters, checked against the provider's clock.

    `check_many` judges a group of details (a batch) at once, so that even the first clusters
    of a run are judged by their peers:

    - a snapshot instant from `metrics.current` more than `MAX_SPREAD` from the median of the
      run's instants (this group's and those accepted before, once there are `MIN_PEERS`) fails:
      one cluster's clock years ahead would otherwise be "newest" forever;
    - an instant the peers vouch for may be ahead of the provider's clock (its HTTP `Date`, else
      the local clock) by at most `MAX_RUN_AHEAD`: simulations and replays run on virtual
      clocks, a provider whose whole fleet is years ahead does not;
    - an instant no peers vouch for (a lone cluster, an `updated_at` ahead of the run's median)
      may be ahead of the provider's clock by at most `MAX_AHEAD`. An `updated_at` (a cluster
      without metrics) may be old: a stopped cluster changes rarely.
    """

    def __init__(self, *, now: datetime | None = None) -> None:
        self._now = now
        self._peers: list[datetime] = []

    def check(self, detail: NormalizedDetail, date_header: str | None) -> None:
        """`check_many` for one detail: raises its `ContractError`, if any."""
        (error,) = self.check_many([(detail, date_header)])
        if error is not None:
            raise error

    def check_many(
        self, items: list[tuple[NormalizedDetail, str | None]]
    ) -> list[ContractError | None]:
        """For each (detail, HTTP Date header): None when its snapshot time is plausible (it
        then counts among the peers), else the `ContractError` naming the value."""
        stamps = [snapshot_time(detail) for detail, _ in items]
        pool = self._peers + [t for t, current in stamps if t is not None and current]
        median = _median(pool) if len(pool) >= MIN_PEERS else None
        out: list[ContractError | None] = []
        for (instant, current), (_, date_header) in zip(stamps, items, strict=True):
            error = None
            if instant is not None:
                error = self._judge(instant, current, date_header, median)
                if error is None and current:
                    self._peers.append(instant)
            out.append(error)
        if len(self._peers) > 4096:
            # A median is stable: a sample of the run keeps it cheap for any fleet size.
            self._peers = self._peers[::2]
        return out

    def _judge(
        self, instant: datetime, current: bool, date_header: str | None, median: datetime | None
    ) -> ContractError | None:
        path = "metrics.current.timestamp" if current else "updated_at"
        vouched = False
        if current and median is not None:
            if abs(instant - median) > MAX_SPREAD:
                side = "after" if instant > median else "before"
                return ContractError(
                    f"snapshot time {_iso(instant)} is {_span(instant - median)} {side} the "
                    f"other clusters' snapshot times (median {_iso(median)})",
                    path,
                )
            vouched = True
        elif median is not None and instant <= median + MAX_SPREAD:
            vouched = True  # an older `updated_at` is fine; one ahead of the run is not
        clock, what = provider_clock(date_header, self._now)
        allowed = MAX_RUN_AHEAD if vouched else MAX_AHEAD
        if instant > clock + allowed:
            return ContractError(
                f"snapshot time {_iso(instant)} is {_span(instant - clock)} ahead of {what}", path
            )
        return None

    def seed(self, instants: Iterable[datetime]) -> None:
        """Count instants already known to be right (tests, replays)."""
        self._peers.extend(instants)


def _median(values: list[datetime]) -> datetime:
    # median_low: an actual instant, no arithmetic on datetimes.
    return statistics.median_low(values)
