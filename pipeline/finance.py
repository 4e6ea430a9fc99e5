"""Finance: the configuration the finance marts read, and the month close.

The models read `[cost_centers]` and `[[budgets]]` as tables (`meta.cost_centers`,
`meta.budgets`), written from the configuration at the start of every build, so that a mapping or
an amount reaches SQL as data, never pasted into SQL text. `close_month` freezes a month's
`marts.project_monthly` rows into `meta.closed_project_monthly`; the model shows those frozen rows
from then on, and books later revisions of the month as `adjustment_cost` in the first open month.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

from pipeline.config import Config
from pipeline.errors import ConfigError

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")

# the frozen copy keeps these columns of marts.project_monthly (meta.closed_project_monthly)
FROZEN_COLUMNS = (
    "month",
    "project_id",
    "currency",
    "project_name",
    "owner_id",
    "cost_center",
    "cost",
    "gpu_cost",
    "gpu_hours",
    "idle_gpu_hours",
    "idle_cost",
    "unused_capacity_cost",
    "open_monthly_savings",
    "realized_monthly_savings",
    "first_data_at",
    "last_data_at",
    "adjustment_cost",
)


class CloseError(ConfigError):
    """A month cannot be closed: already closed, no data, or earlier than a closed month
    (exit 2, a usage error)."""


def write_finance_config(con: duckdb.DuckDBPyConnection, config: Config) -> None:
    """Replace `meta.cost_centers` and `meta.budgets` with the configuration's, in one
    transaction (values bound as parameters)."""
    con.execute("begin transaction")
    try:
        con.execute("delete from meta.cost_centers")
        if config.cost_centers:
            con.executemany(
                "insert into meta.cost_centers values (?, ?)",
                [[project, center] for project, center in sorted(config.cost_centers.items())],
            )
        con.execute("delete from meta.budgets")
        if config.budgets:
            con.executemany(
                "insert into meta.budgets values (?, ?, ?, ?, ?)",
                [[b.name, b.scope, b.scope_id, b.amount, b.currency] for b in config.budgets],
            )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


def parse_month(text: str) -> date:
    """`YYYY-MM` -> the month's first day; anything else is a `ConfigError` (exit 2)."""
    match = _MONTH.match(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ConfigError(f"--month must be YYYY-MM (e.g. 2026-11), got {text!r}")
    return date(int(match.group(1)), int(match.group(2)), 1)


@dataclass(frozen=True)
class CloseResult:
    """What closing a month froze."""

    month: date
    rows: int
    cost_by_currency: dict[str, str]

    def summary_line(self) -> str:
        """One line for the CLI: the month, the rows frozen and the totals."""
        totals = ", ".join(f"{cost} {cur}" for cur, cost in sorted(self.cost_by_currency.items()))
        return f"closed {self.month:%Y-%m}: {self.rows} project rows frozen ({totals})"


def close_month(config: Config, month: date) -> CloseResult:
    """Freeze `month` (its first day) in the database of `config`: see `close_month_on`.

    Raises `ConfigError` (exit 2) when the database does not exist, `LockedError` (exit 5) when
    another run holds its lock.
    """
    from pipeline.store import Store

    path = Path(config.store.db)
    if not path.exists():
        raise ConfigError(f"database {path} does not exist: run `gpucost snapshot` first")
    with Store.open(path) as store:
        return close_month_on(store.con, month)


def close_month_on(con: duckdb.DuckDBPyConnection, month: date) -> CloseResult:
    """Copy `month`'s `marts.project_monthly` rows, as last built, into
    `meta.closed_project_monthly` and record the month in `meta.closed_months`, in one
    transaction.

    Raises `CloseError` (exit 2) when the month is already closed, has no data in the mart, or
    lies before a month already closed (months close in order, so that the revisions of closed
    months have one open month to be booked in).
    """
    exists = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'marts' and table_name = 'project_monthly'"
    ).fetchone()
    if not exists or not exists[0]:
        raise CloseError("no marts yet: run `gpucost build` before closing a month")
    con.execute("begin transaction")
    try:
        row = con.execute(
            "select max(month), count(*) filter (where month = ?) from meta.closed_months",
            [month],
        ).fetchone()
        latest, already = (row[0], row[1]) if row else (None, 0)
        if already:
            raise CloseError(f"{month:%Y-%m} is already closed")
        if latest is not None and month < latest:
            raise CloseError(
                f"{month:%Y-%m} is before {latest:%Y-%m}, which is closed: months close in order"
            )
        count = con.execute(
            "select count(*) from marts.project_monthly where month = ? and not is_closed",
            [month],
        ).fetchone()
        if not count or not count[0]:
            raise CloseError(f"{month:%Y-%m} has no data in marts.project_monthly to close")
        columns = ", ".join(FROZEN_COLUMNS)
        con.execute(
            f"insert into meta.closed_project_monthly ({columns}) "
            f"select {columns} from marts.project_monthly where month = ?",
            [month],
        )
        con.execute("insert into meta.closed_months values (?, ?)", [month, datetime.now(UTC)])
        # the mart says so at once; the next build reads the frozen rows
        con.execute("update marts.project_monthly set is_closed = true where month = ?", [month])
        totals = con.execute(
            "select currency, sum(cost + adjustment_cost) from marts.project_monthly "
            "where month = ? group by currency",
            [month],
        ).fetchall()
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return CloseResult(month, int(count[0]), {cur: str(cost) for cur, cost in totals})
