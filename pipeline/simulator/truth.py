"""Ground truth: what the pipeline should find, computed from the fleet's generative series.

`ground_truth(fleet, snapshot_times, thresholds)` follows DESIGN.md "Definitions" in plain
Python over the buckets a pipeline snapshotting at `snapshot_times` would see: for each cluster,
the union of the 7-day windows of the snapshots at which it existed. It never reads JSON and
shares no code with the client, the store or the SQL models, so that a disagreement shows a bug
in one of them. Where DESIGN.md leaves a choice open, the choice made here is written down:

- A bucket's values are those of the newest snapshot whose window holds it (newest wins, as the
  store keeps them): final for every bucket except the preliminary ones only the last snapshot saw
  (late-data clusters). `values="final"` uses final values everywhere instead.
- The snapshot nearest a bucket is nearest to the bucket's midpoint; a tie goes to the later
  snapshot. A bucket is priced by the nearest snapshot that bills GPUs (gpu component > 0), else
  by the nearest snapshot at all. Its GPU cost (all GPUs) = bucket cost x gpu component / sum of
  components when the point carries `cost`, else gpu component x hours x bucket GPUs / snapshot
  GPUs. A GPU's price = GPU cost / bucket GPUs.
- Bucket GPUs: the per-GPU entries when the series exists, else the `gpu_count` of the nearest
  snapshot. Billed: status not `stopped`. actual_cost = the provider's cost of every seen bucket
  (stopped ones bill storage), even when the point carries no `cost`.
- Projections: for each snapshot time t and horizon h (24, 168, 720 h) with t + h <= the last
  snapshot time; projected = the hourly rate at t x h; actual = the sum of the costs of the seen
  buckets among the h hourly buckets from floor_hour(t) (the same hours as the difference of
  `total_cost_to_date`, which counts complete buckets; identical to [t, t + h) when snapshots are
  on the hour); scored only when those buckets cover >= 95 % of the h hours.
- Recommendations, over the last snapshot's 7-day window and its state at that instant:
  `stop_idle` and `schedule` and `downsize` only for running clusters; "all GPUs idle" uses the
  per-GPU series when there is one, else the cluster utilization. `downsize` P95 is linear
  interpolation (numpy's default, SQL `quantile_cont`), and is recommended only when
  max(1, need) < gpu_count (a downsize that removes nothing is not one). `schedule`: maximal runs
  of consecutive idle billed hourly buckets, a run qualifies at >= 8 h; a UTC day counts when a
  qualifying run holds >= 8 of its hours, and a run that holds 8 h on no single day (a night
  across midnight) counts on the day holding most of its hours (a tie: the later day), so a
  12-hour night counts once, not on both dates it touches, and a weekend-long run counts on
  each day it fills; savings = hours in qualifying runs / 7 x 30 x (rate - storage).
  `delete_storage`: stopped now, every bucket of the window stopped, storage rate > 0.
  `investigate_error`: status `error` now with a positive rate; its monthly_savings is what the
  error state costs, (rate - storage) x 720. `stop_idle` does not exclude `downsize`.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np

from pipeline.config import Thresholds
from pipeline.simulator.fleet import Fleet, hour_index, hour_start, iso

HORIZONS: dict[str, int] = {"daily": 24, "weekly": 168, "monthly": 720}
WINDOW_HOURS = 168
_Q6 = Decimal("0.000001")
_HUNDRED = Decimal(100)


@dataclass(frozen=True)
class DailyTruth:
    """Idle waste and cost of one cluster on one UTC day."""

    cluster_id: str
    day: date
    currency: str
    gpu_hours: Decimal
    idle_gpu_hours: Decimal
    idle_cost: Decimal
    unused_capacity_cost: Decimal
    actual_cost: Decimal
    memory_held_idle_gpu_hours: Decimal
    avg_gpu_utilization: float | None = None  # GPU-hour weighted, billed buckets
    per_gpu: bool = False  # billed buckets carry per-GPU series


@dataclass(frozen=True)
class ProjectionTruth:
    """One scored projection: what the snapshot projected and what accrued."""

    cluster_id: str
    projected_at: datetime
    horizon: str
    horizon_hours: int
    projected_cost: Decimal
    actual_cost: Decimal
    currency: str
    covered_hours: int


@dataclass(frozen=True)
class RecommendationTruth:
    """One recommendation at the last snapshot, with its evidence."""

    cluster_id: str
    kind: str
    monthly_savings: Decimal
    currency: str
    evidence: str
    evidence_hours: int = 0  # hours of data in the window the recommendation stands on


@dataclass(frozen=True)
class RecommendationHistoryTruth:
    """A recommendation's life over all snapshots: open, resolved or closed."""

    cluster_id: str
    kind: str
    status: str  # open | resolved | closed
    monthly_savings: Decimal  # as last seen
    currency: str
    first_seen_at: datetime
    last_seen_at: datetime
    realized_monthly_savings: Decimal | None  # resolved only


@dataclass
class GroundTruth:
    """The expected marts (money as Decimal)."""

    snapshot_times: list[datetime]
    daily: list[DailyTruth]
    projections: list[ProjectionTruth]
    recommendations: list[RecommendationTruth]
    recommendation_history: list[RecommendationHistoryTruth] = field(default_factory=list)

    def fleet_daily(self) -> list[dict[str, Any]]:
        """Per UTC day and currency: cost, gpu_hours, idle_gpu_hours, idle_cost."""
        acc: dict[tuple[date, str], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 4)
        for r in self.daily:
            a = acc[(r.day, r.currency)]
            a[0] += r.actual_cost
            a[1] += r.gpu_hours
            a[2] += r.idle_gpu_hours
            a[3] += r.idle_cost
        return [
            {
                "day": d,
                "currency": c,
                "cost": v[0],
                "gpu_hours": v[1],
                "idle_gpu_hours": v[2],
                "idle_cost": v[3],
            }
            for (d, c), v in sorted(acc.items())
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: Decimal as strings, datetimes as ISO `Z`, days as YYYY-MM-DD."""
        return {
            "snapshot_times": [iso(t) for t in self.snapshot_times],
            "daily": [_jsonable(asdict(r)) for r in self.daily],
            "fleet_daily": [_jsonable(r) for r in self.fleet_daily()],
            "projections": [_jsonable(asdict(r)) for r in self.projections],
            "recommendations": [_jsonable(asdict(r)) for r in self.recommendations],
            "recommendation_history": [_jsonable(asdict(r)) for r in self.recommendation_history],
        }


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, Decimal):
            out[k] = str(v)
        elif isinstance(v, datetime):
            out[k] = iso(v)
        elif isinstance(v, date):
            out[k] = v.isoformat()
        else:
            out[k] = v
    return out


@dataclass
class _Snap:
    at: datetime
    ms: int
    status: str
    gpu_count: int
    gpu: Decimal
    storage: Decimal
    components: Decimal  # sum of every *_cost_per_hour = the hourly rate

    @property
    def bills_gpus(self) -> bool:
        return self.gpu > 0 and self.gpu_count > 0


@dataclass
class _Bucket:
    hour: int
    status: str
    gpus: int  # GPUs reported in the series (the cluster's count in that hour)
    util: list[float]
    mem: list[float]
    avg_util: float
    cost: Decimal


def ground_truth(
    fleet: Fleet,
    snapshot_times: Iterable[datetime],
    thresholds: Thresholds | None = None,
    *,
    values: str = "newest",
) -> GroundTruth:
    """Expected daily idle waste, scored projections and last-night recommendations.

    `snapshot_times`: the instants a pipeline snapshots the fleet (any order). `values`:
    "newest" (what the store keeps, default) or "final" (late revisions applied everywhere).
    """
    if values not in ("newest", "final"):
        raise ValueError("values must be 'newest' or 'final'")
    th = thresholds or Thresholds()
    times = sorted(set(snapshot_times))
    if not times:
        raise ValueError("ground truth needs at least one snapshot time")
    daily: list[DailyTruth] = []
    projections: list[ProjectionTruth] = []
    recs: list[RecommendationTruth] = []
    history: list[RecommendationHistoryTruth] = []
    for cid in fleet.cluster_ids():
        snaps = [_snap(fleet, cid, t) for t in times if fleet.exists(cid, t)]
        if not snaps:
            continue
        plan = fleet.plan(cid)
        buckets = _seen_buckets(fleet, cid, snaps, values)
        daily.extend(
            _daily(cid, plan.currency, plan.per_gpu_series, plan.point_cost, buckets, snaps, th)
        )
        projections.extend(_projections(cid, plan.currency, buckets, snaps, times[-1], th))
        evaluated = [
            (snap, _recommendations(cid, plan.currency, plan.per_gpu_series, buckets, snap, th))
            for snap in snaps
        ]
        if snaps[-1].at == times[-1]:
            recs.extend(evaluated[-1][1])
        history.extend(_history(evaluated, deleted=snaps[-1].at != times[-1], th=th))
    return GroundTruth(times, daily, projections, recs, history)


def _snap(fleet: Fleet, cid: str, t: datetime) -> _Snap:
    state = fleet.state(cid, t)
    bd = state["breakdown"]
    return _Snap(
        at=t,
        ms=int(t.timestamp() * 1000),
        status=state["status"],
        gpu_count=state["gpu_count"],
        gpu=bd["gpu_cost_per_hour"],
        storage=bd["storage_cost_per_hour"],
        components=sum(bd.values(), Decimal(0)),
    )


def _seen_buckets(fleet: Fleet, cid: str, snaps: list[_Snap], values: str) -> list[_Bucket]:
    """Every bucket in some snapshot's window, valued as its newest snapshot returned it."""
    seen: dict[int, _Bucket] = {}
    low: int | None = None  # every hour from here up to the newest window is already seen
    for snap in reversed(snaps):
        now_h = hour_index(snap.at)
        lo = now_h - WINDOW_HOURS
        hi = now_h if low is None else min(now_h, low)
        if hi <= lo:
            continue
        low = lo if low is None else min(low, lo)
        series = fleet.series(cid, lo, hi, now=snap.at if values == "newest" else None)
        hours = series.hours.tolist()
        util = series.util.tolist()
        mem = series.mem.tolist()
        avg = series.avg_util.tolist()
        counts = series.gpu_count.tolist()
        for i, h in enumerate(hours):
            if h in seen:
                continue
            n = counts[i]
            seen[h] = _Bucket(
                h, series.status[i], n, util[i][:n], mem[i][:n], avg[i], series.cost[i]
            )
    return [seen[h] for h in sorted(seen)]


def _nearest(snaps: list[_Snap], mid_ms: int) -> _Snap | None:
    """The snapshot nearest `mid_ms` (`snaps` sorted by time); a tie goes to the later one."""
    if not snaps:
        return None
    i = bisect.bisect_left([s.ms for s in snaps], mid_ms)
    if i == 0:
        return snaps[0]
    if i == len(snaps):
        return snaps[-1]
    before, after = snaps[i - 1], snaps[i]
    return after if after.ms - mid_ms <= mid_ms - before.ms else before


def _daily(
    cid: str,
    currency: str,
    per_gpu: bool,
    point_cost: bool,
    buckets: list[_Bucket],
    snaps: list[_Snap],
    th: Thresholds,
) -> list[DailyTruth]:
    billing = [s for s in snaps if s.bills_gpus]
    thr = th.idle_threshold_pct
    acc: dict[date, list[Decimal]] = {}
    for b in buckets:
        day = hour_start(b.hour).date()
        a = acc.setdefault(day, [Decimal(0)] * 7)
        a[5] += b.cost
        if b.status == "stopped":
            continue
        mid = b.hour * 3_600_000 + 1_800_000
        near_any = _nearest(snaps, mid)
        assert near_any is not None
        pricer = _nearest(billing, mid) or near_any
        n = b.gpus if per_gpu else near_any.gpu_count
        if n == 0:
            continue
        if point_cost:
            gpu_cost = (
                b.cost * pricer.gpu / pricer.components if pricer.components > 0 else Decimal(0)
            )
        else:
            gpu_cost = pricer.gpu * n / pricer.gpu_count if pricer.gpu_count > 0 else Decimal(0)
        price = gpu_cost / n
        if per_gpu:
            idle = [u < thr for u in b.util]
            n_idle = sum(idle)
            held = sum(
                1
                for u_idle, m in zip(idle, b.mem, strict=True)
                if u_idle and m >= th.memory_held_gb
            )
            util_sum = sum((Decimal(repr(u)) for u in b.util), Decimal(0))
        else:
            n_idle = n if b.avg_util < thr else 0
            held = 0
            util_sum = n * Decimal(repr(b.avg_util))
        unused = n - util_sum / _HUNDRED
        a[0] += n
        a[1] += n_idle
        a[2] += price * n_idle
        a[3] += price * unused
        a[4] += held
        a[6] += util_sum
    return [
        DailyTruth(
            cid,
            day,
            currency,
            a[0],
            a[1],
            a[2].quantize(_Q6),
            a[3].quantize(_Q6),
            a[5],
            a[4],
            float(a[6] / a[0]) if a[0] else None,
            per_gpu and a[0] > 0,
        )
        for day, a in sorted(acc.items())
    ]


def _projections(
    cid: str,
    currency: str,
    buckets: list[_Bucket],
    snaps: list[_Snap],
    last: datetime,
    th: Thresholds,
) -> list[ProjectionTruth]:
    cost_by_hour = {b.hour: b.cost for b in buckets}
    out: list[ProjectionTruth] = []
    for s in snaps:
        # the horizon's buckets are the h hours from the hour holding t: what the snapshot's
        # total_cost_to_date (complete buckets up to floor_hour(t)) is counted from
        first = hour_index(s.at)
        for horizon, hours in HORIZONS.items():
            if s.at + timedelta(hours=hours) > last:
                continue
            inside = [cost_by_hour[h] for h in range(first, first + hours) if h in cost_by_hour]
            if len(inside) * 100 < th.drift_min_coverage_pct * hours:
                continue
            out.append(
                ProjectionTruth(
                    cid,
                    s.at,
                    horizon,
                    hours,
                    (s.components * hours).quantize(_Q6),
                    sum(inside, Decimal(0)),
                    currency,
                    len(inside),
                )
            )
    return out


def _all_idle(b: _Bucket, per_gpu: bool, thr: float) -> bool:
    if per_gpu:
        return all(u < thr for u in b.util)
    return b.avg_util < thr


def _recommendations(
    cid: str,
    currency: str,
    per_gpu: bool,
    buckets: list[_Bucket],
    snap: _Snap,
    th: Thresholds,
) -> list[RecommendationTruth]:
    now_h = hour_index(snap.at)
    # the recommendation window: lookback_days over the stored history (7 days by default)
    lookback = th.lookback_days
    window = [b for b in buckets if now_h - lookback * 24 <= b.hour < now_h]
    billed = [b for b in window if b.status != "stopped"]
    thr = th.idle_threshold_pct
    month = th.hours_per_month
    rate_less_storage = snap.components - snap.storage
    out: list[RecommendationTruth] = []

    def rec(kind: str, savings: Decimal, evidence: str) -> None:
        out.append(
            RecommendationTruth(
                cid, kind, savings.quantize(_Q6), currency, evidence, evidence_hours=len(window)
            )
        )

    stop_idle = False
    if snap.status == "running" and len(billed) >= th.stop_idle_min_buckets:
        idle = sum(1 for b in billed if _all_idle(b, per_gpu, thr))
        if idle * 100 >= th.stop_idle_share_pct * len(billed):
            stop_idle = True
            rec(
                "stop_idle",
                rate_less_storage * month,
                f"all GPUs idle in {idle} of {len(billed)} billed hours",
            )
    if snap.status == "running" and per_gpu and billed:
        busy = np.array([sum(1 for u in b.util if u >= thr) for b in billed], dtype=float)
        p = float(np.percentile(busy, th.downsize_percentile))
        need = math.ceil(round(p, 9))
        keep = max(1, need)
        if keep < snap.gpu_count:
            price = snap.gpu / snap.gpu_count
            rec(
                "downsize",
                (snap.gpu_count - keep) * price * month,
                f"P{th.downsize_percentile:g} of busy GPUs {p:g} of {snap.gpu_count}",
            )
    if snap.status == "running" and not stop_idle:
        run_hours, days = _idle_runs(window, per_gpu, thr, th.schedule_min_idle_hours)
        # schedule_min_days of every 7 days of the window
        if len(days) * 7 >= th.schedule_min_days * lookback:
            daily_idle = Decimal(run_hours) / Decimal(lookback)
            rec(
                "schedule",
                daily_idle * 30 * rate_less_storage,
                f"idle runs >= {th.schedule_min_idle_hours} h on {len(days)} days, "
                f"{run_hours} h in {lookback} days",
            )
    if snap.status == "stopped" and window and not billed and snap.storage > 0:
        rec(
            "delete_storage",
            snap.storage * month,
            f"stopped for all {len(window)} hours of the window",
        )
    if snap.status == "error" and snap.components > 0:
        rec(
            "investigate_error",
            rate_less_storage * month,
            f"status error while billing {snap.components} per hour",
        )
    return out


def _history(
    evaluated: list[tuple[_Snap, list[RecommendationTruth]]], *, deleted: bool, th: Thresholds
) -> list[RecommendationHistoryTruth]:
    """Each kind's span over the snapshots, and why it ended (DESIGN: resolved lifecycle).

    open: holds at the cluster's latest snapshot (and the cluster still exists). resolved: gone
    because the cluster was deleted, stopped, or lost GPUs since it was last seen; realized =
    (rate when last seen - rate now, 0 when deleted) x a month. closed: gone otherwise.
    """
    latest = evaluated[-1][0]
    seen: dict[str, tuple[datetime, _Snap, RecommendationTruth]] = {}
    for snap, recs in evaluated:
        for r in recs:
            first = seen[r.kind][0] if r.kind in seen else snap.at
            seen[r.kind] = (first, snap, r)
    out: list[RecommendationHistoryTruth] = []
    for kind, (first, then, r) in seen.items():
        realized: Decimal | None = None
        if then.at == latest.at and not deleted:
            status = "open"
        elif (
            deleted
            or (latest.status == "stopped" and then.status != "stopped")
            or latest.gpu_count < then.gpu_count
        ):
            status = "resolved"
            rate_now = Decimal(0) if deleted else latest.components
            realized = ((then.components - rate_now) * th.hours_per_month).quantize(_Q6)
        else:
            status = "closed"
        out.append(
            RecommendationHistoryTruth(
                r.cluster_id, kind, status, r.monthly_savings, r.currency, first, then.at, realized
            )
        )
    return out


def _idle_runs(
    window: list[_Bucket], per_gpu: bool, thr: float, min_hours: int
) -> tuple[int, set[date]]:
    """Hours in maximal idle runs of >= `min_hours` consecutive billed buckets, and their days."""
    total = 0
    days: set[date] = set()
    run: list[int] = []

    def close() -> None:
        nonlocal total
        if len(run) >= min_hours:
            total += len(run)
            per_day: dict[date, int] = {}
            for h in run:
                day = hour_start(h).date()
                per_day[day] = per_day.get(day, 0) + 1
            full = {day for day, hours in per_day.items() if hours >= min_hours}
            # a night across midnight: the day holding most of it (a tie: the later day)
            days.update(full or {max(per_day, key=lambda day: (per_day[day], day))})
        run.clear()

    for b in window:
        idle = b.status != "stopped" and _all_idle(b, per_gpu, thr)
        if idle and (not run or b.hour == run[-1] + 1):
            run.append(b.hour)
        else:
            close()
            if idle:
                run.append(b.hour)
    close()
    return total, days


# --------------------------------------------------------------------------------------------
# Notifications (the notify stage): what each night must announce, and what it must not.


@dataclass(frozen=True)
class NotifyEventTruth:
    """One event notify must announce on a night (after that night's snapshot and build)."""

    night: int  # 0-based index into the snapshot times
    type: str  # recommendation_opened | recommendation_resolved | run_health
    cluster_id: str | None
    kind: str | None
    monthly_savings: Decimal | None
    realized_monthly_savings: Decimal | None = None
    resurfaced: bool = False
    status: str | None = None  # run_health: the run's status


@dataclass(frozen=True)
class Dismissal:
    """A recommendation dismissed after night `night`'s notify (for good, no `until`)."""

    night: int
    cluster_id: str
    kind: str


def notify_truth(
    fleet: Fleet,
    snapshot_times: Iterable[datetime],
    thresholds: Thresholds | None = None,
    *,
    min_monthly_savings: Decimal = Decimal(100),
    dismissals: Iterable[Dismissal] = (),
    run_statuses: Iterable[str] | None = None,
    growth: Decimal = Decimal("1.5"),
) -> list[NotifyEventTruth]:
    """What `gpucost notify`, run after every night's snapshot and build, must announce.

    From the recommendation lifecycle of `ground_truth` over the nights so far (DESIGN.md):
    - `recommendation_opened` the first night a recommendation is open with monthly savings >=
      `min_monthly_savings` (once per first_seen_at: a recommendation that closes and opens again
      keeps its first sighting and is not announced twice), unless dismissed;
    - a dismissed one (after night d) is not announced on later nights while its savings stay
      below `growth` x its savings at night d; when they reach that, once more (resurfaced);
    - `recommendation_resolved` the first night it is resolved, with its realized savings, when
      its last savings reach the minimum and no dismissal holds;
    - `run_health`: with `run_statuses` (one per night: complete | partial | failed), each
      night whose status differs from the last announced one (initially complete).
    Budget and anomaly events belong to the finance marts and are not part of this truth.
    """
    th = thresholds or Thresholds()
    times = sorted(set(snapshot_times))
    by_rec: dict[tuple[str, str], list[Dismissal]] = defaultdict(list)
    for d in dismissals:
        by_rec[(d.cluster_id, d.kind)].append(d)
    out: list[NotifyEventTruth] = []
    announced: set[tuple[Any, ...]] = set()
    savings_on: dict[tuple[str, str, int], Decimal] = {}
    for night in range(len(times)):
        history = ground_truth(fleet, times[: night + 1], th).recommendation_history
        for r in history:
            if r.status == "open":
                savings_on[(r.cluster_id, r.kind, night)] = r.monthly_savings
        for r in sorted(history, key=lambda r: (r.cluster_id, r.kind)):
            if r.monthly_savings < min_monthly_savings or r.status == "closed":
                continue
            held = [d for d in by_rec[(r.cluster_id, r.kind)] if d.night < night]
            dismissal = held[-1] if held else None
            outgrown = False
            if dismissal is not None:
                then = savings_on.get((r.cluster_id, r.kind, dismissal.night))
                outgrown = then is not None and r.monthly_savings >= (then * growth)
            declined = dismissal is not None and not outgrown
            if r.status == "open":
                if declined:
                    continue
                key: tuple[Any, ...] = (
                    "opened",
                    r.cluster_id,
                    r.kind,
                    r.first_seen_at,
                    dismissal.night if outgrown and dismissal else None,
                )
                if key not in announced:
                    announced.add(key)
                    out.append(
                        NotifyEventTruth(
                            night,
                            "recommendation_opened",
                            r.cluster_id,
                            r.kind,
                            r.monthly_savings,
                            resurfaced=outgrown,
                        )
                    )
            elif not declined:
                key = ("resolved", r.cluster_id, r.kind, r.last_seen_at)
                if key not in announced:
                    announced.add(key)
                    out.append(
                        NotifyEventTruth(
                            night,
                            "recommendation_resolved",
                            r.cluster_id,
                            r.kind,
                            r.monthly_savings,
                            r.realized_monthly_savings,
                        )
                    )
    if run_statuses is not None:
        last = "complete"
        for night, status in enumerate(run_statuses):
            if status != last:
                out.append(NotifyEventTruth(night, "run_health", None, None, None, status=status))
                last = status
    return out
