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
    # budget_threshold: "budget/scope/scope_id/month/basis/level"; spend_anomaly:
    # "scope/scope_id/day/currency" (what tells two such events apart)
    subject: str | None = None


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
    finance: bool = False,
    budgets: Iterable[Any] = (),
    cost_centers: dict[str, str] | None = None,
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
    With `finance`, from `finance_truth` of the nights so far (with `budgets`, `cost_centers`):
    - `budget_threshold`: for each budget's newest month and each basis (actual, forecast), the
      highest of 50 / 80 / 100 % reached, once per level higher than any announced before;
    - `spend_anomaly`: each anomaly of the last 7 days of the data (up to the newest day with
      spend), once.
    """
    th = thresholds or Thresholds()
    times = sorted(set(snapshot_times))
    by_rec: dict[tuple[str, str], list[Dismissal]] = defaultdict(list)
    for d in dismissals:
        by_rec[(d.cluster_id, d.kind)].append(d)
    out: list[NotifyEventTruth] = []
    announced: set[tuple[Any, ...]] = set()
    savings_on: dict[tuple[str, str, int], Decimal] = {}
    budget_list = list(budgets)
    levels_announced: dict[tuple[Any, ...], int] = {}
    for night in range(len(times)):
        so_far = ground_truth(fleet, times[: night + 1], th)
        history = so_far.recommendation_history
        if finance:
            out += _finance_events(
                night,
                max(r.day for r in so_far.daily),
                finance_truth(
                    fleet, so_far, cost_centers=cost_centers, budgets=budget_list, thresholds=th
                ),
                announced,
                levels_announced,
            )
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


NOTIFY_BUDGET_LEVELS = (50, 80, 100)
NOTIFY_ANOMALY_DAYS = 7


def _finance_events(
    night: int,
    newest_day: date,
    finance: FinanceTruth,
    announced: set[tuple[Any, ...]],
    levels_announced: dict[tuple[Any, ...], int],
) -> list[NotifyEventTruth]:
    """The budget_threshold and spend_anomaly events of one night (see `notify_truth`)."""
    out: list[NotifyEventTruth] = []
    newest: dict[tuple[Any, ...], BudgetStatusTruth] = {}
    for b in finance.budget_status:
        key = (b.budget_name, b.scope, b.scope_id)
        if key not in newest or b.month > newest[key].month:
            newest[key] = b
    for key in sorted(newest, key=str):
        b = newest[key]
        for basis, value in (("actual", b.actual_to_date), ("forecast", b.forecast_month_end)):
            pct = value / b.amount * 100
            reached = [level for level in NOTIFY_BUDGET_LEVELS if pct >= level]
            ledger_key = (*key, b.month, basis)
            if reached and reached[-1] > levels_announced.get(ledger_key, 0):
                levels_announced[ledger_key] = reached[-1]
                subject = f"{b.budget_name}/{b.scope}/{b.scope_id}/{b.month}/{basis}/{reached[-1]}"
                out.append(
                    NotifyEventTruth(night, "budget_threshold", None, None, None, subject=subject)
                )
    if finance.anomalies:
        top = newest_day  # the last week of the data, not of the anomalies
        for a in sorted(finance.anomalies, key=lambda a: (a.day, a.scope, str(a.scope_id))):
            if a.day <= top - timedelta(days=NOTIFY_ANOMALY_DAYS):
                continue
            seen = ("anomaly", a.day, a.scope, a.scope_id, a.currency)
            if seen not in announced:
                announced.add(seen)
                subject = f"{a.scope}/{a.scope_id}/{a.day}/{a.currency}"
                out.append(
                    NotifyEventTruth(night, "spend_anomaly", None, None, None, subject=subject)
                )
    return out


# --------------------------------------------------------------------------------------------
# Finance: chargeback by project, budgets with the run-rate forecast, spend anomalies
# --------------------------------------------------------------------------------------------
#
# Choices written down (the SQL models follow the same):
# - A cluster is charged to its plan's project (the project its latest snapshot names); a
#   project `[cost_centers]` does not map has cost center "unmapped".
# - Budgets: one row per budget and month with spend in its currency. actual_to_date = the
#   scope's cost in the month; forecast = actual + for each cluster of the scope existing at the
#   last snapshot time, its hourly rate then (storage only when stopped: the breakdown of a
#   stopped cluster) x the hours from that instant to the month's end (0 once it has ended).
# - Anomalies: complete UTC days only (the first day counts when the first bucket starts at
#   midnight; the last complete day is the one before the day of the last bucket's end); a day
#   without a cluster's buckets counts as 0; baseline = median of the previous N days, MAD =
#   median |x - baseline|; flagged at |cost - baseline| >= floor and > factor x MAD. Clusters
#   behind: delta against their own N-day median of the same sign as the scope's, largest first
#   (a tie: cluster id). Cause of the first: billed hours up -> started, down -> stopped; else
#   max billed GPUs changed -> resize; else cost per billed GPU-hour moved > 0.1 % ->
#   rate_change; else usage (against the day before; none that day: stopped).


@dataclass(frozen=True)
class ProjectMonthTruth:
    """One project's spend in one UTC month and currency."""

    month: date
    project_id: str
    currency: str
    cost_center: str
    cost: Decimal
    gpu_hours: Decimal
    idle_gpu_hours: Decimal
    idle_cost: Decimal
    unused_capacity_cost: Decimal


@dataclass(frozen=True)
class BudgetStatusTruth:
    """A budget in one month: actual, run-rate forecast and status."""

    budget_name: str
    scope: str
    scope_id: str | None
    month: date
    currency: str
    amount: Decimal
    actual_to_date: Decimal
    forecast_month_end: Decimal
    status: str


@dataclass(frozen=True)
class AnomalyTruth:
    """A day whose spend left its scope's recent baseline."""

    day: date
    scope: str
    scope_id: str | None
    currency: str
    cost: Decimal
    baseline: Decimal
    cause: str
    cluster_ids: tuple[str, ...]


@dataclass
class FinanceTruth:
    """The expected finance marts."""

    project_monthly: list[ProjectMonthTruth]
    budget_status: list[BudgetStatusTruth]
    anomalies: list[AnomalyTruth]


UNMAPPED = "unmapped"


def finance_truth(
    fleet: Fleet,
    truth: GroundTruth,
    *,
    cost_centers: dict[str, str] | None = None,
    budgets: Iterable[Any] = (),
    thresholds: Thresholds | None = None,
) -> FinanceTruth:
    """Project months, budget status and anomalies from `truth` (a `ground_truth` of the same
    fleet and snapshot times) and the fleet's series. `budgets`: objects with name, scope,
    scope_id, amount, currency (pipeline.config.Budget)."""
    th = thresholds or Thresholds()
    centers = cost_centers or {}
    project = {cid: fleet.plan(cid).project_id for cid in fleet.cluster_ids()}

    def center_of(project_id: str) -> str:
        return centers.get(project_id, UNMAPPED)

    acc: dict[tuple[date, str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 5)
    for r in truth.daily:
        a = acc[(r.day.replace(day=1), project[r.cluster_id], r.currency)]
        a[0] += r.actual_cost
        a[1] += r.gpu_hours
        a[2] += r.idle_gpu_hours
        a[3] += r.idle_cost
        a[4] += r.unused_capacity_cost
    months = [ProjectMonthTruth(m, p, c, center_of(p), *v) for (m, p, c), v in sorted(acc.items())]
    return FinanceTruth(
        months,
        _budget_truth(fleet, truth, months, project, center_of, budgets),
        _anomaly_truth(fleet, truth, project, th),
    )


def _month_end(month: date) -> datetime:
    from datetime import UTC

    nxt = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
    return datetime(nxt.year, nxt.month, nxt.day, tzinfo=UTC)


def _budget_truth(
    fleet: Fleet,
    truth: GroundTruth,
    months: list[ProjectMonthTruth],
    project: dict[str, str],
    center_of: Any,
    budgets: Iterable[Any],
) -> list[BudgetStatusTruth]:
    last = truth.snapshot_times[-1]

    def in_scope(budget: Any, project_id: str) -> bool:
        if budget.scope == "project":
            return bool(project_id == budget.scope_id)
        if budget.scope == "cost_center":
            return bool(center_of(project_id) == budget.scope_id)
        return True

    out: list[BudgetStatusTruth] = []
    for b in budgets:
        for month in sorted({m.month for m in months if m.currency == b.currency}):
            actual = sum(
                (
                    m.cost
                    for m in months
                    if m.month == month and m.currency == b.currency and in_scope(b, m.project_id)
                ),
                Decimal(0),
            )
            seconds = max(0, int((_month_end(month) - last).total_seconds()))
            remaining = Decimal(0)
            for cid in fleet.cluster_ids():
                plan = fleet.plan(cid)
                if plan.currency != b.currency or not in_scope(b, project[cid]):
                    continue
                if not fleet.exists(cid, last):
                    continue
                rate = sum(fleet.state(cid, last)["breakdown"].values(), Decimal(0))
                remaining += rate * seconds / 3600
            forecast = actual + remaining
            status = "over" if actual >= b.amount else "at_risk" if forecast >= b.amount else "ok"
            out.append(
                BudgetStatusTruth(
                    b.name,
                    b.scope,
                    b.scope_id,
                    month,
                    b.currency,
                    b.amount,
                    actual,
                    forecast.quantize(_Q6),
                    status,
                )
            )
    return out


def _median(values: list[Decimal]) -> Decimal:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _anomaly_truth(
    fleet: Fleet, truth: GroundTruth, project: dict[str, str], th: Thresholds
) -> list[AnomalyTruth]:
    times = truth.snapshot_times
    per_cluster: dict[str, list[_Bucket]] = {}
    for cid in fleet.cluster_ids():
        snaps = [_snap(fleet, cid, t) for t in times if fleet.exists(cid, t)]
        if snaps:
            per_cluster[cid] = _seen_buckets(fleet, cid, snaps, "newest")
    hours = [b.hour for buckets in per_cluster.values() for b in buckets]
    if not hours:
        return []
    first, last = hour_start(min(hours)), hour_start(max(hours) + 1)
    first_day = first.date() if first.hour == 0 else first.date() + timedelta(days=1)
    last_day = last.date() - timedelta(days=1)
    days = [first_day + timedelta(days=i) for i in range((last_day - first_day).days + 1)]
    cost: dict[str, dict[date, Decimal]] = {}
    for cid, buckets in per_cluster.items():
        if not buckets:
            continue
        daily: dict[date, Decimal] = defaultdict(Decimal)
        for b in buckets:
            daily[hour_start(b.hour).date()] += b.cost
        cost[cid] = {d: daily.get(d, Decimal(0)) for d in days}
    scopes: dict[tuple[str, str | None, str], list[str]] = defaultdict(list)
    for cid in cost:
        currency = fleet.plan(cid).currency
        scopes[("project", project[cid], currency)].append(cid)
        scopes[("fleet", None, currency)].append(cid)
    n = th.anomaly_baseline_days
    out: list[AnomalyTruth] = []
    for (scope, scope_id, currency), cids in sorted(scopes.items(), key=lambda kv: str(kv[0])):
        total = {d: sum((cost[c][d] for c in cids), Decimal(0)) for d in days}
        for i in range(n, len(days)):
            day, before = days[i], days[i - n : i]
            values = [total[d] for d in before]
            base = _median(values)
            mad = _median([abs(v - base) for v in values])
            delta = total[day] - base
            if abs(delta) < Decimal(repr(th.anomaly_min_cost)):
                continue
            if not abs(delta) > Decimal(repr(th.anomaly_mad_factor)) * mad:
                continue
            if abs(delta) * 100 < Decimal(repr(th.anomaly_min_pct)) * abs(base):
                continue
            moved = []
            for c in cids:
                d = cost[c][day] - _median([cost[c][x] for x in before])
                if d != 0 and (d > 0) == (delta > 0):
                    moved.append((-abs(d), c))
            behind = tuple(c for _, c in sorted(moved))
            cause = _day_cause(per_cluster[behind[0]], day) if behind else "usage"
            out.append(
                AnomalyTruth(day, scope, scope_id, currency, total[day], base, cause, behind)
            )
    return out


def _day_cause(buckets: list[_Bucket], day: date) -> str:
    """What changed in a cluster from the day before to `day` (see the choices above)."""

    def profile(d: date) -> tuple[int, int | None, Decimal | None, bool]:
        mine = [b for b in buckets if hour_start(b.hour).date() == d]
        billed = [b for b in mine if b.status != "stopped"]
        gpu_hours = sum(b.gpus for b in billed)
        rate = sum((b.cost for b in billed), Decimal(0)) / gpu_hours if gpu_hours else None
        return len(billed), max((b.gpus for b in billed), default=None), rate, bool(mine)

    hours, gpus, rate, seen = profile(day)
    if not seen:
        return "stopped"
    hours_before, gpus_before, rate_before, _ = profile(day - timedelta(days=1))
    if hours > hours_before:
        return "started"
    if hours < hours_before:
        return "stopped"
    if gpus is not None and gpus_before is not None and gpus != gpus_before:
        return "resize"
    if (
        rate is not None
        and rate_before is not None
        and abs(rate - rate_before) > abs(rate_before) * Decimal("0.001")
    ):
        return "rate_change"
    return "usage"


@dataclass(frozen=True)
class BudgetForecastTruth:
    """One night's run-rate forecast of a budget's month, and the month's actual once ended."""

    budget_name: str
    month: date
    currency: str
    forecast_at: datetime
    forecast_month_end: Decimal
    actual_month_end: Decimal | None  # None until the data covers the month's end


def budget_forecast_truth(
    fleet: Fleet,
    truth: GroundTruth,
    *,
    cost_centers: dict[str, str] | None = None,
    budgets: Iterable[Any] = (),
) -> list[BudgetForecastTruth]:
    """Every night's run-rate forecast per budget (marts.budget_forecasts): billed in the month
    by buckets that ended by the night + each cluster of the scope existing then x its rate
    then x the hours to the month's end; the month's actual once a bucket of the scope ends at
    the month's end."""
    centers = cost_centers or {}
    buckets = {
        cid: _seen_buckets(
            fleet,
            cid,
            [_snap(fleet, cid, t) for t in truth.snapshot_times if fleet.exists(cid, t)],
            "newest",
        )
        for cid in fleet.cluster_ids()
        if any(fleet.exists(cid, t) for t in truth.snapshot_times)
    }

    def in_scope(budget: Any, cid: str) -> bool:
        plan = fleet.plan(cid)
        if plan.currency != budget.currency:
            return False
        if budget.scope == "project":
            return bool(plan.project_id == budget.scope_id)
        if budget.scope == "cost_center":
            return bool(centers.get(plan.project_id, UNMAPPED) == budget.scope_id)
        return True

    out: list[BudgetForecastTruth] = []
    for b in budgets:
        cids = [c for c in buckets if in_scope(b, c)]
        for t in truth.snapshot_times:
            month = t.date().replace(day=1)
            end = _month_end(month)
            mine = [
                (hour_start(x.hour), x.cost)
                for c in cids
                for x in buckets[c]
                if hour_start(x.hour).date().replace(day=1) == month
            ]
            before = sum((cost for at, cost in mine if at + timedelta(hours=1) <= t), Decimal(0))
            seconds = max(0, int((end - t).total_seconds()))
            remaining = sum(
                (
                    sum(fleet.state(c, t)["breakdown"].values(), Decimal(0)) * seconds / 3600
                    for c in cids
                    if fleet.exists(c, t)
                ),
                Decimal(0),
            )
            if not mine and remaining == 0:
                continue
            covered = bool(mine) and max(at for at, _ in mine) + timedelta(hours=1) >= end
            out.append(
                BudgetForecastTruth(
                    b.name,
                    month,
                    b.currency,
                    t,
                    (before + remaining).quantize(_Q6),
                    sum((cost for _, cost in mine), Decimal(0)) if covered else None,
                )
            )
    return out
