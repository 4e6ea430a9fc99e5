"""The recommendation workflow: list, show, dismiss, snooze and reopen recommendations.

A decision is a row of `meta.recommendation_decisions` (who, when, why, until when, and the
savings at that moment): the build never rewrites `meta`, so decisions survive full refreshes and
rebuilds, and the recommendation id (`md5(cluster_id/kind)`) is the same in every build. The
newest decision on a recommendation is the one in force. A dismissal holds until its `until` day
(or for good) unless the recommendation's monthly savings reach `RESURFACE_GROWTH` times the
savings dismissed: then it is open again (and announced again). The configuration's
`[[suppress]]` entries do the same from version control; they are copied into
`meta.recommendation_suppressions` by `sync_suppressions` (called by `build_models`, `recs` and
`notify`). The effective state is the view `marts.recommendation_states`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import duckdb

from pipeline.config import Config, Suppression
from pipeline.errors import EXIT_USAGE, ConfigError, GpucostError

# "a dismissed recommendation comes back when its savings grow by half"
RESURFACE_GROWTH = Decimal("1.5")
STATES = ("open", "dismissed", "snoozed", "suppressed", "resolved", "closed")
Action = Literal["dismiss", "snooze", "reopen"]
_Q6 = Decimal("0.000001")


class RecommendationNotFound(GpucostError):
    """No recommendation has that id (exit 2: the id given is wrong)."""

    exit_code = EXIT_USAGE


class DecisionError(GpucostError):
    """A decision that cannot be taken as asked (an `until` day already past, ...)."""

    exit_code = EXIT_USAGE


def decided_by(env: Mapping[str, str] | None = None) -> str:
    """Who decides: `GPUCOST_USER`, else `USER`, else `LOGNAME`, else "unknown"."""
    env = os.environ if env is None else env
    for name in ("GPUCOST_USER", "USER", "LOGNAME"):
        if env.get(name, "").strip():
            return env[name].strip()
    return "unknown"


def sync_suppressions(con: duckdb.DuckDBPyConnection, suppressions: Sequence[Suppression]) -> None:
    """Replace `meta.recommendation_suppressions` with the configuration's `[[suppress]]`."""
    con.execute("delete from meta.recommendation_suppressions")
    for position, entry in enumerate(suppressions):
        con.execute(
            "insert into meta.recommendation_suppressions values (?, ?, ?, ?, ?, ?)",
            [position, entry.cluster, entry.project, entry.kind, entry.reason, entry.until],
        )


def has_states(con: duckdb.DuckDBPyConnection) -> bool:
    """True once a build has created `marts.recommendation_states`."""
    row = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'marts' and table_name = 'recommendation_states'"
    ).fetchone()
    return bool(row and row[0])


def _require_states(con: duckdb.DuckDBPyConnection) -> None:
    if not has_states(con):
        raise ConfigError("no recommendations yet: run `gpucost build` first")


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> list[dict]:
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def list_recommendations(
    con: duckdb.DuckDBPyConnection, *, state: str | None = None, project: str | None = None
) -> list[dict[str, Any]]:
    """Rows of `marts.recommendation_states`, largest savings first; `state` filters by the
    effective state, `project` by project id or name."""
    _require_states(con)
    if state is not None and state not in STATES:
        raise ConfigError(f"--status must be one of {', '.join(STATES)}, got {state!r}")
    return _rows(
        con,
        "select * from marts.recommendation_states "
        "where ($1 is null or state = $1) and ($2 is null or $2 in (project_id, project_name)) "
        "order by monthly_savings desc, rec_id",
        [state, project],
    )


def get_recommendation(con: duckdb.DuckDBPyConnection, rec_id: str) -> dict[str, Any]:
    """One recommendation's effective state; `RecommendationNotFound` (exit 2) if unknown."""
    _require_states(con)
    found = _rows(con, "select * from marts.recommendation_states where rec_id = ?", [rec_id])
    if not found:
        raise RecommendationNotFound(
            f"no recommendation {rec_id!r}; `gpucost recs list` shows their ids"
        )
    return found[0]


def decision_history(con: duckdb.DuckDBPyConnection, rec_id: str) -> list[dict[str, Any]]:
    """Every decision taken on `rec_id`, oldest first."""
    return _rows(
        con,
        "select * from meta.recommendation_decisions where rec_id = ? "
        "order by decided_at, decision_id",
        [rec_id],
    )


def decide(
    con: duckdb.DuckDBPyConnection,
    rec_id: str,
    action: Action,
    *,
    reason: str | None = None,
    until: date | None = None,
    who: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record a decision on `rec_id` and return the recommendation's new effective state.

    `dismiss` needs a reason (`until` optional: for good); `snooze` needs `until`; `until` must
    be after the day of the newest snapshot (else the decision would already have lapsed).
    """
    rec = get_recommendation(con, rec_id)
    if action == "dismiss" and not (reason and reason.strip()):
        raise DecisionError("a dismissal needs --reason: say why, for the next reader")
    if action == "snooze" and until is None:
        raise DecisionError("a snooze needs --until DATE")
    if action == "reopen" and until is not None:
        raise DecisionError("reopen takes no --until")
    as_of = rec["as_of_day"]
    if until is not None and as_of is not None and until <= as_of:
        raise DecisionError(
            f"--until {until} is not after {as_of}, the day of the newest snapshot; "
            "the decision would already have lapsed"
        )
    savings = rec["monthly_savings"]
    resurface = (savings * RESURFACE_GROWTH).quantize(_Q6) if savings is not None else None
    decision_id = f"d_{(now or datetime.now(UTC)):%Y%m%dT%H%M%S}_{secrets.token_hex(4)}"
    con.execute(
        "insert into meta.recommendation_decisions values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            decision_id,
            rec_id,
            action,
            reason.strip() if reason else None,
            until,
            who or decided_by(),
            now or datetime.now(UTC),
            savings,
            resurface if action == "dismiss" else None,
            rec["currency"],
        ],
    )
    return get_recommendation(con, rec_id)


def open_store(config: Config) -> Any:
    """The database for the recs commands, opened for writing (they record decisions) with the
    configuration's `[[suppress]]` synchronized; `ConfigError` (exit 2) if it does not exist."""
    from pipeline.store import Store

    path = Path(config.store.db)
    if not path.exists():
        raise ConfigError(f"database {path} does not exist: run `gpucost snapshot` first")
    store = Store.open(path)
    try:
        sync_suppressions(store.con, config.suppress)
    except BaseException:
        store.close()
        raise
    return store


def describe(rec: Mapping[str, Any]) -> list[str]:
    """A recommendation as lines for a terminal (`gpucost recs show`)."""
    lines = [
        f"{rec['rec_id']}  {rec['kind']}  {rec['state']}",
        f"  cluster      {rec['cluster_name'] or ''} ({rec['cluster_id']})",
        f"  project      {rec['project_name'] or '-'}  owner {rec['owner_id'] or '-'}",
        f"  savings      {_money(rec['monthly_savings'])} {rec['currency']} per month",
        f"  evidence     {rec['reason']}",
        f"  stands on    {_hours(rec['evidence_hours'])} of data",
        f"  seen         {_when(rec['first_seen_at'])} .. {_when(rec['last_seen_at'])}",
    ]
    if rec["realized_monthly_savings"] is not None:
        lines.append(
            f"  realized     {_money(rec['realized_monthly_savings'])} {rec['currency']} per month"
        )
    if rec["decision"]:
        until = f" until {rec['decision_until']}" if rec["decision_until"] else ""
        lines.append(
            f"  decision     {rec['decision']}{until} by {rec['decided_by']} at "
            f"{_when(rec['decided_at'])}: {rec['decision_reason'] or ''}".rstrip(": ")
        )
        if rec["is_resurfaced"]:
            lines.append(
                f"  resurfaced   savings reached {_money(rec['resurface_at_savings'])} "
                f"(dismissed at {_money(rec['savings_at_decision'])})"
            )
    if rec["suppression_position"] is not None:
        until = f" until {rec['suppression_until']}" if rec["suppression_until"] else ""
        lines.append(
            f"  suppressed   by [[suppress]] #{rec['suppression_position'] + 1}{until}: "
            f"{rec['suppression_reason']}"
        )
    return lines


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _hours(value: Any) -> str:
    return "-" if value is None else f"{Decimal(str(value)):,.0f} h"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def table_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """`gpucost recs list` output: one line per recommendation, aligned."""
    out = [f"{'REC_ID':16}  {'STATE':10}  {'KIND':17}  {'SAVINGS/MONTH':>14}  CUR  CLUSTER"]
    for r in rows:
        out.append(
            f"{r['rec_id']:16}  {r['state']:10}  {r['kind']:17}  "
            f"{_money(r['monthly_savings']):>14}  {r['currency'] or '':3}  "
            f"{r['cluster_name'] or r['cluster_id']}"
        )
    return out
