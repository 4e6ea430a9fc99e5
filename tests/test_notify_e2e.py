"""Fourteen simulated nights of the demo's fleet (40 clusters, seed 7) over real HTTP, with
`gpucost notify` to a real webhook receiver after every night's snapshot and build: every
delivered event is checked against the simulator's ground truth (`notify_truth`), night by night,
including what must no longer be announced after a dismissal."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal

import pytest

from pipeline.config import Budget, ChannelSettings, NotifySettings
from pipeline.models import build_models
from pipeline.notify import run_notify
from pipeline.recs import decide
from pipeline.simulator import Fleet, FleetSpec, Simulator
from pipeline.simulator.truth import Dismissal, ground_truth, notify_truth
from pipeline.snapshot import run_snapshot
from pipeline.store import Store
from tests.notify_helpers import http_receiver
from tests.snapshot_helpers import API_KEY, START, make_config

NIGHTS = 14
CLUSTERS = 40
CENT = Decimal("0.01")
DISMISS_AFTER = 2


def _subject(e) -> str | None:
    if e["type"] == "budget_threshold":
        fields = ("budget_name", "scope", "scope_id", "month", "basis", "threshold_pct")
        return "/".join(str(e[f]) for f in fields)
    if e["type"] == "spend_anomaly":
        return "/".join(str(e[f]) for f in ("scope", "scope_id", "day", "currency"))
    return None


def _key(e) -> tuple:
    return (e["type"], e.get("cluster_id"), e.get("kind"), _subject(e))


def _truth_key(t) -> tuple:
    return (t.type, t.cluster_id, t.kind, t.subject)


def _budgets(fleet: Fleet, times) -> tuple[Budget, ...]:
    """A fleet budget the run's November spend takes past 50 % (not 100 %), and a project
    budget it overruns: amounts from the truth's own November totals."""
    truth = ground_truth(Fleet(fleet.spec), times)
    november = sum(
        (r["cost"] for r in truth.fleet_daily() if r["currency"] == "USD" and r["day"].month == 11),
        Decimal(0),
    )
    project = fleet.plan(fleet.cluster_ids()[0]).project_id
    of_project = {cid for cid in fleet.cluster_ids() if fleet.plan(cid).project_id == project}
    spent = sum(
        (r.actual_cost for r in truth.daily if r.cluster_id in of_project and r.currency == "USD"),
        Decimal(0),
    )
    return (
        Budget("fleet", "fleet", None, (november * Decimal("1.6")).quantize(CENT), "USD"),
        Budget("team", "project", project, (spent * Decimal("0.9")).quantize(CENT), "USD"),
    )


def test_fourteen_nights_announce_exactly_what_the_truth_says(tmp_path):
    fleet = Fleet(FleetSpec(seed=7, clusters=CLUSTERS, start=START))
    times = [START + timedelta(days=n) for n in range(NIGHTS)]
    budgets = _budgets(fleet, times)
    undismissed = notify_truth(Fleet(fleet.spec), times, finance=True, budgets=budgets)
    # dismiss, after night 2, a recommendation announced by then that the truth resolves later
    # (its resolution must then stay quiet), and the largest one announced on the first night
    opened_early = {
        (t.cluster_id, t.kind)
        for t in undismissed
        if t.type == "recommendation_opened" and t.night <= DISMISS_AFTER
    }
    resolving = [
        t
        for t in undismissed
        if t.type == "recommendation_resolved"
        and t.night > DISMISS_AFTER
        and (t.cluster_id, t.kind) in opened_early
    ]
    largest = max(
        (t for t in undismissed if t.type == "recommendation_opened" and t.night == 0),
        key=lambda t: t.monthly_savings or 0,
    )
    targets = {(largest.cluster_id, largest.kind)}
    if resolving:
        targets.add((resolving[0].cluster_id, resolving[0].kind))
    dismissals = [Dismissal(DISMISS_AFTER, cid, kind) for cid, kind in sorted(targets)]

    db = tmp_path / "gpucost.duckdb"
    delivered: list[list[dict]] = []
    with pytest.MonkeyPatch.context() as mp, http_receiver() as rx:
        mp.setenv("GPUCOST_API_KEY", API_KEY)
        with Simulator(fleet, api_key=API_KEY).run_in_thread(port=0) as url:
            channel = ChannelSettings(name="finops", kind="webhook", url=rx.url)
            config = dataclasses.replace(
                make_config(db, url),
                notify=NotifySettings(channels=(channel,)),
                budgets=budgets,
            )
            for night in range(NIGHTS):
                fleet.set_clock(times[night])
                assert run_snapshot(config).status == "complete"
                build_models(config)
                before = len(rx.events())
                result = run_notify(config)
                assert result.exit_code == 0, result.summary_line()
                delivered.append(rx.events()[before:])
                if night == DISMISS_AFTER:
                    with Store.open(db) as store:
                        for d in dismissals:
                            rec_id = store.con.execute(
                                "select rec_id from marts.recommendations "
                                "where cluster_id = ? and kind = ?",
                                [d.cluster_id, d.kind],
                            ).fetchone()[0]
                            decide(store.con, rec_id, "dismiss", reason="e2e", who="test")

    truth = notify_truth(
        fleet,
        times,
        dismissals=dismissals,
        run_statuses=["complete"] * NIGHTS,
        finance=True,
        budgets=budgets,
    )
    assert truth != undismissed  # the dismissals silenced something
    silenced = {_truth_key(t) for t in undismissed} - {_truth_key(t) for t in truth}
    assert silenced, "a dismissal must keep a later event quiet"
    for night in range(NIGHTS):
        expected = sorted(_truth_key(t) for t in truth if t.night == night)
        got = sorted(_key(e) for e in delivered[night])
        assert got == expected, f"night {night + 1}"
        for t in (t for t in truth if t.night == night):
            (event,) = [e for e in delivered[night] if _key(e) == _truth_key(t)]
            if t.monthly_savings is None:
                continue  # budget, anomaly and run events: the subject is the check
            assert abs(Decimal(event["monthly_savings"]) - t.monthly_savings) <= CENT
            if t.realized_monthly_savings is not None:
                realized = Decimal(event["realized_monthly_savings"])
                assert abs(realized - t.realized_monthly_savings) <= CENT
    all_ids = [e["id"] for night in delivered for e in night]
    assert len(all_ids) == len(set(all_ids))  # each event once
    assert sum(len(n) for n in delivered) == len(truth) > 0
    kinds = {e["type"] for n in delivered for e in n}
    assert kinds >= {
        "recommendation_opened",
        "recommendation_resolved",
        "budget_threshold",
        "spend_anomaly",
    }
