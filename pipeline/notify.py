"""The notify stage: announce what is new since the last notify, from the marts only.

Events (docs/notify.md has their fields and a payload example):

- `recommendation_opened`: an open recommendation (`marts.recommendation_states`, state
  `open`: not dismissed, snoozed or suppressed) worth >= `notify.min_monthly_savings`; id from
  (rec_id, first_seen_at), and the dismissal it outgrew when it resurfaced.
- `recommendation_resolved`: a resolved recommendation worth that much, not declined, with its
  realized savings; id from (rec_id, last_seen_at).
- `budget_threshold`: a budget (`marts.budget_status`, when it exists) crossing 50, 80 or
  100 % of its amount by actual or by forecast; the highest level crossed is announced, lower
  ones found the same night are recorded as passed over.
- `spend_anomaly`: a row of `marts.spend_anomalies` (when it exists) of the last 7 days.
- `run_health`: the newest finished run is failed or partial while the last announced state was
  not, or the reverse (recovered); only on change.

The ledger (`meta.notify_events`, `meta.notify_deliveries`) makes each event reach each channel
once: events are recorded, with a pending delivery per channel their routing accepts, BEFORE
anything is sent; a delivery is marked sent after the channel accepted it. A crash between the two
leaves it pending, so it is sent again next time: delivery is at-least-once, and receivers
dedupe by the event's `id`. A failed delivery stays pending (with the error in our own words,
never a response body) and goes out with the next notify; `NotifyResult.exit_code` is then 3.
Every delivery has a timeout (`timeout_seconds` per channel).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from pipeline.config import ChannelSettings, Config
from pipeline.errors import EXIT_OK, EXIT_PARTIAL, ConfigError
from pipeline.log import get_logger

log = get_logger("notify")

BUDGET_LEVELS = (50, 80, 100)
ANOMALY_DAYS = 7
HEALTHY = "complete"
# A test seam: called after a channel accepted a message and before the ledger records it
# (tests/test_notify_crash.py kills the process there).
_after_send: Callable[[], None] | None = None


@dataclass(frozen=True)
class Event:
    """One thing to announce: `payload` is what receivers get (it holds `id` and `type`)."""

    event_id: str
    type: str
    project_id: str | None
    project_name: str | None
    payload: dict[str, Any]
    budget_key: str | None = None  # (budget, scope, month, basis) for passing lower levels over
    level: int | None = None


@dataclass
class NotifyResult:
    """What a notify did: events found new, deliveries sent, failed, skipped, per channel."""

    new_events: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0, or 3 when a delivery failed (it stays pending for the next notify)."""
        return EXIT_PARTIAL if self.failed else EXIT_OK

    def summary_line(self) -> str:
        """One line for the log and the CLI."""
        line = (
            f"notify: {self.new_events} new events; {self.sent} deliveries sent, "
            f"{self.failed} failed (pending), {self.skipped} skipped"
        )
        return line + ("; " + "; ".join(self.errors) if self.errors else "")


# ------------------------------------------------------------------------------ reading marts


def _relation_exists(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    row = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, name],
    ).fetchone()
    return bool(row and row[0])


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> list[dict]:
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def event_id(kind: str, *parts: Any) -> str:
    """A stable event id: the type and a hash of what identifies the event."""
    text = "/".join("" if p is None else str(p) for p in (kind, *parts))
    return f"{kind}:{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        # money and percentages as strings: exact, as the provider sends money
        return format(value, "f")
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 4)
    return value


def _payload(kind: str, eid: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"id": eid, "type": kind, **{k: _json_value(v) for k, v in fields.items()}}


def _money2(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(Decimal("0.01"))


def recommendation_events(con: duckdb.DuckDBPyConnection, min_savings: Decimal) -> list[Event]:
    """recommendation_opened and recommendation_resolved from `marts.recommendation_states`."""
    if not _relation_exists(con, "marts", "recommendation_states"):
        return []
    rows = _rows(
        con,
        "select * from marts.recommendation_states "
        "where ((state = 'open') or (status = 'resolved' and not is_declined)) "
        "and monthly_savings >= ? order by monthly_savings desc, rec_id",
        [min_savings],
    )
    out = []
    for r in rows:
        common = {
            "rec_id": r["rec_id"],
            "cluster_id": r["cluster_id"],
            "cluster_name": r["cluster_name"],
            "kind": r["kind"],
            "monthly_savings": _money2(r["monthly_savings"]),
            "currency": r["currency"],
            "project_id": r["project_id"],
            "project_name": r["project_name"],
            "owner_id": r["owner_id"],
            "reason": r["reason"],
            "evidence_hours": r["evidence_hours"],
        }
        if r["state"] == "open":
            kind = "recommendation_opened"
            # a recommendation that outgrew its dismissal is announced again
            resurfaced = r["decision_id"] if r["is_resurfaced"] else None
            eid = event_id(kind, r["rec_id"], r["first_seen_at"], resurfaced)
            fields = {**common, "first_seen_at": r["first_seen_at"]}
            if resurfaced:
                fields["resurfaced_after_dismissal"] = True
        else:
            kind = "recommendation_resolved"
            eid = event_id(kind, r["rec_id"], r["last_seen_at"])
            fields = {
                **common,
                "realized_monthly_savings": _money2(r["realized_monthly_savings"]),
                "last_seen_at": r["last_seen_at"],
            }
        out.append(
            Event(eid, kind, r["project_id"], r["project_name"], _payload(kind, eid, fields))
        )
    return out


def budget_events(con: duckdb.DuckDBPyConnection) -> list[Event]:
    """budget_threshold: every level crossed in each budget's newest month, by actual and by
    forecast (`marts.budget_status`; nothing when the table does not exist)."""
    if not _relation_exists(con, "marts", "budget_status"):
        return []
    rows = _rows(
        con,
        "select * from marts.budget_status "
        "qualify month = max(month) over (partition by budget_name, scope, scope_id) "
        "order by budget_name, scope, scope_id",
    )
    out = []
    kind = "budget_threshold"
    for r in rows:
        for basis, pct in (("actual", r["pct_of_budget"]), ("forecast", r["forecast_pct"])):
            if pct is None:
                continue
            for level in BUDGET_LEVELS:
                if Decimal(str(pct)) < level:
                    continue
                key = "/".join(str(r[k]) for k in ("budget_name", "scope", "scope_id", "month"))
                eid = event_id(kind, key, basis, level)
                project = r["scope_id"] if r["scope"] == "project" else None
                fields = {
                    "budget_name": r["budget_name"],
                    "scope": r["scope"],
                    "scope_id": r["scope_id"],
                    "month": r["month"],
                    "basis": basis,
                    "threshold_pct": level,
                    "currency": r["currency"],
                    "amount": r["amount"],
                    "actual_to_date": r["actual_to_date"],
                    "forecast_month_end": r["forecast_month_end"],
                    "pct_of_budget": r["pct_of_budget"],
                    "forecast_pct": r["forecast_pct"],
                    "status": r["status"],
                    "project_id": project,
                }
                out.append(
                    Event(
                        eid,
                        kind,
                        project,
                        None,
                        _payload(kind, eid, fields),
                        budget_key=f"{key}/{basis}",
                        level=level,
                    )
                )
    return out


def anomaly_events(con: duckdb.DuckDBPyConnection) -> list[Event]:
    """spend_anomaly: the rows of `marts.spend_anomalies` of the last `ANOMALY_DAYS` days of
    data (up to the newest day of `marts.fleet_daily`; nothing when the table does not exist)."""
    if not _relation_exists(con, "marts", "spend_anomalies"):
        return []
    # the last week of the data, not of the anomalies: an anomaly weeks old is not news
    newest = "fleet_daily" if _relation_exists(con, "marts", "fleet_daily") else "spend_anomalies"
    rows = _rows(
        con,
        "select * from marts.spend_anomalies "
        f"where day > (select max(day) from marts.{newest}) - ? "  # our own names
        "order by day, scope, scope_id",
        [ANOMALY_DAYS],
    )
    out = []
    kind = "spend_anomaly"
    for r in rows:
        eid = event_id(kind, r["day"], r["scope"], r["scope_id"], r["currency"])
        project = r["scope_id"] if r["scope"] == "project" else None
        fields = {k: r[k] for k in ("day", "scope", "scope_id", "currency", "cost", "baseline")}
        fields.update(deviation_pct=r["deviation_pct"], cause=r["cause"], project_id=project)
        out.append(Event(eid, kind, project, None, _payload(kind, eid, fields)))
    return out


def run_health_events(con: duckdb.DuckDBPyConnection) -> list[Event]:
    """run_health: the newest finished run's status when it differs from the last announced
    one (no announcement yet counts as healthy), from `staging.runs`."""
    if not _relation_exists(con, "staging", "runs"):
        return []
    latest = _rows(
        con,
        "select run_id, status, run_data_at, clusters_snapshotted from staging.runs "
        "where status in ('complete', 'partial', 'failed') "
        # run ids sort by second only: two runs in one second are told apart by the clock
        "order by finished_at desc nulls last, started_at desc, run_id desc limit 1",
    )
    if not latest:
        return []
    run = latest[0]
    previous = con.execute(
        "select json_extract_string(payload, '$.status') from meta.notify_events "
        "where event_type = 'run_health' order by recorded_at desc, event_id desc limit 1"
    ).fetchone()
    before = previous[0] if previous else HEALTHY
    if run["status"] == before:
        return []
    kind = "run_health"
    eid = event_id(kind, run["run_id"])
    fields = {
        "run_id": run["run_id"],
        "status": run["status"],
        "previous_status": before,
        "recovered": run["status"] == HEALTHY,
        "run_data_at": run["run_data_at"],
        "clusters_snapshotted": run["clusters_snapshotted"],
    }
    return [Event(eid, kind, None, None, _payload(kind, eid, fields))]


def collect_events(con: duckdb.DuckDBPyConnection, config: Config) -> list[Event]:
    """Every event the marts hold now (new or not): the ledger decides what is new."""
    min_savings = Decimal(str(config.notify.min_monthly_savings))
    return (
        run_health_events(con)
        + recommendation_events(con, min_savings)
        + budget_events(con)
        + anomaly_events(con)
    )


def project_owners(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Project id (and name) -> the owner's e-mail, from `marts.projects` when it exists.

    The finance mart `marts.projects` carries each project's owner e-mail from the provider's
    `project_info`; the one place e-mail channels with `to = "owner"` learn where to write.
    """
    if not _relation_exists(con, "marts", "projects"):
        return {}
    out: dict[str, str] = {}
    for project_id, project_name, email in con.execute(
        "select project_id, project_name, owner_email from marts.projects "
        "where owner_email is not null"
    ).fetchall():
        for key in (project_id, project_name):
            if key:
                out[key] = email
    return out


# ------------------------------------------------------------------------------ the ledger


def routes(channel: ChannelSettings, event: Event) -> bool:
    """Whether `channel`'s routing (`events`, `projects`) accepts `event`."""
    if event.type not in channel.events:
        return False
    if not channel.projects:
        return True
    return bool({event.project_id, event.project_name} & set(channel.projects))


def record_events(
    con: duckdb.DuckDBPyConnection,
    events: Iterable[Event],
    channels: Sequence[ChannelSettings],
    now: datetime,
) -> int:
    """Record the events not yet in the ledger, each with a pending delivery per channel that
    routes it; one transaction. Returns how many are to be announced."""
    events = list(events)
    known = {
        row[0]
        for row in con.execute(
            "select event_id from meta.notify_events where event_id in (select unnest(?))",
            [[e.event_id for e in events]],
        ).fetchall()
    }
    announced_levels: dict[str, int] = {}
    for key, level in con.execute(
        "select json_extract_string(payload, '$.budget_key'), "
        "max(cast(json_extract_string(payload, '$.threshold_pct') as integer)) "
        "from meta.notify_events where event_type = 'budget_threshold' group by all"
    ).fetchall():
        announced_levels[key] = level
    new = [e for e in events if e.event_id not in known]
    # a budget crossing several levels at once is announced at its highest only
    top: dict[str, int] = {}
    for e in new:
        if e.budget_key is not None and e.level is not None:
            top[e.budget_key] = max(top.get(e.budget_key, 0), e.level)
    announced = 0
    con.begin()
    try:
        for i, e in enumerate(new):
            is_announced = True
            payload = dict(e.payload)
            if e.budget_key is not None:
                is_announced = e.level == top[e.budget_key] and (
                    announced_levels.get(e.budget_key, 0) < (e.level or 0)
                )
            stored = {**payload, "budget_key": e.budget_key} if e.budget_key else payload
            con.execute(
                "insert into meta.notify_events values (?, ?, ?, ?, ?, ?)",
                [
                    e.event_id,
                    e.type,
                    e.project_id,
                    json.dumps(stored),
                    is_announced,
                    now + timedelta(microseconds=i),  # keeps the order events were found in
                ],
            )
            if not is_announced:
                continue
            announced += 1
            for channel in channels:
                if routes(channel, e):
                    con.execute(
                        "insert into meta.notify_deliveries values (?, ?, 'pending', 0, null, ?, "
                        "null)",
                        [e.event_id, channel.name, now],
                    )
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return announced


@dataclass(frozen=True)
class Pending:
    """A pending delivery: the event as recorded, and its project for routing to owners."""

    event_id: str
    type: str
    project_id: str | None
    payload: dict[str, Any]


def pending_deliveries(con: duckdb.DuckDBPyConnection, channel: str) -> list[Pending]:
    """The channel's pending deliveries, in the order their events were recorded."""
    rows = con.execute(
        "select e.event_id, e.event_type, e.project_id, e.payload from meta.notify_deliveries d "
        "join meta.notify_events e using (event_id) "
        "where d.channel = ? and d.status = 'pending' order by e.recorded_at, e.event_id",
        [channel],
    ).fetchall()
    out = []
    for eid, kind, project, payload in rows:
        body = json.loads(payload)
        body.pop("budget_key", None)
        out.append(Pending(eid, kind, project, body))
    return out


def mark(
    con: duckdb.DuckDBPyConnection,
    channel: str,
    event_ids: Sequence[str],
    status: str,
    *,
    error: str | None = None,
    now: datetime | None = None,
) -> None:
    """Record the outcome of one delivery attempt for `event_ids` on `channel`."""
    now = now or datetime.now(UTC)
    con.execute(
        "update meta.notify_deliveries set status = ?, attempts = attempts + 1, last_error = ?, "
        "delivered_at = case when ? = 'sent' then ? else delivered_at end "
        "where channel = ? and event_id in (select unnest(?))",
        [status, error, status, now, channel, list(event_ids)],
    )


# ------------------------------------------------------------------------------ the stage


def deliver(con: duckdb.DuckDBPyConnection, config: Config, result: NotifyResult) -> NotifyResult:
    """Send every channel's pending deliveries; a failing channel never stops the others."""
    from pipeline.channels import send_batches

    owners: dict[str, str] | None = None
    for channel in config.notify.channels:
        pending = pending_deliveries(con, channel.name)
        if not pending:
            continue
        if channel.kind == "email" and channel.to_owner and owners is None:
            owners = project_owners(con)
        for batch in send_batches(channel, pending, owners or {}):
            ids = [p.event_id for p in batch.items]
            if batch.skip_reason is not None:
                mark(con, channel.name, ids, "skipped", error=batch.skip_reason)
                result.skipped += len(ids)
                continue
            try:
                batch.send()
            except Exception as exc:  # a channel down: stays pending, the others go on
                message = f"{channel.name}: {describe_error(exc)}"
                log.warning("delivery failed, kept pending: %s", message)
                mark(con, channel.name, ids, "pending", error=message)
                result.failed += len(ids)
                if message not in result.errors:
                    result.errors.append(message)
                continue
            if _after_send is not None:
                _after_send()
            mark(con, channel.name, ids, "sent")
            result.sent += len(ids)
    return result


def describe_error(exc: BaseException) -> str:
    """A delivery error in our own words: never a response body (it may echo secrets)."""
    from pipeline.channels import DeliveryError

    if isinstance(exc, DeliveryError):
        return str(exc)
    return type(exc).__name__


def notify_on_connection(
    con: duckdb.DuckDBPyConnection, config: Config, *, now: datetime | None = None
) -> NotifyResult:
    """Find the new events in the marts, record them, then deliver everything pending."""
    from pipeline.recs import sync_suppressions

    now = now or datetime.now(UTC)
    sync_suppressions(con, config.suppress)
    result = NotifyResult()
    result.new_events = record_events(con, collect_events(con, config), config.notify.channels, now)
    return deliver(con, config, result)


def run_notify(config: Config, *, now: datetime | None = None) -> NotifyResult:
    """The notify stage on `config.store.db` (takes the store's lock: exit 5 while a run holds
    it). `ConfigError` (exit 2) without channels or without a database."""
    from pipeline.channels import check_channel_files
    from pipeline.store import Store

    if not config.notify.channels:
        raise ConfigError("no notification channels: add [[notify.channels]] to the config")
    for channel in config.notify.channels:
        check_channel_files(channel)
    path = Path(config.store.db)
    if not path.exists():
        raise ConfigError(f"database {path} does not exist: run `gpucost snapshot` first")
    with Store.open(path) as store:
        result = notify_on_connection(store.con, config, now=now)
    log.info(result.summary_line())
    return result
