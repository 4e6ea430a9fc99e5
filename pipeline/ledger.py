"""The runs ledger: `meta.runs`, one row per snapshot run, and how a run's status moves.

A run is recorded `running` when it starts and only `finish_run` marks it `complete`, `partial`
or `failed`, so a `kill -9` never leaves a run that looks complete: the next run that takes the
lock marks every run still `running` as `failed`, with a message saying it was interrupted
(there is no separate "interrupted" status: readers of `meta.runs` know four). The clusters that
failed, were gone or skipped go to `meta.run_failures` with the batch that counted them (the
writer's job: `LoadBatch`, `Store.write_batch`).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from pipeline.connection import Database
from pipeline.log import get_logger
from pipeline.redact import redact_text

RunStatus = Literal["running", "complete", "partial", "failed"]
"""A run's status in `meta.runs.status`."""
FinishedStatus = Literal["complete", "partial", "failed"]
"""The statuses `finish_run` may record."""
FINISHED_STATUSES: Final[tuple[FinishedStatus, ...]] = get_args(FinishedStatus)
FailureStage = Literal["list", "details", "load"]
"""Where a cluster failed (`meta.run_failures.stage`): listing, fetching its detail, loading it."""
FailureOutcome = Literal["failed", "gone", "skipped"]
"""What happened to it (`meta.run_failures.outcome`): failed, gone (404), skipped (budget)."""
INTERRUPTED_MESSAGE: Final = "interrupted: the process ended before the run finished"

_log = get_logger("store")


def new_run_id(now: datetime | None = None) -> str:
    """A run id that sorts by start time: `20261120T030000Z-1a2b3c`."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def check_finished(status: str) -> FinishedStatus:
    """`status` when a run may finish with it; `ValueError` otherwise (e.g. "running")."""
    for finished in FINISHED_STATUSES:
        if status == finished:
            return finished
    raise ValueError(f"unknown run status {status!r}")


class Ledger:
    """The rows of `meta.runs`, read and written on the database's current connection."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def mark_interrupted_runs(self) -> int:
        """Mark runs still `running` as `failed`/interrupted (call with the lock held)."""
        rows = self._db.con.execute(
            "update meta.runs set status = 'failed', message = ?"
            " where status = 'running' returning run_id",
            [INTERRUPTED_MESSAGE],
        ).fetchall()
        for (run_id,) in rows:
            _log.info("run %s was interrupted; marked failed", run_id)
        return len(rows)

    def start_run(self, *, api_base_url: str | None, run_id: str | None = None) -> str:
        """Record a new run as `running` and return its id."""
        run_id = run_id or new_run_id()
        self._db.con.execute(
            "insert into meta.runs (run_id, started_at, api_base_url, status, clusters_listed,"
            " clusters_fetched, clusters_failed, clusters_gone, clusters_skipped, requests_made,"
            " retries) values (?, ?, ?, 'running', 0, 0, 0, 0, 0, 0, 0)",
            [run_id, datetime.now(UTC), api_base_url],
        )
        return run_id

    def set_listed(self, run_id: str, *, count: int) -> None:
        """Record how many clusters the list returned."""
        self._db.con.execute(
            "update meta.runs set clusters_listed = ? where run_id = ?", [count, run_id]
        )

    def record_finish(
        self,
        run_id: str,
        *,
        status: FinishedStatus,
        message: str | None,
        requests_made: int | None,
        retries: int | None,
    ) -> None:
        """Write the run's end: status, time, message (redacted: it can quote the provider)
        and the final request counters. Inside the caller's transaction (`Store.finish_run`)."""
        message = redact_text(message) if message else message
        self._db.con.execute(
            "update meta.runs set status = ?, finished_at = ?, message = ?,"
            " requests_made = coalesce(?, requests_made), retries = coalesce(?, retries)"
            " where run_id = ?",
            [check_finished(status), datetime.now(UTC), message, requests_made, retries, run_id],
        )

    def run(self, run_id: str) -> dict[str, Any]:
        """One row of `meta.runs` as a dict; `KeyError` when there is none."""
        cur = self._db.con.execute("select * from meta.runs where run_id = ?", [run_id])
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
        if not rows:
            raise KeyError(run_id)
        return dict(zip(names, rows[0], strict=True))
