"""Plain words for an event, shared by the Slack and e-mail channels (the webhook sends JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

KIND_ACTIONS = {
    "stop_idle": "Stop idle cluster",
    "downsize": "Downsize",
    "schedule": "Schedule off-hours",
    "delete_storage": "Delete stopped storage",
    "investigate_error": "Investigate error state",
}
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def money(value: Any, currency: str | None) -> str:
    """`$8,928.00` or `8,928.00 CHF`; a missing amount is `-`."""
    if value in (None, ""):
        return "-"
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    symbol = _SYMBOLS.get(currency or "")
    text = f"{amount:,.2f}"
    return f"{symbol}{text}" if symbol else f"{text} {currency or ''}".strip()


def pct(value: Any) -> str:
    """`84.2 %`."""
    try:
        return f"{Decimal(str(value)):.1f} %"
    except (InvalidOperation, ValueError):
        return "-"


@dataclass(frozen=True)
class Summary:
    """An event in words: a title, its amount, and detail lines."""

    title: str
    amount: str
    details: tuple[str, ...]


def summarize(event: dict[str, Any]) -> Summary:
    """The words for one event payload."""
    kind = event["type"]
    cur = event.get("currency")
    if kind in ("recommendation_opened", "recommendation_resolved"):
        action = KIND_ACTIONS.get(event["kind"], event["kind"])
        cluster = event.get("cluster_name") or event["cluster_id"]
        where = f"project {event.get('project_name') or event.get('project_id') or '-'}"
        if kind == "recommendation_opened":
            again = (
                " (again: savings grew past the dismissal)"
                if event.get("resurfaced_after_dismissal")
                else ""
            )
            return Summary(
                f"{action}: {cluster}{again}",
                f"saves {money(event['monthly_savings'], cur)} / month",
                (event.get("reason") or "", f"{where} · rec {event['rec_id']}"),
            )
        return Summary(
            f"Resolved: {action.lower()} {cluster}",
            f"realized {money(event.get('realized_monthly_savings'), cur)} / month",
            (f"{where} · rec {event['rec_id']}",),
        )
    if kind == "budget_threshold":
        basis = "spent" if event["basis"] == "actual" else "forecast to month end"
        value = event["pct_of_budget"] if event["basis"] == "actual" else event["forecast_pct"]
        return Summary(
            f"Budget {event['budget_name']} passed {event['threshold_pct']} % ({basis})",
            f"{pct(value)} of {money(event['amount'], cur)}",
            (
                f"{event['scope']} {event['scope_id']} · {event['month']} · spent "
                f"{money(event['actual_to_date'], cur)}, forecast "
                f"{money(event['forecast_month_end'], cur)}",
            ),
        )
    if kind == "spend_anomaly":
        return Summary(
            f"Spend anomaly: {event['scope']} {event['scope_id']} on {event['day']}",
            f"{money(event['cost'], cur)} vs {money(event['baseline'], cur)} usual "
            f"({pct(event['deviation_pct'])})",
            (f"cause: {event.get('cause') or 'unknown'}",),
        )
    if kind == "run_health":
        if event["recovered"]:
            title = f"Nightly run recovered (was {event['previous_status']})"
        else:
            title = f"Nightly run {event['status']}"
        return Summary(
            title,
            f"{event.get('clusters_snapshotted') or 0} clusters stored",
            (f"run {event['run_id']}",),
        )
    return Summary(kind, "", ())
