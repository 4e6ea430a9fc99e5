"""The simulated provider's fleet: deterministic clusters, a virtual clock, canonical documents.

`Fleet(FleetSpec(...))` is a fleet of GPU clusters whose every number is a pure function of
(seed, cluster, hour, GPU), so that two snapshots taken on different nights return the same value
for the same bucket, and `truth.py` can compute what a pipeline should find without parsing JSON.
It produces the contract's documents (CONTRACT.md, examples/) in canonical form: snake_case keys,
ISO 8601 `Z` timestamps, money as decimal strings with four places. The HTTP server applies the
provider's variants on top.

Semantics, precisely:

- Time is virtual: `fleet.now` starts at `spec.start`; `set_clock` / `advance` move it.
- Buckets are hours on the hour, identified by their start. A cluster bills the hours
  `[ceil_hour(created_at), floor_hour(deleted_at))`; it exists (listed, detail not None) for
  `created_at <= now < deleted_at`.
- The state of a cluster (status, gpu_count, per-GPU price) changes only through its events.
  An event at `at` changes the status reported at `now >= at` and the buckets starting at or after
  `ceil_hour(at)` (generated events are on the hour). A resize changes only the GPU count and
  the GPU component; CPU, memory, storage and network rates are fixed per cluster.
- Cost of a bucket = sum of the components billing in its status: `running` and `error` bill
  everything (`gpu_count x gpu_price + cpu + memory + storage + network`), `stopped` bills
  storage only. `cost_breakdown` shows the components as they bill now.
- Utilization: per GPU, rounded to 1 decimal; memory in GB rounded to 1 decimal; the cluster's
  `gpu_utilization` is the mean over its GPUs of the rounded values, rounded to 2 decimals.
  Stopped buckets: 0 utilization, 0 memory, 0 W. Error buckets: 0 utilization, memory held.
- Late data: clusters with `late_data` report, for the buckets starting at or after
  `floor_hour(now) - LATE_HOURS` (the two newest complete buckets and the current hour), a
  preliminary utilization (`PRELIMINARY_FACTOR` x final, rounded). A later snapshot, once the
  bucket is older, returns the final value. Costs are never revised.
- Windows: `7d` is 168 buckets of 3600 s `[floor_hour(now) - 168 h, floor_hour(now))`; `24h`,
  `6h`, `1h` use 900, 300 and 60 s buckets `[floor(now, i) - window, floor(now, i))`, valued at
  their hour's value plus deterministic noise; their `cost` is the hour's cost x i / 3600,
  rounded to 4 places. `total_cost_to_date` = sum of all complete hourly bucket costs since
  creation; `window_cost` = sum of the window's data point costs.
- Cost projections: current hourly rate x 24, 168, 720 (`projection_basis` "current_hourly_rate").

The generated fleet deals clusters from a 40-slot deck (`_archetypes.DECK`) shuffled per seed:
steady training, diurnal inference, notebooks, forgotten clusters, partially used multi-GPU,
stopped and error clusters, with clusters created and deleted during the period
(`spec.start` + `spec.days`), price changes, resizes 8 -> 4, stop/start, a few EUR clusters,
clusters without per-GPU series or without data point costs, late data, and planted hostile
content (secrets carrying `CANARY`, HTML/JS and spreadsheet-formula names).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.simulator import _archetypes as arch

CANARY = "CANARY-7f3a9c"
"""Substring of every planted secret: it must never reach the database or a report."""

LATE_HOURS = 2
PRELIMINARY_FACTOR = 0.8
CHUNK_HOURS = 168
WINDOWS: dict[str, tuple[int, int]] = {  # window -> (seconds, interval_seconds)
    "7d": (7 * 86400, 3600),
    "24h": (86400, 900),
    "6h": (6 * 3600, 300),
    "1h": (3600, 60),
}
STATUSES = ("running", "stopped", "error")
_Q4 = Decimal("0.0001")
_ZERO = Decimal("0.0000")

UtilizationFn = Callable[[datetime, int], tuple[float, float]]
# An explicit table instead of a function: [hour since ceil_hour(created_at)][gpu] ->
# (utilization %, memory GB); hours past its end read (0, 0).
UtilizationTable = Sequence[Sequence[tuple[float, float]]] | np.ndarray
_STATUS_EVENTS = ("stop", "start", "error", "recover")


@dataclass(frozen=True)
class ClusterEvent:
    """Something that happens to a cluster at `at`.

    kind: `price` (new `gpu_price` per GPU-hour), `resize` (new `gpu_count`), `stop`, `start`,
    `error`, `recover` (back to running) or `delete`.
    """

    at: datetime
    kind: str
    gpu_price: Decimal | None = None
    gpu_count: int | None = None


@dataclass(frozen=True)
class ClusterPlan:
    """Everything that defines one cluster. Rates are per hour in `currency`.

    `utilization`, when given, overrides the archetype: a function (hour start, gpu index) ->
    (utilization %, memory used GB), or a table [hour since ceil_hour(created_at)][gpu] ->
    (utilization, memory); before status overlays (stopped -> 0, error -> 0 utilization).
    """

    id: str
    name: str
    created_at: datetime
    gpu_type: str = "A100"
    gpu_count: int = 1
    gpu_price: Decimal = Decimal("2.0000")
    cpu_rate: Decimal = Decimal("0.1000")
    memory_rate: Decimal = Decimal("0.0500")
    storage_rate: Decimal = Decimal("0.0500")
    network_rate: Decimal = Decimal("0.0500")
    currency: str = "USD"
    status: str = "running"
    deleted_at: datetime | None = None
    events: tuple[ClusterEvent, ...] = ()
    archetype: str = "training"
    utilization: UtilizationFn | UtilizationTable | None = None
    per_gpu_series: bool = True
    point_cost: bool = True
    late_data: bool = False
    busy_gpus: int = 0  # partial archetype: GPUs 0..busy_gpus-1 are busy
    description: str = ""
    region: str = "us-west-2"
    cpu_cores: int = 16
    memory_gb: int = 128
    storage_gb: int = 500
    storage_type: str = "nvme"
    project_id: str = "proj_001"
    project_name: str = "ML Research"
    owner_email: str = "owner@example.com"
    template_id: str = "tmpl_pytorch"
    template_name: str = "PyTorch 2.5 CUDA 12.4"
    secrets: frozenset[str] = frozenset()  # env, ssh, url, logs


@dataclass(frozen=True)
class FleetSpec:
    """What fleet to build: `clusters` generated from `seed`, or the explicit `plans`."""

    seed: int = 7
    clusters: int = 40
    start: datetime = datetime(2026, 11, 13, 3, tzinfo=UTC)
    days: int = 14  # the period in which generated events happen
    plans: tuple[ClusterPlan, ...] | list[ClusterPlan] | None = None


def floor_hour(dt: datetime) -> datetime:
    """`dt` truncated to the hour."""
    return dt.replace(minute=0, second=0, microsecond=0)


def hour_index(dt: datetime) -> int:
    """Whole hours since the epoch of the hour containing `dt`."""
    return math.floor(dt.timestamp() / 3600)


def _ceil_hour_index(dt: datetime) -> int:
    return math.ceil(dt.timestamp() / 3600)


def hour_start(h: int) -> datetime:
    """The aware UTC datetime of absolute hour `h`."""
    return datetime.fromtimestamp(h * 3600, UTC)


@lru_cache(maxsize=65536)
def _iso_hour(h: int) -> str:
    return hour_start(h).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso(dt: datetime) -> str:
    """ISO 8601 UTC with `Z`, whole seconds."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(d: Decimal) -> str:
    return str(d.quantize(_Q4))


@dataclass(frozen=True)
class _Segment:
    start: int  # absolute hour from which buckets are billed in this state
    status: str
    gpu_count: int
    gpu_price: Decimal


@dataclass
class Series:
    """Hourly series of one cluster over a range of absolute hours (public to truth.py)."""

    hours: np.ndarray  # absolute hour of each bucket
    status: list[str]
    gpu_count: np.ndarray  # int per bucket
    util: np.ndarray  # (H, Gmax) rounded 1 decimal; columns >= gpu_count are not reported
    mem: np.ndarray  # (H, Gmax) GB rounded 1 decimal
    power: np.ndarray  # (H, Gmax) W rounded 1 decimal
    avg_util: np.ndarray  # (H,) rounded 2 decimals
    avg_mem_util: np.ndarray
    cpu_util: np.ndarray
    mem_util: np.ndarray
    cost: list[Decimal]
    preliminary: np.ndarray  # bool per bucket


class _Cluster:
    """A plan plus its state segments and cached base arrays."""

    def __init__(self, plan: ClusterPlan, seed: int, index: int) -> None:
        _check_plan(plan)
        self.plan = plan
        self.seed = seed
        self.index = index
        self.first_hour = _ceil_hour_index(plan.created_at)
        self.utilization = _utilization_fn(plan.utilization, self.first_hour)
        deleted = plan.deleted_at
        for ev in plan.events:
            if ev.kind == "delete" and (deleted is None or ev.at < deleted):
                deleted = ev.at
        self.deleted_at = deleted
        self.end_hour = hour_index(deleted) if deleted is not None else None
        self.max_gpus = max(
            [plan.gpu_count] + [e.gpu_count for e in plan.events if e.gpu_count is not None]
        )
        self.events = sorted((e for e in plan.events if e.kind != "delete"), key=lambda e: e.at)
        segs = [_Segment(self.first_hour, plan.status, plan.gpu_count, plan.gpu_price)]
        for ev in self.events:
            segs.append(_apply(segs[-1], ev, _ceil_hour_index(ev.at)))
        self.segments = segs
        self.seg_starts = np.array([s.start for s in segs], dtype=np.int64)
        self.seg_costs = [self._bucket_cost(s) for s in segs]
        self._chunks: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        gt = arch.GPU_TYPES.get(plan.gpu_type, arch.GPU_TYPES["A100"])
        self.mem_total, self.idle_w, self.max_w = gt[0], gt[1], gt[2]

    def _bucket_cost(self, s: _Segment) -> Decimal:
        p = self.plan
        if s.status == "stopped":
            return p.storage_rate.quantize(_Q4)
        gpu = s.gpu_price * s.gpu_count
        return (gpu + p.cpu_rate + p.memory_rate + p.storage_rate + p.network_rate).quantize(_Q4)

    def exists(self, t: datetime) -> bool:
        return self.plan.created_at <= t and (self.deleted_at is None or t < self.deleted_at)

    def state_at(self, t: datetime) -> _Segment:
        """The state in effect at instant `t` (events at or before `t`)."""
        seg = _Segment(self.first_hour, self.plan.status, self.plan.gpu_count, self.plan.gpu_price)
        for ev in self.events:
            if ev.at <= t:
                seg = _apply(seg, ev, seg.start)
        return seg

    def last_status_change(self, t: datetime) -> datetime:
        """When the status in effect at `t` began (creation or the latest status event)."""
        changes = [e.at for e in self.events if e.kind in _STATUS_EVENTS and e.at <= t]
        return max([self.plan.created_at, *changes])

    def breakdown(self, s: _Segment) -> dict[str, Decimal]:
        p = self.plan
        on = s.status != "stopped"
        return {
            "gpu_cost_per_hour": (s.gpu_price * s.gpu_count).quantize(_Q4) if on else _ZERO,
            "cpu_cost_per_hour": p.cpu_rate.quantize(_Q4) if on else _ZERO,
            "memory_cost_per_hour": p.memory_rate.quantize(_Q4) if on else _ZERO,
            "storage_cost_per_hour": p.storage_rate.quantize(_Q4),
            "network_cost_per_hour": p.network_rate.quantize(_Q4) if on else _ZERO,
        }

    def bucket_range(self, h0: int, h1: int) -> tuple[int, int]:
        """[h0, h1) clipped to the hours this cluster bills."""
        lo = max(h0, self.first_hour)
        hi = h1 if self.end_hour is None else min(h1, self.end_hour)
        return lo, max(lo, hi)

    def cost_between(self, h0: int, h1: int) -> Decimal:
        """Sum of bucket costs over [h0, h1) (clipped to the billed hours)."""
        lo, hi = self.bucket_range(h0, h1)
        total = Decimal(0)
        for i, seg in enumerate(self.segments):
            s_end = self.segments[i + 1].start if i + 1 < len(self.segments) else hi
            a, b = max(lo, seg.start), min(hi, s_end)
            if b > a:
                total += self.seg_costs[i] * (b - a)
        return total

    def _chunk(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cached = self._chunks.get(c)
        if cached is not None:
            return cached
        hours = np.arange(c * CHUNK_HOURS, (c + 1) * CHUNK_HOURS, dtype=np.int64)
        g = self.max_gpus
        rng = np.random.default_rng([self.seed, 2, self.index, c])
        p = self.plan
        if self.utilization is not None:
            util: np.ndarray = np.empty((CHUNK_HOURS, g))
            mem: np.ndarray = np.empty((CHUNK_HOURS, g))
            for i, h in enumerate(hours.tolist()):
                t = hour_start(h)
                for j in range(g):
                    util[i, j], mem[i, j] = self.utilization(t, j)
        else:
            util, mem = arch.generate(
                p.archetype,
                rng,
                hours,
                g,
                tz_offset=arch.REGIONS.get(p.region, 0),
                mem_total=self.mem_total,
                busy_gpus=p.busy_gpus or max(1, g // 2),
            )
        util = np.round(np.clip(util, 0.0, 100.0), 1).astype(np.float64)
        mem = np.round(np.clip(mem, 0.0, self.mem_total), 1).astype(np.float64)
        noise = rng.normal(0.0, 1.0, (CHUNK_HOURS, g))
        out = (util, mem, noise)
        if len(self._chunks) > 16:
            self._chunks.clear()
        self._chunks[c] = out
        return out

    def series(self, h0: int, h1: int, now_hour: int | None = None) -> Series:
        """Hourly values over [h0, h1) ∩ billed hours; preliminary ones relative to `now_hour`."""
        lo, hi = self.bucket_range(h0, h1)
        hours = np.arange(lo, hi, dtype=np.int64)
        g = self.max_gpus
        if hi > lo:
            c0, c1 = lo // CHUNK_HOURS, (hi - 1) // CHUNK_HOURS
            parts = [self._chunk(c) for c in range(c0, c1 + 1)]
            off = lo - c0 * CHUNK_HOURS
            util = np.concatenate([p[0] for p in parts])[off : off + hi - lo].copy()
            mem = np.concatenate([p[1] for p in parts])[off : off + hi - lo].copy()
            noise = np.concatenate([p[2] for p in parts])[off : off + hi - lo]
        else:
            util = np.zeros((0, g))
            mem = np.zeros((0, g))
            noise = np.zeros((0, g))
        seg_idx = np.searchsorted(self.seg_starts, hours, side="right") - 1
        status = [self.segments[i].status for i in seg_idx.tolist()]
        counts = np.array([self.segments[i].gpu_count for i in seg_idx.tolist()], dtype=np.int64)
        stopped = np.array([s == "stopped" for s in status], dtype=bool)
        error = np.array([s == "error" for s in status], dtype=bool)
        util[stopped | error] = 0.0
        mem[stopped] = 0.0
        prelim = np.zeros(len(hours), dtype=bool)
        if self.plan.late_data and now_hour is not None:
            prelim = hours >= now_hour - LATE_HOURS
            util[prelim] = np.round(util[prelim] * PRELIMINARY_FACTOR, 1)
        span = self.max_w - self.idle_w
        power = np.round(self.idle_w + span * util / 100.0 + 3.0 * noise, 1)
        power = np.clip(power, 0.0, None)
        power[stopped] = 0.0
        mask = np.arange(g)[None, :] < counts[:, None]
        n = np.maximum(counts, 1)
        avg_util = np.round((util * mask).sum(axis=1) / n, 2)
        avg_mem = np.round((mem * mask).sum(axis=1) / n / self.mem_total * 100.0, 1)
        cpu = np.round(np.clip(3.0 + 0.55 * avg_util + 2.0 * noise[:, 0], 0, 100), 1)
        cpu[stopped] = 0.0
        ram = np.round(np.clip(8.0 + 0.5 * avg_util + avg_mem * 0.1, 0, 100), 1)
        ram[stopped] = 0.0
        cost = [self.seg_costs[i] for i in seg_idx.tolist()]
        return Series(
            hours, status, counts, util, mem, power, avg_util, avg_mem, cpu, ram, cost, prelim
        )


def _check_plan(plan: ClusterPlan) -> None:
    """Refuse a plan the simulator cannot honour, naming the cluster and the field."""
    problems = []
    if plan.status not in STATUSES:
        problems.append(f"status {plan.status!r} is not one of {', '.join(STATUSES)}")
    counts = [plan.gpu_count] + [e.gpu_count for e in plan.events if e.gpu_count is not None]
    if min(counts) < 1:
        problems.append("gpu_count must be at least 1")
    if plan.created_at.tzinfo is None or any(e.at.tzinfo is None for e in plan.events):
        problems.append("created_at and event times must be aware datetimes")
    if plan.deleted_at is not None and plan.deleted_at <= plan.created_at:
        problems.append("deleted_at must be after created_at")
    if len(plan.currency) != 3 or not plan.currency.isupper():
        problems.append(f"currency {plan.currency!r} is not an ISO 4217 code")
    if problems:
        raise ValueError(f"cluster plan {plan.id}: " + "; ".join(problems))


def _utilization_fn(
    given: UtilizationFn | UtilizationTable | None, first_hour: int
) -> UtilizationFn | None:
    if given is None or callable(given):
        return given
    table = np.asarray(given, dtype=float)
    if table.ndim != 3 or table.shape[2] != 2:
        raise ValueError("a utilization table is [hour][gpu] -> (utilization, memory_gb)")

    def from_table(t: datetime, gpu: int) -> tuple[float, float]:
        i = hour_index(t) - first_hour
        if 0 <= i < table.shape[0] and gpu < table.shape[1]:
            return float(table[i, gpu, 0]), float(table[i, gpu, 1])
        return 0.0, 0.0

    return from_table


def _apply(seg: _Segment, ev: ClusterEvent, start: int) -> _Segment:
    if ev.kind == "price":
        if ev.gpu_price is None:
            raise ValueError("a price event needs gpu_price")
        return replace(seg, start=start, gpu_price=ev.gpu_price)
    if ev.kind == "resize":
        if ev.gpu_count is None:
            raise ValueError("a resize event needs gpu_count")
        return replace(seg, start=start, gpu_count=ev.gpu_count)
    status = {"stop": "stopped", "start": "running", "error": "error", "recover": "running"}
    if ev.kind not in status:
        raise ValueError(f"unknown event kind {ev.kind!r}")
    return replace(seg, start=start, status=status[ev.kind])


class Fleet:
    """A deterministic simulated fleet with a virtual clock (see the module docstring)."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.now: datetime = spec.start.astimezone(UTC)
        self._clusters: dict[str, _Cluster] | None = None

    # -- clock -------------------------------------------------------------------------------
    def set_clock(self, dt: datetime) -> None:
        """Set the virtual clock (an aware datetime)."""
        if dt.tzinfo is None:
            raise ValueError("the fleet clock needs an aware datetime")
        self.now = dt.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        """Move the virtual clock forward (or back) by `delta`."""
        self.now = self.now + delta

    # -- clusters ----------------------------------------------------------------------------
    def _all(self) -> dict[str, _Cluster]:
        if self._clusters is None:
            if self.spec.plans is not None:
                plans: Iterable[ClusterPlan] = self.spec.plans
            else:
                plans = (_generate_plan(self.spec, i) for i in range(self.spec.clusters))
            clusters: dict[str, _Cluster] = {}
            for i, plan in enumerate(plans):
                if plan.id in clusters:
                    raise ValueError(f"duplicate cluster id {plan.id}")
                clusters[plan.id] = _Cluster(plan, self.spec.seed, i)
            self._clusters = clusters
        return self._clusters

    def cluster_ids(self) -> list[str]:
        """Every cluster of the fleet, whether or not it exists at `now`."""
        return list(self._all())

    def plan(self, cluster_id: str) -> ClusterPlan:
        """The plan of one cluster (KeyError if unknown)."""
        return self._all()[cluster_id].plan

    def _cluster(self, cluster_id: str) -> _Cluster:
        return self._all()[cluster_id]

    def exists(self, cluster_id: str, at: datetime | None = None) -> bool:
        """Whether the cluster exists at `at` (default now)."""
        c = self._all().get(cluster_id)
        return c is not None and c.exists(self.now if at is None else at)

    def series(self, cluster_id: str, h0: int, h1: int, now: datetime | None = None) -> Series:
        """Hourly series over absolute hours [h0, h1), as a snapshot at `now` would see them
        (None: final values)."""
        now_hour = None if now is None else hour_index(now)
        return self._cluster(cluster_id).series(h0, h1, now_hour)

    def state(self, cluster_id: str, at: datetime) -> dict[str, Any]:
        """Status, gpu_count, hourly rate and breakdown (Decimal) at instant `at`."""
        c = self._cluster(cluster_id)
        seg = c.state_at(at)
        bd = c.breakdown(seg)
        return {
            "status": seg.status,
            "gpu_count": seg.gpu_count,
            "breakdown": bd,
            "hourly_rate": sum(bd.values(), Decimal(0)).quantize(_Q4),
        }

    # -- documents ---------------------------------------------------------------------------
    def list_summaries(self) -> list[dict[str, Any]]:
        """Contract ClusterSummary of every cluster existing at `now` (snake_case, JSON-ready)."""
        now = self.now  # one instant for the whole list, even if the clock moves meanwhile
        return [self._summary(c, now) for c in self._all().values() if c.exists(now)]

    def _summary(self, c: _Cluster, now: datetime) -> dict[str, Any]:
        p = c.plan
        seg = c.state_at(now)
        rate = sum(c.breakdown(seg).values(), Decimal(0))
        return {
            "id": p.id,
            "name": p.name,
            "description": p.description,
            "status": seg.status,
            "gpu_type": p.gpu_type,
            "gpu_count": seg.gpu_count,
            "cpu_cores": p.cpu_cores,
            "memory_gb": p.memory_gb,
            "storage_gb": p.storage_gb,
            "region": p.region,
            "project_id": p.project_id,
            "template_id": p.template_id,
            "hourly_rate": _money(rate),
            "created_at": iso(p.created_at),
            "updated_at": iso(now),
        }

    def detail(
        self,
        cluster_id: str,
        *,
        window: str = "7d",
        include_metrics: bool = True,
        include_cost_breakdown: bool = True,
        include_logs: bool = False,
    ) -> dict[str, Any] | None:
        """Contract ClusterDetail at `now` (canonical form), or None if it does not exist now."""
        if window not in WINDOWS:
            raise ValueError(f"unknown metrics window {window!r}")
        now = self.now  # one instant for the whole document
        c = self._all().get(cluster_id)
        if c is None or not c.exists(now):
            return None
        p = c.plan
        seg = c.state_at(now)
        bd = c.breakdown(seg)
        rate = sum(bd.values(), Decimal(0))
        last_change = c.last_status_change(now)
        health = "unhealthy" if seg.status == "error" else "healthy"
        doc: dict[str, Any] = {
            "id": p.id,
            "name": p.name,
            "description": p.description,
            "status": seg.status,
            "created_at": iso(p.created_at),
            "updated_at": iso(now),
            "status_details": {
                "message": _STATUS_MESSAGES[seg.status],
                "last_status_change": iso(last_change),
                "health_checks": {
                    "gpu_health": health,
                    "storage_health": "healthy",
                    "network_health": "healthy",
                    "docker_health": "degraded" if seg.status == "error" else "healthy",
                },
            },
            "configuration": {
                "gpu_type": p.gpu_type,
                "gpu_count": seg.gpu_count,
                "cpu_cores": p.cpu_cores,
                "memory_gb": p.memory_gb,
                "storage_gb": p.storage_gb,
                "storage_type": p.storage_type,
                "region": p.region,
                "availability_zone": p.region + "a",
            },
            "project_info": {
                "project_id": p.project_id,
                "project_name": p.project_name,
                "owner_id": "user_" + _short_hash(p.owner_email, 6),
                "owner_email": p.owner_email,
            },
            "template_info": {
                "template_id": p.template_id,
                "template_name": p.template_name,
                "template_version": "v2.5.0",
                "docker_image": "registry.example.com/pytorch:2.5-cuda12.4",
            },
            "environment": _environment(p),
            "network": _network(p),
        }
        window_cost = None
        if include_metrics:
            metrics, window_cost = self._metrics(c, window, now)
            doc["metrics"] = metrics
        else:
            metrics_window = self._metrics(c, window, now)
            window_cost = metrics_window[1]
        cost: dict[str, Any] = {"currency": p.currency, "current_hourly_rate": _money(rate)}
        if include_cost_breakdown:
            breakdown = {k: _money(v) for k, v in bd.items()}
            breakdown["total_cost_to_date"] = _money(c.cost_between(c.first_hour, hour_index(now)))
            breakdown["window_cost"] = _money(window_cost)
            cost["cost_breakdown"] = breakdown
            cost["cost_projections"] = {
                "daily": _money(rate * 24),
                "weekly": _money(rate * 168),
                "monthly": _money(rate * 720),
                "projection_basis": "current_hourly_rate",
            }
        doc["cost"] = cost
        if include_logs:
            doc["logs"] = _logs(p, now, seg.status)
        return doc

    def _metrics(self, c: _Cluster, window: str, now: datetime) -> tuple[dict[str, Any], Decimal]:
        p = c.plan
        now_h = hour_index(now)
        span, interval = WINDOWS[window]
        if interval == 3600:
            s = c.series(now_h - 168, now_h, now_h)
            points, window_cost = _hourly_points(s, p)
        else:
            points, window_cost = self._fine_points(c, span, interval, now)
        cur = c.series(now_h, now_h + 1, now_h)
        metrics: dict[str, Any] = {
            "window": window,
            "interval_seconds": interval,
            "current": _current(c, cur, now),
            "historical": {"data_points": points},
            "alerts": _alerts(c, cur, now),
        }
        return metrics, window_cost

    def _fine_points(
        self, c: _Cluster, span: int, interval: int, now: datetime
    ) -> tuple[list[dict[str, Any]], Decimal]:
        p = c.plan
        ts = int(now.timestamp())
        end = ts - ts % interval
        start = end - span
        now_h = hour_index(now)
        s = c.series(start // 3600, (end - 1) // 3600 + 1, now_h)
        by_hour = {h: i for i, h in enumerate(s.hours.tolist())}
        points: list[dict[str, Any]] = []
        total = Decimal(0)
        fraction = Decimal(interval) / Decimal(3600)
        for t in range(start, end, interval):
            h = t // 3600
            i = by_hour.get(h)
            if i is None:
                continue
            n = int(s.gpu_count[i])
            rng = np.random.default_rng([c.seed, 3, c.index, t])
            jitter = rng.normal(0.0, 2.0, n)
            base = s.util[i, :n]
            util = np.where(base >= 5.0, np.clip(base + jitter, 5.0, 100.0), base)
            util = np.round(util, 1)
            point: dict[str, Any] = {
                "timestamp": datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "status": s.status[i],
                "gpu_utilization": round(float(util.mean()), 2),
                "gpu_memory_utilization": float(s.avg_mem_util[i]),
                "cpu_utilization": float(s.cpu_util[i]),
                "memory_utilization": float(s.mem_util[i]),
            }
            cost = (s.cost[i] * fraction).quantize(_Q4)
            total += cost
            if p.point_cost:
                point["cost"] = str(cost)
            if p.per_gpu_series:
                point["gpus"] = [
                    {
                        "gpu_id": str(j),
                        "utilization": float(util[j]),
                        "memory_used_gb": float(s.mem[i, j]),
                        "power_draw_w": float(s.power[i, j]),
                    }
                    for j in range(n)
                ]
            points.append(point)
        return points, total


_STATUS_MESSAGES = {
    "running": "Cluster is running normally",
    "stopped": "Cluster is stopped; storage is retained",
    "error": "Cluster is in error: GPU driver not responding",
}


def _hourly_points(s: Series, p: ClusterPlan) -> tuple[list[dict[str, Any]], Decimal]:
    points: list[dict[str, Any]] = []
    hours = s.hours.tolist()
    avg = s.avg_util.tolist()
    avg_mem = s.avg_mem_util.tolist()
    cpu = s.cpu_util.tolist()
    ram = s.mem_util.tolist()
    counts = s.gpu_count.tolist()
    util = s.util.tolist()
    mem = s.mem.tolist()
    power = s.power.tolist()
    total = Decimal(0)
    for i, h in enumerate(hours):
        point: dict[str, Any] = {
            "timestamp": _iso_hour(h),
            "status": s.status[i],
            "gpu_utilization": avg[i],
            "gpu_memory_utilization": avg_mem[i],
            "cpu_utilization": cpu[i],
            "memory_utilization": ram[i],
        }
        total += s.cost[i]
        if p.point_cost:
            point["cost"] = str(s.cost[i])
        if p.per_gpu_series:
            u, m, w = util[i], mem[i], power[i]
            point["gpus"] = [
                {
                    "gpu_id": str(j),
                    "utilization": u[j],
                    "memory_used_gb": m[j],
                    "power_draw_w": w[j],
                }
                for j in range(counts[i])
            ]
        points.append(point)
    return points, total


def _current(c: _Cluster, cur: Series, now: datetime) -> dict[str, Any]:
    seg = c.state_at(now)
    n = seg.gpu_count
    if len(cur.hours):
        util = cur.util[0, :n].tolist()
        mem = cur.mem[0, :n].tolist()
        power = cur.power[0, :n].tolist()
        avg, avg_mem = float(cur.avg_util[0]), float(cur.avg_mem_util[0])
        cpu, ram = float(cur.cpu_util[0]), float(cur.mem_util[0])
    else:
        util, mem, power = [0.0] * n, [0.0] * n, [0.0] * n
        avg = avg_mem = cpu = ram = 0.0
    out: dict[str, Any] = {
        "timestamp": iso(now),
        "gpu_utilization": avg,
        "gpu_memory_utilization": avg_mem,
        "cpu_utilization": cpu,
        "memory_utilization": ram,
    }
    if c.plan.per_gpu_series:
        out["gpus"] = [
            {
                "gpu_id": str(j),
                "utilization": util[j],
                "memory_used_gb": mem[j],
                "memory_total_gb": c.mem_total,
                "temperature_c": round(30.0 + 0.45 * util[j], 1)
                if seg.status != "stopped"
                else 22.0,
                "power_draw_w": power[j],
            }
            for j in range(n)
        ]
    return out


def _alerts(c: _Cluster, cur: Series, now: datetime) -> list[dict[str, Any]]:
    seg = c.state_at(now)
    alerts: list[dict[str, Any]] = []
    if seg.status == "error":
        alerts.append(
            {
                "alert_id": "alert_" + _short_hash(c.plan.id + "error", 8),
                "severity": "critical",
                "metric": "gpu_health",
                "condition": "equals",
                "threshold": 0,
                "current_value": 0.0,
                "duration": "ongoing",
                "triggered_at": iso(c.last_status_change(now)),
                "message": "GPU driver not responding; cluster still billing",
            }
        )
    elif seg.status == "running" and len(cur.hours) and float(cur.avg_util[0]) < 5.0:
        alerts.append(
            {
                "alert_id": "alert_" + _short_hash(c.plan.id + "idle", 8),
                "severity": "warning",
                "metric": "gpu_utilization",
                "condition": "less_than",
                "threshold": 5,
                "current_value": float(cur.avg_util[0]),
                "duration": "1h",
                "triggered_at": iso(floor_hour(now) - timedelta(hours=1)),
                "message": "GPU utilization below 5 %",
            }
        )
    return alerts


def _short_hash(text: str, n: int) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()[:n]


def _environment(p: ClusterPlan) -> dict[str, Any]:
    variables = {
        "WORLD_SIZE": str(p.gpu_count),
        "NCCL_DEBUG": "WARN",
        "HF_HOME": "/workspace/.cache/huggingface",
    }
    if "env" in p.secrets:
        variables["HF_TOKEN"] = f"hf_{CANARY}_{_short_hash(p.id, 12)}"
        variables["WANDB_API_KEY"] = f"{CANARY}-wandb-{_short_hash(p.id + 'w', 16)}"
        variables["DATABASE_URL"] = f"postgres://app:{CANARY}-dbpw@db.internal:5432/features"
    return {"variables": variables, "cuda_version": "12.4"}


def _network(p: ClusterPlan) -> dict[str, Any]:
    slug = p.id.replace("_", "-")
    host = f"ssh-{slug}.example-gpu.cloud"
    ssh: dict[str, Any] = {
        "host": host,
        "port": 22,
        "username": "root",
        "status": "connected",
        "connection_string": f"ssh root@{host}",
    }
    if "ssh" in p.secrets:
        ssh["password"] = f"{CANARY}-ssh-{_short_hash(p.id, 8)}"
        ssh["private_key"] = (
            "-----BEGIN OPENSSH PRIVATE KEY-----\n"
            f"b3BlbnNzaC1rZXktdjEAAAAA{CANARY}AAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
            "-----END OPENSSH PRIVATE KEY-----\n"
        )
    jupyter_url = f"https://{slug}.example-gpu.cloud:32001"
    if "url" in p.secrets:
        ssh["connection_string"] = f"ssh://root:{CANARY}-pass@{host}:22"
        jupyter_url = f"https://jupyter:{CANARY}-tok@{slug}.example-gpu.cloud:32001/?token={CANARY}"
    return {
        "private_ip": f"10.0.{int(_short_hash(p.id, 2), 16)}.{int(_short_hash(p.id + 'i', 2), 16)}",
        "public_ip": f"203.0.113.{int(_short_hash(p.id + 'p', 2), 16) % 250 + 1}",
        "proxy_url": f"https://{slug}.example-gpu.cloud",
        "ssh_connection": ssh,
        "port_mappings": [
            {
                "internal_port": 8888,
                "external_port": 32001,
                "protocol": "tcp",
                "description": "Jupyter",
                "url": jupyter_url,
                "status": "active",
            }
        ],
        "security_groups": ["sg_ml"],
        "firewall_rules": [],
    }


def _logs(p: ClusterPlan, now: datetime, status: str) -> list[dict[str, Any]]:
    t = floor_hour(now)
    logs = [
        {
            "timestamp": iso(t - timedelta(minutes=50)),
            "level": "info",
            "source": "scheduler",
            "message": f"cluster {p.id} status {status}",
        },
        {
            "timestamp": iso(t - timedelta(minutes=30)),
            "level": "info",
            "source": "docker",
            "message": "container healthy",
        },
    ]
    if "logs" in p.secrets:
        logs.append(
            {
                "timestamp": iso(t - timedelta(minutes=20)),
                "level": "info",
                "source": "jupyter",
                "message": f"Jupyter Server at http://127.0.0.1:8888/lab?token={CANARY}-jt",
            }
        )
        logs.append(
            {
                "timestamp": iso(t - timedelta(minutes=10)),
                "level": "debug",
                "source": "app",
                "message": f"export AWS_SECRET_ACCESS_KEY={CANARY}/aws+secret",
            }
        )
    if status == "error":
        logs.append(
            {
                "timestamp": iso(t - timedelta(minutes=5)),
                "level": "error",
                "source": "nvidia",
                "message": "NVRM: Xid 79, GPU has fallen off the bus",
            }
        )
    return logs


# -- the generated fleet -------------------------------------------------------------------------

_NAME_PARTS = {
    "training": ("llm-train", "pretrain", "finetune", "rlhf"),
    "inference": ("serve", "infer", "embed-api", "rerank"),
    "notebook": ("nb", "jupyter", "dev"),
    "forgotten": ("exp", "tmp", "test"),
    "partial": ("ddp-job", "multi-gpu", "sweep"),
    "stopped": ("old", "archive", "paused"),
    "error": ("batch", "worker", "eval"),
}
_PEOPLE = ("alice", "bob", "chen", "dana", "emre", "fatima", "gus", "hana", "ivan", "julia")
_PROJECTS = (
    ("proj_ml", "ML Research"),
    ("proj_search", "Search"),
    ("proj_vision", "Vision"),
    ("proj_ads", "Ads Ranking"),
)
# Each project's owner (project_info.owner_*): the person finance and notifications write to.
_PROJECT_OWNERS = {
    "proj_ml": "hana",
    "proj_search": "emre",
    "proj_vision": "julia",
    "proj_ads": "gus",
}


def _busy_gpus(rng: np.random.Generator, slot: arch.Slot, gpu_count: int) -> int:
    """How many GPUs of a partially used cluster are busy (0: not a partial cluster)."""
    if slot.archetype != "partial":
        return 0
    if "resize" in slot.mods:
        return 4  # the 8 -> 4 resize keeps exactly the busy ones
    return int(rng.integers(1, max(2, gpu_count // 2 + 1)))


@lru_cache(maxsize=256)
def _deck_order(seed: int, deck_round: int) -> tuple[int, ...]:
    """The shuffled order of the deck for its `deck_round`-th copy."""
    perm = np.random.default_rng([seed, 0, deck_round]).permutation(len(arch.DECK))
    return tuple(int(i) for i in perm)


def _generate_plan(spec: FleetSpec, index: int) -> ClusterPlan:
    """The plan of generated cluster `index`: a pure function of (spec.seed, index)."""
    seed = spec.seed
    deck_round, pos = divmod(index, len(arch.DECK))
    slot = arch.DECK[_deck_order(seed, deck_round)[pos]]
    rng = np.random.default_rng([seed, 1, index])
    mods = slot.mods
    types, counts = arch.gpu_choices(slot.archetype, mods)
    gpu_type = str(rng.choice(types))
    gpu_count = int(rng.choice(counts))
    if "eur" in mods:
        region = str(rng.choice(arch.EUR_REGIONS))
        currency = "EUR"
    else:
        region = str(rng.choice([r for r in arch.REGIONS if r not in arch.EUR_REGIONS]))
        currency = "USD"
    price = arch.price_for(rng, gpu_type, currency)
    cpu_cores = 8 * gpu_count if gpu_type in ("H100", "A100") else 4 * gpu_count
    memory_gb = 16 * cpu_cores
    storage_gb = int(rng.choice([250, 500, 1000, 2000]))
    q = _Q4
    cpu_rate = (Decimal("0.0100") * cpu_cores).quantize(q)
    memory_rate = (Decimal("0.0005") * memory_gb).quantize(q)
    storage_rate = (Decimal("0.00014") * storage_gb).quantize(q)
    network_rate = Decimal(f"{float(rng.uniform(0.01, 0.12)):.4f}")
    start = spec.start.astimezone(UTC)
    period_h = max(spec.days * 24, 48)
    minutes = int(rng.integers(0, 60))
    if "created" in mods:
        created = floor_hour(start) + timedelta(
            hours=int(rng.integers(6, period_h * 3 // 4)), minutes=minutes
        )
    else:
        created = floor_hour(start) - timedelta(
            hours=int(rng.integers(8 * 24, 30 * 24)), minutes=minutes
        )
    events: list[ClusterEvent] = []
    after = floor_hour(max(created, start))

    def _at(lo_h: int, hi_h: int) -> datetime:
        return after + timedelta(hours=int(rng.integers(lo_h, max(lo_h + 1, hi_h))))

    status = "running"
    if slot.archetype == "stopped" and "stop_mid" not in mods:
        events.append(ClusterEvent(floor_hour(created) + timedelta(days=1, hours=5), "stop"))
    if "stop_mid" in mods:
        events.append(ClusterEvent(_at(24, 72), "stop"))
    if slot.archetype == "error" and "error_mid" not in mods:
        events.append(ClusterEvent(floor_hour(start) - timedelta(days=2, hours=3), "error"))
    if "error_mid" in mods:
        events.append(ClusterEvent(_at(48, period_h // 2), "error"))
    if "stop_start" in mods:
        stop = _at(48, period_h // 2)
        events.append(ClusterEvent(stop, "stop"))
        events.append(ClusterEvent(stop + timedelta(hours=int(rng.integers(30, 60))), "start"))
    if "price" in mods:
        factor = Decimal(str(rng.choice(["0.80", "0.90", "1.15"])))
        events.append(
            ClusterEvent(
                _at(36, period_h * 2 // 3),
                "price",
                gpu_price=(price * factor).quantize(Decimal("0.01")),
            )
        )
    if "resize" in mods:
        events.append(ClusterEvent(_at(36, period_h * 2 // 3), "resize", gpu_count=4))
    deleted = None
    if "deleted" in mods:
        deleted = _at(48, period_h - 12)
    secrets = frozenset(m.removeprefix("secrets_") for m in mods if m.startswith("secrets_"))
    person = str(rng.choice(_PEOPLE))
    project_id, project_name = _PROJECTS[int(rng.integers(0, len(_PROJECTS)))]
    name = slot.hostile_name or (
        f"{rng.choice(_NAME_PARTS[slot.archetype])}-{person}-{index:02d}"
        if slot.archetype == "notebook"
        else f"{rng.choice(_NAME_PARTS[slot.archetype])}-{index:03d}"
    )
    cid = "cls_" + _short_hash(f"{seed}:{index}", 10)
    return ClusterPlan(
        id=cid,
        name=name,
        created_at=created,
        gpu_type=gpu_type,
        gpu_count=gpu_count,
        gpu_price=price,
        cpu_rate=cpu_rate,
        memory_rate=memory_rate,
        storage_rate=storage_rate,
        network_rate=network_rate,
        currency=currency,
        status=status,
        deleted_at=deleted,
        events=tuple(sorted(events, key=lambda e: e.at)),
        archetype=slot.archetype,
        per_gpu_series="no_gpus" not in mods,
        point_cost="no_point_cost" not in mods,
        late_data="late" in mods,
        busy_gpus=_busy_gpus(rng, slot, gpu_count),
        description=f"{slot.archetype} cluster"
        + (" of " + person if slot.archetype == "notebook" else ""),
        region=region,
        cpu_cores=cpu_cores,
        memory_gb=memory_gb,
        storage_gb=storage_gb,
        project_id=project_id,
        project_name=project_name,
        owner_email=f"{_PROJECT_OWNERS[project_id]}@example.com",
        template_id="tmpl_jupyter" if slot.archetype == "notebook" else "tmpl_pytorch",
        template_name="Jupyter Lab CUDA 12.4"
        if slot.archetype == "notebook"
        else "PyTorch 2.5 CUDA 12.4",
        secrets=secrets,
    )


__all__ = [
    "CANARY",
    "ClusterEvent",
    "ClusterPlan",
    "Fleet",
    "FleetSpec",
    "Series",
    "floor_hour",
    "hour_index",
    "hour_start",
    "iso",
]
