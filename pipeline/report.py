"""The report stage: one self-contained HTML report, the marts as CSV, and a FOCUS 1.2 export.

`render_report(config, out_dir)` opens the database read-only and writes into `out_dir`:

    index.html             fleet summary, trends, idle waste, recommendations, projection drift,
                           health and alerts, one section per cluster (top clusters by spend)
    idle_waste_daily.csv   \\
    recommendations.csv     | the marts, their exact columns (DESIGN.md "The outward contract")
    projection_drift.csv    |
    fleet_daily.csv        /
    focus.csv              FinOps FOCUS 1.2 (see pipeline/focus.py)

The HTML opens offline and can be mailed: inline CSS, inline SVG charts, a few lines of inline JS
to sort tables; nothing is fetched. Every value is auto-escaped by Jinja. CSV cells that a
spreadsheet would run as a formula are neutralized with a leading `'`. Money stays Decimal from
DuckDB to the page; it is rounded only when displayed, and currencies are never summed together.
Each file is written to a temporary name and renamed, so a reader never sees half a report.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import jinja2
import markupsafe
import numpy as np
import polars as pl

from pipeline import __version__, _charts, duck
from pipeline.config import Config
from pipeline.connection import private_umask
from pipeline.errors import EXIT_USAGE, GpucostError
from pipeline.focus import build_adjustments, build_focus, reconcile
from pipeline.log import get_logger
from pipeline.resources import templates_dir

log = get_logger("report")

DEFAULT_PERIOD_DAYS = 30
CLUSTER_SECTIONS = 50  # clusters with a full section; the rest get a row in a compact table
TOP_IDLE_CHART = 15
TOP_IDLE_TABLE = 25
MAX_TABLE_ROWS = 200
HEATMAP_HOURS = 168
CHART_CURRENCIES = 3  # charts for the currencies with the most spend; tables show every one

REQUIRED_MARTS = (
    "fleet_daily",
    "idle_waste_daily",
    "projection_drift",
    "recommendations",
    "clusters",
    # what the report showed from the snapshot tables before; now models (sql/marts/)
    "report_days",
    "active_alerts",
    "cluster_configuration",
    "cluster_rates",
    "utilization_heatmap",
    "cluster_cost_daily",
)
MART_EXPORTS = (
    "idle_waste_daily",
    "recommendations",
    "projection_drift",
    "fleet_daily",
    "project_monthly",
    "budget_status",
    "spend_anomalies",
)
_MART_ORDER = {
    "idle_waste_daily": "day, cluster_id, currency",
    "recommendations": "cluster_id, kind, rec_id",
    "projection_drift": "projected_at, cluster_id, horizon",
    "fleet_daily": "day, currency",
    "project_monthly": "month, currency, project_id",
    "budget_status": "month, budget_name",
    "spend_anomalies": "day, scope, scope_id, currency",
}
# finance marts: exported and shown when the database has them (built since migration 0002)
FINANCE_MARTS = ("project_monthly", "budget_status", "spend_anomalies")
TOP_ANOMALIES = 30
_SYMBOLS = {"USD": "$", "EUR": "€"}
_FORMULA_START = r"^[=+\-@\t\r]"
_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
# The instants the report's period can take: its day arithmetic (the period, chart axes) stays
# far from Python's date limits. Anything the store holds outside (a provider clock in year
# 9999 or before 1970) stays in the CSVs but never sets the period, so it cannot crash it.
DISPLAY_FROM = datetime(1970, 1, 1, tzinfo=UTC)
DISPLAY_TO = datetime(9000, 1, 1, tzinfo=UTC)


class ReportError(GpucostError):
    """The report cannot be rendered from this database (the message says why and what to do)."""

    exit_code = EXIT_USAGE


class MartsMissingError(ReportError):
    """The database has no marts yet: `gpucost build` has not run on it."""


@dataclass(frozen=True)
class ReportResult:
    """What `render_report` wrote."""

    index_html: Path
    files: tuple[Path, ...]
    clusters: int
    focus_rows: int
    seconds: float
    notes: tuple[str, ...] = ()

    def summary_line(self) -> str:
        """One line for the log: where the report is and how much it holds."""
        return (
            f"report: {self.index_html} ({self.clusters} clusters, {len(self.files)} files, "
            f"{self.focus_rows} FOCUS rows, {self.seconds:.1f} s)"
        )


# --------------------------------------------------------------------------- formatting


def currency_symbol(currency: str | None) -> str:
    """`$` for USD, `€` for EUR, else the ISO code and a space (`GBP `)."""
    if not currency:
        return ""
    return _SYMBOLS.get(currency, f"{currency} ")


def format_money(value: Any, currency: str | None, places: int = 2) -> str:
    """People's money: symbol, thousands separators, `places` decimals (`-$1,234.50`)."""
    if value is None:
        return "–"
    amount = Decimal(str(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    sign = "-" if amount < 0 else ""
    return f"{sign}{currency_symbol(currency)}{abs(amount):,.{places}f}"


def format_number(value: Any, places: int = 0) -> str:
    """A number with thousands separators (`12,345`); `–` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):,.{places}f}" if places else f"{round(float(value)):,}"


def format_pct(value: Any, places: int = 1) -> str:
    """A percentage already in 0-100 (`12.3 %`); `–` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):,.{places}f} %"


def format_time(value: datetime | None) -> str:
    """An instant in UTC, minutes precision (`2026-11-20 03:00 UTC`)."""
    if not isinstance(value, datetime):  # None, or an instant Python cannot hold (year > 9999)
        return "–"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_day(value: date | None) -> str:
    """A day as people read it (`Fri 20 Nov 2026`)."""
    return "–" if value is None else value.strftime("%a %d %b %Y")


def raw_value(value: Any) -> str:
    """A value for a table cell's `data-v` (what the table sorts by): plain text, '' if missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _share(part: Any, whole: Any) -> float | None:
    if part is None or not whole:
        return None
    return float(Decimal(str(part)) / Decimal(str(whole)) * 100)


# Control characters (C0 but tab and line breaks, DEL, C1): never shown, never in the HTML (a
# NUL in a cluster name would otherwise reach index.html as is).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def displayable(value: Any) -> Any:
    """Jinja's `finalize`: every text shown has its control characters replaced by U+FFFD."""
    if isinstance(value, str) and _CONTROL.search(value):
        cleaned = _CONTROL.sub("\ufffd", value)
        if isinstance(value, markupsafe.Markup):
            # already markup (a chart): replacing control characters adds no markup to it
            return markupsafe.Markup(cleaned)  # noqa: S704
        return cleaned
    return value


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,
        finalize=displayable,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        money=format_money,
        num=format_number,
        pct=format_pct,
        when=format_time,
        day=format_day,
        symbol=currency_symbol,
        raw=raw_value,
    )
    return env


# --------------------------------------------------------------------------- database


def _connect(db: str) -> duckdb.DuckDBPyConnection:
    path = Path(db)
    if not path.exists():
        raise MartsMissingError(
            f"database {path} does not exist: run gpucost snapshot, then gpucost build first"
        )
    try:
        # read_only: the report never writes into the database (temp tables live in memory)
        con = duck.connect(path, read_only=True)
    except duckdb.Error as exc:
        raise ReportError(f"cannot open {path} read-only: {exc}") from None
    con.execute("set TimeZone = 'UTC'")
    return con


def _tables(con: duckdb.DuckDBPyConnection, schema: str) -> set[str]:
    rows = con.execute(
        "select table_name from information_schema.tables where table_schema = ?", [schema]
    ).fetchall()
    return {r[0] for r in rows}


def _rows(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | dict[str, Any] = ()
) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description or []]
    # DuckDB hands an instant beyond Python's year 9999 over as text: such a value (a provider
    # clock gone wild, kept in the store) is shown as missing rather than break the page.
    temporal = [str(d[1]).upper().startswith(("TIMESTAMP", "DATE")) for d in cur.description or []]
    rows = cur.fetchall()
    return [
        dict(zip(names, (_shown(v, t) for v, t in zip(row, temporal, strict=True)), strict=True))
        for row in rows
    ]


def _displayable_instant(value: Any) -> bool:
    return isinstance(value, datetime) and DISPLAY_FROM <= value <= DISPLAY_TO


def _shown(value: Any, temporal: bool) -> Any:
    if type(value) is str:
        # Text from the store is shown (HTML, chart labels): control characters never are.
        return None if temporal else displayable(value)
    return value


# --------------------------------------------------------------------------- CSV


def neutralize_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """Prefix `'` to every text cell a spreadsheet would run (`=`, `+`, `-`, `@`, tab, CR).

    Only text columns are touched: a negative number stays a number (OWASP CSV injection).
    """
    text = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    return frame.with_columns(
        pl.when(pl.col(c).str.contains(_FORMULA_START))
        .then(pl.lit("'") + pl.col(c))
        .otherwise(pl.col(c))
        .alias(c)
        for c in text
    )


def _csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """ISO 8601 UTC instants with `Z`, floats without binary noise, formulas neutralized."""
    out = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is None:
                col = col.dt.replace_time_zone("UTC")
            col = col.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif dtype in (pl.Float32, pl.Float64):
            col = col.round(6)
        out.append(col.alias(name))
    return neutralize_formulas(frame.select(out))


def write_csv(frame: pl.DataFrame, path: Path) -> Path:
    """Write `frame` as UTF-8 CSV (ISO dates, plain decimals, formulas neutralized), atomically."""
    ready = _csv_ready(frame)
    return _write_atomic(path, lambda tmp: ready.write_csv(tmp, float_scientific=False))


FOCUS_TIME_COLUMNS = (
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
)
FOCUS_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def write_focus_periods(
    con: duckdb.DuckDBPyConnection,
    focus: pl.DataFrame,
    adjustments: pl.DataFrame,
    out_dir: Path,
    *,
    parquet: bool = False,
    published: Path | None = None,
) -> list[Path]:
    """One FOCUS file per billing period, `focus-YYYY-MM.csv` (and `.parquet` when asked): the
    period's usage rows and the adjustments it books. A closed period (`gpucost close`) whose file
    exists is not rewritten: what was reported stays as it was, and later revisions arrive as
    Adjustment rows in the first open period.

    `out_dir` may be a staging folder that replaces `published` (the report folder as last
    published): a closed period's files are then carried over from there byte for byte."""
    published = published or out_dir
    closed: set[str] = set()
    if "closed_months" in _tables(con, "meta"):
        months = con.execute("select month from meta.closed_months").fetchall()
        closed = {row[0].strftime("%Y-%m") for row in months}
    rows = pl.concat([focus, adjustments], how="vertical_relaxed")
    written: list[Path] = []
    periods = rows.get_column("BillingPeriodStart").str.slice(0, 7).unique().sort().to_list()
    for period in periods:
        part = rows.filter(pl.col("BillingPeriodStart").str.slice(0, 7) == period)
        csv = out_dir / f"focus-{period}.csv"
        if period in closed and (published / csv.name).exists():
            for kept in [csv.name, f"focus-{period}.parquet"]:
                if (published / kept).exists() and published != out_dir:
                    shutil.copy2(published / kept, out_dir / kept)  # bytes and mtime kept
                if (out_dir / kept).exists():
                    written.append(out_dir / kept)
            continue
        written.append(write_csv(part, csv))
        if parquet:
            target = out_dir / f"focus-{period}.parquet"
            typed = part.with_columns(
                pl.col(column).str.to_datetime(FOCUS_TIME_FORMAT, time_zone="UTC")
                for column in FOCUS_TIME_COLUMNS
            )
            written.append(_write_atomic(target, typed.write_parquet))
    return written


STALE_TEMP_SECONDS = 3600


def _write_atomic(path: Path, write: Callable[[Path], Any]) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o600)  # cost data: readable by its owner only, like the database
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------- the out folder

OUT_MARKER = ".gpucost-report"
"""The file gpucost writes into every report folder it makes: the folder is gpucost's to replace."""


def _own_names() -> set[str]:
    return {"index.html", "focus.csv", *(f"{mart}.csv" for mart in MART_EXPORTS)}


def is_report_folder(path: Path) -> bool:
    """True when `path` is empty or gpucost's own: it holds the marker, or (a report folder
    from before the marker) nothing but gpucost's own output files and their temporary files."""
    names = {p.name for p in path.iterdir()}
    if not names or OUT_MARKER in names:
        return True
    own = _own_names()
    temps = tuple(f".{name}." for name in own)
    return all(name in own or name.startswith(temps) for name in names)


def check_out_dir(out_dir: Path, *, force: bool = False) -> None:
    """Refuse (`ReportError`, exit 2) an `out_dir` that is a file, or a non-empty folder gpucost
    did not make (`--out /` would write into `/`), unless `force`."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ReportError(f"report folder {out_dir} exists and is not a folder")
    try:
        ours = is_report_folder(out_dir)
    except OSError as exc:
        raise ReportError(f"report folder {out_dir} cannot be read: {exc.strerror}") from None
    if not ours and not force:
        raise ReportError(
            f"report folder {out_dir} is not empty and gpucost did not make it (no "
            f"{OUT_MARKER}); choose another --out, or pass --force-out to write into it anyway"
        )


def _swappable(out_dir: Path) -> bool:
    # A folder can be replaced whole when it is gpucost's own and has a parent to rename in
    # (not `/`, not the working directory itself).
    resolved = out_dir.resolve()
    return resolved != resolved.parent and resolved != Path.cwd().resolve()


def _remove_stale_stages(parent: Path, name: str) -> None:
    """Delete the temporary folders a killed report left beside `name` (older than an hour)."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for stale in parent.glob(f".{name}.*-report"):
        try:
            if stale.is_dir() and stale.stat().st_mtime < cutoff:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            continue


def stage_out_dir(out_dir: Path) -> Path:
    """A new, private, empty folder beside `out_dir` to write a whole report into."""
    resolved = out_dir.resolve()
    parent = resolved.parent if _swappable(out_dir) else resolved
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_stages(parent, resolved.name)
        return Path(tempfile.mkdtemp(prefix=f".{resolved.name}.", suffix=".new-report", dir=parent))
    except OSError as exc:
        raise ReportError(
            f"cannot write the report into {out_dir}: {exc.strerror or exc}"
        ) from None


def _carry_over(out_dir: Path, stage: Path) -> None:
    """Move into `stage` what `out_dir` holds besides gpucost's outputs (someone's notes, a
    file a concurrent report is writing), so that replacing the folder loses nothing but the
    old report and the temporary files a killed report left (older than an hour)."""
    produced = {p.name for p in stage.iterdir()}
    own = _own_names() | produced | {OUT_MARKER}
    temps = tuple(f".{name}." for name in own)
    cutoff = time.time() - STALE_TEMP_SECONDS
    for path in out_dir.iterdir():
        if path.name in own:
            continue
        if path.name.startswith(temps) and path.lstat().st_mtime < cutoff:
            continue
        os.replace(path, stage / path.name)


def publish_out_dir(stage: Path, out_dir: Path, files: list[Path]) -> tuple[Path, list[Path]]:
    """Put the finished report of `stage` in place of `out_dir`; return index.html and the files
    at their final paths.

    gpucost's own folder (or none yet) is replaced whole by two renames; a folder that is not
    gpucost's (`check_out_dir` let it through only with `force`) gets the files moved in one by
    one, and keeps everything else.
    """
    (stage / OUT_MARKER).write_text(
        "This folder is written by gpucost report and replaced whole by the next one.\n",
        encoding="utf-8",
    )
    try:
        if not out_dir.exists():
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            os.rename(stage, out_dir)
        elif _swappable(out_dir) and is_report_folder(out_dir):
            old = Path(
                tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old-report", dir=stage.parent)
            )
            _carry_over(out_dir, stage)
            os.rename(out_dir, old / "previous")
            os.rename(stage, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:  # not gpucost's (allowed by force), or a folder that cannot be renamed
            for path in stage.iterdir():
                os.replace(path, out_dir / path.name)
            shutil.rmtree(stage, ignore_errors=True)
    except OSError as exc:
        raise ReportError(
            f"cannot write the report into {out_dir}: {exc.strerror or exc}"
        ) from None
    final = [out_dir / path.name for path in files]
    return out_dir / "index.html", final


# --------------------------------------------------------------------------- render


def render_report(
    config: Config,
    out_dir: Path,
    *,
    period_days: int = DEFAULT_PERIOD_DAYS,
    cluster_sections: int = CLUSTER_SECTIONS,
    provider_name: str | None = None,
    force_out: bool = False,
) -> ReportResult:
    """Render index.html, the mart CSVs and focus.csv from `config.store.db` into `out_dir`.

    All of the files or none: they are written into a temporary sibling folder that replaces
    `out_dir` at the end. A non-empty `out_dir` that gpucost did not make is refused
    (`ReportError`, exit 2) unless `force_out`; then the files are moved into it one by one and
    nothing else in it is touched.

    The HTML covers the last `period_days` days of data; the `cluster_sections` clusters with
    the most spend get a full section, the others a row in a compact table. The CSVs hold
    every row of the marts.

    Raises `MartsMissingError` when the database has no marts (`gpucost build` first) and
    `ReportError` when it cannot be opened.
    """
    final_dir = out_dir
    check_out_dir(final_dir, force=force_out)
    started = time.monotonic()
    # DuckDB may create files beside the database while it is open (a spill directory for
    # temp tables): cost data, so readable by the owner only. The umask is process-wide: it is
    # the store's counted one (a store open meanwhile keeps it), given back once closed.
    private_umask.hold()
    try:
        con = _connect(config.store.db)
    except BaseException:
        private_umask.release()
        raise
    try:
        missing = [m for m in REQUIRED_MARTS if m not in _tables(con, "marts")]
        if missing:
            raise MartsMissingError(
                f"the database {config.store.db} has no marts yet (missing: "
                f"{', '.join('marts.' + m for m in missing)}): run gpucost build first"
            )
        # Every file is written into a new sibling folder, which replaces `out_dir` only once
        # all are there: a failure leaves the previous report whole (no new CSVs beside an old
        # index.html).
        out_dir = stage_out_dir(final_dir)
        files: list[Path] = []
        present = _tables(con, "marts")
        for mart in MART_EXPORTS:
            if mart in FINANCE_MARTS and mart not in present:
                continue
            frame = con.sql(f"select * from marts.{mart} order by {_MART_ORDER[mart]}").pl()
            files.append(write_csv(frame, out_dir / f"{mart}.csv"))
        focus = build_focus(con, **({"provider_name": provider_name} if provider_name else {}))
        files.append(write_csv(focus, out_dir / "focus.csv"))
        if "project_monthly" in present:
            adjustments = build_adjustments(
                con, **({"provider_name": provider_name} if provider_name else {})
            )
            files.extend(
                write_focus_periods(
                    con,
                    focus,
                    adjustments,
                    out_dir,
                    parquet=config.report.focus_parquet,
                    published=final_dir,
                )
            )
        context = _context(con, config, period_days, cluster_sections)
        html = _environment().get_template("index.html").render(**context)
        index = _write_atomic(
            out_dir / "index.html", lambda tmp: tmp.write_text(html, encoding="utf-8")
        )
        files.insert(0, index)
        index, files = publish_out_dir(out_dir, final_dir, files)
    except BaseException:
        if out_dir != final_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        con.close()
        private_umask.release()
    notes = tuple(n["text"] for n in context["notes"])
    result = ReportResult(
        index_html=index,
        files=tuple(files),
        clusters=context["cluster_count"],
        focus_rows=focus.height,
        seconds=time.monotonic() - started,
        notes=notes,
    )
    log.info(result.summary_line())
    return result


def _context(
    con: duckdb.DuckDBPyConnection, config: Config, period_days: int, cluster_sections: int
) -> dict[str, Any]:
    thresholds = config.thresholds
    marts = _tables(con, "marts")
    first_day, end_day, partial = _complete_days(con, period_days)
    start_day = max(first_day, end_day - timedelta(days=period_days - 1))
    period = {
        "start": start_day,
        "end": end_day,
        "days": (end_day - start_day).days + 1,
        "partial": partial,
    }
    params = {"start": start_day, "end": end_day}
    charts = _ChartSalt()

    summary = _summary(con, params, declined="recommendation_states" in marts)
    currencies = [s["currency"] for s in summary]
    chart_currencies = currencies[:CHART_CURRENCIES]
    trends = _trends(con, params, chart_currencies, charts)
    idle = _idle(con, params, chart_currencies, charts, period)
    recs = _recommendations(con, declined="recommendation_states" in marts)
    drift = _drift(con, params, marts, thresholds.mape_days, chart_currencies, charts)
    health = _health(con)
    clusters = _clusters(con, params, thresholds.idle_threshold_pct, charts, cluster_sections)
    notes = _notes(con, marts)
    finance = _finance(con, marts, charts)
    latest_snapshot = con.execute("select max(last_snapshot_at) from marts.clusters").fetchall()
    return {
        "version": __version__,
        "generated_at": datetime.now(UTC),
        "data_as_of": latest_snapshot[0][0],
        "period": period,
        "summary": summary,
        "trends": trends,
        "idle": idle,
        "recs": recs,
        "drift": drift,
        "health": health,
        "clusters": clusters,
        "cluster_count": clusters["count"],
        "anchors": {c["cluster_id"]: c["anchor"] for c in clusters["sections"]},
        "notes": notes,
        "thresholds": thresholds,
        "finance": finance,
        "csv_files": [f"{m}.csv" for m in MART_EXPORTS if m not in FINANCE_MARTS or m in marts]
        + ["focus.csv"],
    }


def _complete_days(
    con: duckdb.DuckDBPyConnection, period_days: int = DEFAULT_PERIOD_DAYS
) -> tuple[date, date, list[date]]:
    """The first and last UTC day whose 24 hours the snapshots cover, and the partial days.

    A snapshot at 03:00 covers three hours of its own day: a chart or a total that ended on
    that day would show a cliff that is not a drop in spend. Partial days stay in the CSVs.
    Only the whole UTC days of the last `period_days` + 2 are read: the period cannot start
    earlier, and a year of history is 8,760 buckets per cluster to count for nothing.
    """
    # Only days a report can show (absurd provider times in the store never reach the period).
    span = {"lo": DISPLAY_FROM.date(), "hi": DISPLAY_TO.date()}
    newest = con.execute(
        "select max(day) from marts.report_days where day between $lo and $hi", span
    ).fetchall()[0][0]
    since = DISPLAY_FROM.date() if newest is None else newest - timedelta(days=period_days + 1)
    rows = con.execute(
        "select day, is_complete from marts.report_days where day between $since and $hi "
        "order by day",
        {"since": max(since, DISPLAY_FROM.date()), "hi": DISPLAY_TO.date()},
    ).fetchall()
    complete = [day for day, ok in rows if ok]
    partial = [day for day, ok in rows if not ok]
    if complete:
        return complete[0], complete[-1], partial
    bounds = con.execute(
        "select min(day), max(day) from marts.fleet_daily where day between $lo and $hi",
        {"lo": DISPLAY_FROM.date(), "hi": DISPLAY_TO.date()},
    ).fetchall()[0]
    if bounds[0] is None:
        today = datetime.now(UTC).date()
        return today, today, []
    return bounds[0], bounds[1], partial


class _ChartSalt:
    """Distinct SVG id salts, so that the ids of many inline SVGs never collide."""

    def __init__(self) -> None:
        self._n = 0

    def __call__(self) -> str:
        self._n += 1
        return f"gpucost-chart-{self._n}"


def _summary(
    con: duckdb.DuckDBPyConnection, params: dict[str, Any], *, declined: bool
) -> list[dict[str, Any]]:
    # savings declined (dismissed, snoozed, suppressed) are not open savings
    not_declined = (
        "and rec_id not in (select rec_id from marts.recommendation_states where is_declined)"
        if declined
        else ""
    )
    rows = _rows(
        con,
        f"""
        with fleet as (
            select currency, sum(cost) as spend, sum(idle_cost) as idle_cost,
                   sum(gpu_hours) as gpu_hours, sum(idle_gpu_hours) as idle_gpu_hours
            from marts.fleet_daily where day between $start and $end group by currency
        ),
        unused as (
            select currency, sum(unused_capacity_cost) as unused_cost
            from marts.idle_waste_daily where day between $start and $end group by currency
        ),
        projected as (
            select currency, sum(projected_cost) as projected, sum(actual_cost) as actual,
                   count(*) as scored
            from marts.projection_drift
            where horizon = 'daily' and cast(projected_at as date) between $start and $end
            group by currency
        ),
        savings as (
            -- one recommendation per cluster, the largest: stopping and downsizing the same
            -- cluster are alternatives, their savings do not add up
            select currency, sum(best) as open_savings, sum(n) as open_recs
            from (
                select cluster_id, currency, max(monthly_savings) as best, count(*) as n
                from marts.recommendations where status = 'open' {not_declined} group by all
            )
            group by currency
        ),
        currencies as (
            select currency from fleet union select currency from savings
        )
        select c.currency, f.spend, f.idle_cost, f.gpu_hours, f.idle_gpu_hours,
               u.unused_cost, p.projected, p.actual, p.scored,
               coalesce(s.open_savings, 0) as open_savings,
               coalesce(s.open_recs, 0) as open_recs
        from currencies as c
        left join fleet as f using (currency)
        left join unused as u using (currency)
        left join projected as p using (currency)
        left join savings as s using (currency)
        order by f.spend desc nulls last, c.currency
        """,
        params,
    )
    for row in rows:
        row["idle_share"] = _share(row["idle_cost"], row["spend"])
        row["idle_hours_share"] = _share(row["idle_gpu_hours"], row["gpu_hours"])
        row["unused_share"] = _share(row["unused_cost"], row["spend"])
        row["drift_pct"] = (
            _share(Decimal(str(row["actual"])) - Decimal(str(row["projected"])), row["projected"])
            if row["projected"]
            else None
        )
    return rows


def _trends(
    con: duckdb.DuckDBPyConnection, params: dict[str, Any], currencies: list[str], salt: _ChartSalt
) -> list[dict[str, Any]]:
    rows = _rows(
        con,
        "select day, currency, cost, idle_cost from marts.fleet_daily"
        " where day between $start and $end order by day",
        params,
    )
    out = []
    for currency in currencies:
        mine = [r for r in rows if r["currency"] == currency]
        if not mine:
            continue
        svg = _charts.spend_chart(
            [r["day"] for r in mine],
            [float(r["cost"]) for r in mine],
            [float(r["idle_cost"] or 0) for r in mine],
            currency=currency,
            symbol=currency_symbol(currency),
            salt=salt(),
        )
        out.append({"currency": currency, "svg": svg})
    return out


def _idle(
    con: duckdb.DuckDBPyConnection,
    params: dict[str, Any],
    currencies: list[str],
    salt: _ChartSalt,
    period: dict[str, Any],
) -> dict[str, Any]:
    rows = _rows(
        con,
        """
        with idle as (
            select cluster_id, currency, sum(idle_cost) as idle_cost,
                   sum(unused_capacity_cost) as unused_cost, sum(gpu_hours) as gpu_hours,
                   sum(idle_gpu_hours) as idle_gpu_hours,
                   sum(memory_held_idle_gpu_hours) as memory_held_hours
            from marts.idle_waste_daily where day between $start and $end group by all
        ),
        spend as (
            select cluster_id, currency, sum(cost) as spend
            from marts.cluster_cost_daily where day between $start and $end group by all
        )
        select i.*, s.spend, c.name, c.status, c.gpu_type, c.gpu_count
        from idle as i
        left join spend as s using (cluster_id, currency)
        left join marts.clusters as c using (cluster_id)
        where i.idle_cost > 0
        order by i.idle_cost desc, i.cluster_id
        """,
        params,
    )
    for row in rows:
        row["idle_hours_share"] = _share(row["idle_gpu_hours"], row["gpu_hours"])
        row["idle_share"] = _share(row["idle_cost"], row["spend"])
    charts = []
    label = f"{format_day(period['start'])} to {format_day(period['end'])}"
    for currency in currencies:
        top = [r for r in rows if r["currency"] == currency][:TOP_IDLE_CHART]
        if top:
            svg = _charts.idle_by_cluster_chart(
                [r["name"] or r["cluster_id"] for r in top],
                [float(r["idle_cost"]) for r in top],
                currency=currency,
                symbol=currency_symbol(currency),
                period=f"{period['days']} days",
                salt=salt(),
            )
            charts.append({"currency": currency, "svg": svg})
    return {"rows": rows[:TOP_IDLE_TABLE], "total": len(rows), "charts": charts, "label": label}


def _finance(con: duckdb.DuckDBPyConnection, marts: set[str], salt: _ChartSalt) -> dict[str, Any]:
    """The Finance section: spend by project in the latest month (with idle share), budgets
    (actual and forecast against the amount) and the latest anomalies; marts only."""
    if not all(m in marts for m in FINANCE_MARTS):
        return {"available": False}
    month_row = con.execute("select max(month) from marts.project_monthly").fetchall()
    month = month_row[0][0] if month_row else None
    projects = _rows(
        con,
        """
        select p.*, pr.owner_email
        from marts.project_monthly as p
        left join marts.projects as pr on pr.project_id is not distinct from p.project_id
        where p.month = $month
        order by p.currency, p.cost desc, p.project_id
        """,
        {"month": month},
    )
    for row in projects:
        row["idle_share"] = _share(row["idle_cost"], row["cost"])
    label = month.strftime("%B %Y") if month else ""
    charts = []
    for currency in sorted({r["currency"] for r in projects}):
        mine = [r for r in projects if r["currency"] == currency]
        charts.append(
            {
                "currency": currency,
                "svg": _charts.project_spend_chart(
                    [r["project_name"] or r["project_id"] or "(no project)" for r in mine],
                    [float(r["cost"]) for r in mine],
                    [float(r["idle_cost"]) for r in mine],
                    currency=currency,
                    symbol=currency_symbol(currency),
                    period=label,
                    salt=salt(),
                ),
            }
        )
    budgets = _rows(
        con,
        "select * from marts.budget_status where month = $month order by budget_name",
        {"month": month},
    )
    accuracy = (
        _rows(
            con,
            "select * from marts.budget_forecast_accuracy order by month desc, budget_name "
            f"limit {MAX_TABLE_ROWS}",
        )
        if "budget_forecast_accuracy" in marts
        else []
    )
    anomalies = _rows(
        con,
        f"select * from marts.spend_anomalies order by day desc, scope, scope_id, currency "
        f"limit {TOP_ANOMALIES + 1}",
    )
    return {
        "available": True,
        "month": month,
        "label": label,
        "projects": projects,
        "charts": charts,
        "budgets": budgets,
        "accuracy": accuracy,
        "anomalies": anomalies[:TOP_ANOMALIES],
        "more_anomalies": len(anomalies) > TOP_ANOMALIES,
    }


def _recommendations(con: duckdb.DuckDBPyConnection, *, declined: bool) -> dict[str, Any]:
    # dismissed, snoozed and suppressed ones (marts.recommendation_states) are shown apart
    not_declined = (
        "and r.rec_id not in (select rec_id from marts.recommendation_states where is_declined)"
        if declined
        else ""
    )
    open_rows = _rows(
        con,
        f"""
        select r.*, c.name, c.gpu_type, c.gpu_count, c.status as cluster_status
        from marts.recommendations as r left join marts.clusters as c using (cluster_id)
        where r.status = 'open' {not_declined}
        order by r.monthly_savings desc nulls last, r.rec_id
        """,
    )
    declined_rows = (
        _rows(
            con,
            """
            select s.*, s.cluster_name as name from marts.recommendation_states as s
            where s.state in ('dismissed', 'snoozed', 'suppressed')
            order by s.state, s.monthly_savings desc nulls last, s.rec_id
            """,
        )
        if declined
        else []
    )
    resolved = _rows(
        con,
        """
        select r.*, c.name
        from marts.recommendations as r left join marts.clusters as c using (cluster_id)
        where r.status = 'resolved'
        order by r.last_seen_at desc, r.realized_monthly_savings desc nulls last, r.rec_id
        """,
    )
    kinds: dict[str, int] = defaultdict(int)
    for r in open_rows:
        kinds[r["kind"]] += 1
    totals = _best_per_cluster(open_rows, "monthly_savings")
    realized = _best_per_cluster(resolved, "realized_monthly_savings")
    return {
        "open": open_rows[:MAX_TABLE_ROWS],
        "open_count": len(open_rows),
        "resolved": resolved[:50],
        "resolved_count": len(resolved),
        "totals": list(totals.items()),
        "realized": list(realized.items()),
        "kinds": sorted(kinds.items(), key=lambda kv: -kv[1]),
        "declined": declined_rows[:MAX_TABLE_ROWS],
        "declined_totals": list(_best_per_cluster(declined_rows, "monthly_savings").items()),
    }


def _best_per_cluster(rows: list[dict[str, Any]], column: str) -> dict[str, Decimal]:
    """Savings per currency, counting one recommendation per cluster: the largest.

    Two recommendations for one cluster (stop it, or downsize it) are alternatives: adding them
    would promise money that cannot be saved twice.
    """
    best: dict[tuple[str, str], Decimal] = {}
    for r in rows:
        key = (r["cluster_id"], r["currency"])
        best[key] = max(best.get(key, Decimal(0)), r[column] or Decimal(0))
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for (_cluster, currency), amount in best.items():
        totals[currency] += amount
    return dict(sorted(totals.items()))


def _drift(
    con: duckdb.DuckDBPyConnection,
    params: dict[str, Any],
    marts: set[str],
    mape_days: int,
    currencies: list[str],
    salt: _ChartSalt,
) -> dict[str, Any]:
    flagged = _rows(
        con,
        """
        select d.*, d.actual_cost - d.projected_cost as difference, c.name
        from marts.projection_drift as d left join marts.clusters as c using (cluster_id)
        where d.is_flagged and cast(d.projected_at as date) between $start and $end
        order by abs(d.actual_cost - d.projected_cost) desc, d.cluster_id, d.projected_at
        """,
        params,
    )
    causes = _rows(
        con,
        """
        select cause, count(*) as n from marts.projection_drift
        where is_flagged and cast(projected_at as date) between $start and $end
        group by cause order by n desc, cause
        """,
        params,
    )
    scored = con.execute(
        "select count(*) from marts.projection_drift"
        " where cast(projected_at as date) between $start and $end",
        params,
    ).fetchall()[0][0]
    accuracy = _accuracy(con, marts, mape_days)
    series = _rows(
        con,
        """
        select cast(projected_at as date) as day, currency, sum(projected_cost) as projected,
               sum(actual_cost) as actual
        from marts.projection_drift
        where horizon = 'daily' and cast(projected_at as date) between $start and $end
        group by all order by day
        """,
        params,
    )
    charts = []
    for currency in currencies:
        mine = [r for r in series if r["currency"] == currency]
        if mine:
            svg = _charts.projection_chart(
                [r["day"] for r in mine],
                [float(r["projected"]) for r in mine],
                [float(r["actual"]) for r in mine],
                currency=currency,
                symbol=currency_symbol(currency),
                salt=salt(),
            )
            charts.append({"currency": currency, "svg": svg})
    return {
        "flagged": flagged[:MAX_TABLE_ROWS],
        "flagged_count": len(flagged),
        "causes": causes,
        "scored": scored,
        "accuracy": accuracy,
        "charts": charts,
    }


def _accuracy(con: duckdb.DuckDBPyConnection, marts: set[str], mape_days: int) -> dict[str, Any]:
    """MAPE and bias per cluster: the models' mart when present, else from projection_drift."""
    if "cluster_drift_accuracy" in marts:
        columns = [
            r[0]
            for r in con.execute(
                "select column_name from information_schema.columns"
                " where table_schema = 'marts' and table_name = 'cluster_drift_accuracy'"
                " order by ordinal_position"
            ).fetchall()
        ]
        mape = next((c for c in columns if "mape" in c.lower()), None)
        bias = next((c for c in columns if "bias" in c.lower()), None)
        if mape and "cluster_id" in columns:
            # Column names come from the catalog, never from data: safe to quote into SQL.
            bias_sql = f'a."{bias}"' if bias else "null"
            horizon_sql = "a.horizon" if "horizon" in columns else "null"
            scored_sql = "a.scored_days" if "scored_days" in columns else "null"
            rows = _rows(
                con,
                f"""
                select a.cluster_id, c.name, a."{mape}" as mape, {bias_sql} as bias,
                       {horizon_sql} as horizon, {scored_sql} as scored
                from marts.cluster_drift_accuracy as a
                left join marts.clusters as c using (cluster_id)
                where a."{mape}" > 0
                order by a."{mape}" desc, a.cluster_id
                """,
            )
            return {
                "rows": rows[:TOP_IDLE_TABLE],
                "count": len(rows),
                "source": "marts.cluster_drift_accuracy",
            }
    rows = _rows(
        con,
        """
        with daily as (
            select cluster_id, projected_at, drift_pct,
                   row_number() over (partition by cluster_id order by projected_at desc) as n
            from marts.projection_drift
            where horizon = 'daily' and drift_pct is not null
        )
        select d.cluster_id, c.name, avg(abs(d.drift_pct)) as mape, avg(d.drift_pct) as bias,
               'daily' as horizon, count(*) as scored
        from daily as d left join marts.clusters as c using (cluster_id)
        where d.n <= $days
        group by all
        having avg(abs(d.drift_pct)) > 0
        order by mape desc, d.cluster_id
        """,
        {"days": mape_days},
    )
    return {
        "rows": rows[:TOP_IDLE_TABLE],
        "count": len(rows),
        "source": f"last {mape_days} daily projections",
    }


def _health(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    counts = _rows(
        con,
        """
        select coalesce(health, 'unknown') as health, count(*) as n
        from marts.clusters group by all order by n desc, health
        """,
    )
    unhealthy = _rows(
        con,
        """
        select * from marts.clusters
        where coalesce(health, 'unknown') <> 'healthy' or status = 'error'
        order by case status when 'error' then 0 else 1 end, health, cluster_id
        """,
    )
    alerts = _rows(con, "select * from marts.active_alerts")
    alerts.sort(
        key=lambda a: (
            _SEVERITY_RANK.get(a["severity"] or "", 9),
            -(a["triggered_at"].timestamp() if a["triggered_at"] else 0),
            a["cluster_id"],
        )
    )
    return {
        "counts": counts,
        "unhealthy": unhealthy[:MAX_TABLE_ROWS],
        "unhealthy_count": len(unhealthy),
        "alerts": alerts[:MAX_TABLE_ROWS],
        "alert_count": len(alerts),
    }


def _clusters(
    con: duckdb.DuckDBPyConnection,
    params: dict[str, Any],
    idle_threshold: float,
    salt: _ChartSalt,
    limit: int,
) -> dict[str, Any]:
    rows = _rows(
        con,
        """
        with spend as (
            select cluster_id, currency, sum(cost) as spend
            from marts.cluster_cost_daily where day between $start and $end group by all
        ),
        idle as (
            select cluster_id, currency, sum(idle_cost) as idle_cost,
                   sum(unused_capacity_cost) as unused_cost, sum(gpu_hours) as gpu_hours,
                   sum(idle_gpu_hours) as idle_gpu_hours,
                   sum(avg_gpu_utilization * gpu_hours) / nullif(sum(gpu_hours), 0) as avg_util
            from marts.idle_waste_daily where day between $start and $end group by all
        )
        select c.*, s.spend, i.idle_cost, i.unused_cost, i.gpu_hours, i.idle_gpu_hours,
               i.avg_util
        from marts.clusters as c
        left join spend as s on s.cluster_id = c.cluster_id and s.currency = c.currency
        left join idle as i on i.cluster_id = c.cluster_id and i.currency = c.currency
        order by s.spend desc nulls last, c.cluster_id
        """,
        params,
    )
    top = rows[:limit]
    details = _cluster_details(con, [r["cluster_id"] for r in top], params)
    sections = []
    for row in top:
        detail = details.get(row["cluster_id"], {})
        heat = detail.get("heatmap")
        svg = None
        if heat is not None:
            svg = _charts.utilization_heatmap(
                heat["labels"],
                heat["start"],
                HEATMAP_HOURS,
                heat["matrix"],
                idle_threshold_pct=idle_threshold,
                salt=salt(),
                cluster_wide=heat["cluster_wide"],
            )
        sections.append({**row, **detail, "heatmap_svg": svg, "anchor": _anchor(row["cluster_id"])})
    return {"sections": sections, "rest": rows[limit:], "count": len(rows), "limit": limit}


_ANCHOR_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _anchor(cluster_id: str) -> str:
    """An HTML id for a cluster's section: readable, and distinct for distinct ids (`a/b` and
    `a_b` differ by the hash of the id, which the readable part alone would merge)."""
    digest = hashlib.sha256(cluster_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"cluster-{_ANCHOR_UNSAFE.sub('_', cluster_id)[:60]}-{digest}"


def _cluster_details(
    con: duckdb.DuckDBPyConnection, ids: list[str], params: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Configuration, cost breakdown, recommendations and a utilization matrix per cluster."""
    if not ids:
        return {}
    latest = _rows(
        con,
        "select * from marts.cluster_configuration where cluster_id in (select unnest($ids)) "
        "order by cluster_id",
        {"ids": ids},
    )
    components = _rows(
        con,
        """
        select cluster_id, component, cost_per_hour, currency
        from marts.cluster_rates where cluster_id in (select unnest($ids))
        order by cluster_id, cost_per_hour desc, component
        """,
        {"ids": ids},
    )
    period_costs = _rows(
        con,
        """
        select cluster_id, component, currency, sum(cost) as cost
        from marts.cluster_cost_daily
        where cluster_id in (select unnest($ids)) and day between $start and $end
        group by all order by cluster_id, cost desc
        """,
        {"ids": ids, **params},
    )
    recs = _rows(
        con,
        """
        select * from marts.recommendations where cluster_id in (select unnest($ids))
        order by status, monthly_savings desc nulls last
        """,
        {"ids": ids},
    )
    out: dict[str, dict[str, Any]] = {}
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in components:
        by_id[c["cluster_id"]].append(c)
    costs: dict[str, dict[str, Any]] = defaultdict(dict)
    for c in period_costs:
        costs[c["cluster_id"]][c["component"]] = c["cost"]
    recs_by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        recs_by[r["cluster_id"]].append(r)
    starts = {}
    for snap in latest:
        cid = snap["cluster_id"]
        mine = by_id.get(cid, [])
        total = sum((c["cost_per_hour"] for c in mine), Decimal(0))
        names = {c["component"] for c in mine} | set(costs.get(cid, {}))
        breakdown = [
            {
                "component": name,
                "per_hour": next(
                    (c["cost_per_hour"] for c in mine if c["component"] == name), None
                ),
                "share": _share(
                    next((c["cost_per_hour"] for c in mine if c["component"] == name), None), total
                ),
                "period_cost": costs.get(cid, {}).get(name),
            }
            for name in sorted(
                names,
                key=lambda n: (
                    -float(
                        costs.get(cid, {}).get(n)
                        or next((c["cost_per_hour"] for c in mine if c["component"] == n), 0)
                    )
                ),
            )
        ]
        out[cid] = {
            "snapshot": snap,
            "breakdown": breakdown,
            "rate_total": total,
            "recs": recs_by.get(cid, []),
        }
        if not _displayable_instant(snap["snapshot_at"]):
            continue  # an instant no period can take (year 9999, 200000): no heatmap
        end = snap["snapshot_at"].replace(minute=0, second=0, microsecond=0)
        starts[cid] = end - timedelta(hours=HEATMAP_HOURS)
    _attach_heatmaps(con, out, starts)
    return out


def _attach_heatmaps(
    con: duckdb.DuckDBPyConnection, out: dict[str, dict[str, Any]], starts: dict[str, datetime]
) -> None:
    if not starts:
        return
    ids = {"ids": list(starts)}
    # Per-GPU points come as columns (polars), not one dict per point: 50 sections x 8 GPUs x
    # 168 hours is 67,200 points, and their matrices are filled by numpy indexing.
    per_gpu = con.sql(
        """
        select cluster_id, gpu_id, hour, utilization
        from marts.utilization_heatmap
        where not is_cluster_wide and cluster_id in (select unnest($ids))
        order by cluster_id, bucket_at
        """,
        params=ids,
    ).pl()
    wide = _rows(
        con,
        """
        select cluster_id, bucket_at, utilization
        from marts.utilization_heatmap
        where is_cluster_wide and cluster_id in (select unnest($ids))
        """,
        ids,
    )
    gpus = {part["cluster_id"][0]: part for part in per_gpu.partition_by("cluster_id")}
    cluster_wide: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in wide:
        cluster_wide[r["cluster_id"]].append(r)
    for cid, start in starts.items():
        points = gpus.get(cid)
        if points is not None and points.height:
            out[cid]["heatmap"] = _gpu_matrix(points, start)
        elif cluster_wide.get(cid):
            out[cid]["heatmap"] = _matrix(
                cluster_wide[cid], ["all GPUs"], start, lambda p: "all GPUs", True
            )


def _gpu_sort_key(gpu_id: str) -> tuple[int, int, str]:
    return (0, int(gpu_id), "") if gpu_id.isdigit() else (1, 0, gpu_id)


def _gpu_matrix(points: pl.DataFrame, start: datetime) -> dict[str, Any]:
    """GPUs x hours from one cluster's (gpu_id, hour, utilization) columns; NaN: no reading."""
    ids = points["gpu_id"].to_list()
    labels = sorted(set(ids), key=_gpu_sort_key)
    index = {label: i for i, label in enumerate(labels)}
    rows = np.fromiter((index[g] for g in ids), dtype=np.int64, count=len(ids))
    hours = points["hour"].to_numpy()
    values = points["utilization"].cast(pl.Float64).to_numpy()
    keep = (hours >= 0) & (hours < HEATMAP_HOURS) & ~np.isnan(values)
    matrix = np.full((len(labels), HEATMAP_HOURS), np.nan)
    # points are in time order: where two fall in one hour, the later one is kept
    matrix[rows[keep], hours[keep]] = values[keep]
    return {"labels": labels, "start": start, "matrix": matrix, "cluster_wide": False}


def _matrix(
    points: Iterable[dict[str, Any]],
    labels: list[str],
    start: datetime,
    key: Callable[[dict[str, Any]], str],
    cluster_wide: bool,
) -> dict[str, Any]:
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.full((len(labels), HEATMAP_HOURS), np.nan)
    for p in points:
        hour = int((p["bucket_at"] - start).total_seconds() // 3600)
        if 0 <= hour < HEATMAP_HOURS and p["utilization"] is not None:
            matrix[index[key(p)], hour] = p["utilization"]
    return {"labels": labels, "start": start, "matrix": matrix, "cluster_wide": cluster_wide}


def _notes(con: duckdb.DuckDBPyConnection, marts: set[str]) -> list[dict[str, Any]]:
    """What a reader must know about missing data: the latest run, failed clusters, checks."""
    notes: list[dict[str, Any]] = []
    runs = _rows(con, "select * from meta.runs order by started_at desc limit 1")
    if not runs:
        notes.append(
            {
                "level": "warn",
                "text": "No snapshot run is recorded in this database.",
                "failures": [],
            }
        )
        return notes
    run = runs[0]
    failures = _rows(
        con,
        """
        select cluster_id, stage, outcome, http_status, reason from meta.run_failures
        where run_id = ? order by outcome, cluster_id nulls first limit 200
        """,
        [run["run_id"]],
    )
    counts = _rows(
        con,
        "select outcome, count(*) as n from meta.run_failures where run_id = ?"
        " group by outcome order by outcome",
        [run["run_id"]],
    )
    status = run["status"]
    when = format_time(run["started_at"])
    if status == "running":
        notes.append(
            {
                "level": "warn",
                "failures": failures,
                "text": f"The latest snapshot run ({run['run_id']}, started {when}) has not "
                "finished: it is still running or it crashed. Figures come from the "
                "runs before it.",
            }
        )
    elif status in ("partial", "failed"):
        what = ", ".join(f"{c['n']} {c['outcome']}" for c in counts) or "see the log"
        notes.append(
            {
                "level": "warn",
                "failures": failures,
                "text": f"The latest snapshot run ({run['run_id']}, started {when}) is {status}: "
                f"{what}. The clusters below were not read in that run; their figures "
                "stop at their previous snapshot.",
            }
        )
    elif failures:
        notes.append(
            {
                "level": "info",
                "failures": failures,
                "text": f"The latest snapshot run ({run['run_id']}) recorded "
                f"{len(failures)} clusters it did not read.",
            }
        )
    mismatches = reconcile(con)
    if mismatches:
        notes.append(
            {
                "level": "warn",
                "failures": [],
                "text": f"The FOCUS export does not add up to marts.fleet_daily on "
                f"{len(mismatches)} day(s) (first: {mismatches[0][0]} "
                f"{mismatches[0][1]}); rebuild the marts (gpucost build).",
            }
        )
        log.warning(
            "focus.csv differs from marts.fleet_daily on %d day(s): %s",
            len(mismatches),
            mismatches[:3],
        )
    return notes
