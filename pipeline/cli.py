"""The `gpucost` command: a thin click layer that parses, calls the library and prints.

Exit codes: 0 success; 1 unexpected error; 2 usage or configuration error; 3 partial (some
clusters failed, the rest kept); 4 authentication or permission refused; 5 another run holds
the lock.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pipeline import __version__
from pipeline.config import Config, load_config
from pipeline.errors import EXIT_OK, EXIT_PARTIAL, EXIT_UNEXPECTED, EXIT_USAGE, GpucostError
from pipeline.log import configure_logging, get_logger
from pipeline.redact import redact_text

log = get_logger("cli")


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command shares: --db, --config, --log-format, --verbose; and the mapping
    of any error the command raises to its message and exit code (`_fail`)."""

    @click.option(
        "--db",
        type=click.Path(dir_okay=False),
        default=None,
        help="DuckDB file [env GPUCOST_DB; default ./gpucost.duckdb].",
    )
    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="TOML configuration file [default ./gpucost.toml when present].",
    )
    @click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default=None,
        help="Log lines for people (text) or log shippers (json).",
    )
    @click.option("-v", "--verbose", is_flag=True, help="Say more; show tracebacks.")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # The one place where an error becomes a one-line message and its exit code
        # (`_fail`): commands raise, they do not catch.
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            sys.exit(_fail(exc, bool(kwargs.get("verbose"))))

    return wrapper


def api_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options of the commands that call the provider: --api-url, --api-key-file."""

    @click.option(
        "--api-url",
        default=None,
        help="Provider base URL, e.g. https://api.example-gpu.cloud/v1 [env GPUCOST_API_URL].",
    )
    @click.option(
        "--api-key-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="File whose first line is the API key (else env GPUCOST_API_KEY; never an option "
        "value, which would show in ps).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


out_option = click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Report folder [default reports/out].",
)
"""The report folder option of `report`, `run` and `demo`."""

force_out_option = click.option(
    "--force-out",
    is_flag=True,
    help="Write the report into --out even when it is a non-empty folder gpucost did not make "
    "(the report's files are replaced, nothing else is touched).",
)
"""Refusing a foreign --out folder (`--out /`) is the default; this asks for it anyway."""


def _config(
    db: str | None,
    config_path: str | None,
    log_format: str | None,
    verbose: bool,
    *,
    api_url: str | None = None,
    api_key_file: str | None = None,
    out_dir: str | None = None,
) -> Config:
    configure_logging(log_format or "text", verbose=verbose)
    config = load_config(
        config_path,
        overrides={
            "store": {"db": db} if db else {},
            "api": {
                **({"url": api_url} if api_url else {}),
                **({"api_key_file": api_key_file} if api_key_file else {}),
            },
            "log": {"format": log_format} if log_format else {},
            "report": {"out_dir": out_dir} if out_dir else {},
        },
    )
    if log_format is None and config.log.format != "text":
        configure_logging(config.log.format, verbose=verbose)
    return config


def _fail(exc: BaseException, verbose: bool) -> int:
    # Every message is redacted: an error can quote what the provider sent (a 401 body that
    # echoes the key), and stderr goes to cron mail and the nightly log.
    if isinstance(exc, GpucostError):
        click.echo(f"gpucost: {redact_text(str(exc))}", err=True)
        return exc.exit_code
    if verbose:
        import traceback

        click.echo(redact_text("".join(traceback.format_exception(exc))), err=True, nl=False)
    click.echo(
        f"gpucost: unexpected error: {type(exc).__name__}: {redact_text(str(exc))}", err=True
    )
    return EXIT_UNEXPECTED


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gpucost")
def cli() -> None:
    """What your rented GPU clusters really cost, how much is idle, and what to change.

    \b
    Example, the nightly job:
        GPUCOST_API_KEY=... gpucost run --api-url https://api.example-gpu.cloud/v1
    """


@cli.command()
@common_options
@api_options
@click.option("--from-raw", is_flag=True, help="Rebuild the normalized tables from the raw store.")
def snapshot(db, config_path, log_format, verbose, api_url, api_key_file, from_raw):
    """Read every cluster from the provider and store it in DuckDB.

    \b
    Example:
        GPUCOST_API_KEY=... gpucost snapshot --api-url https://api.example-gpu.cloud/v1
    """
    from pipeline.snapshot import run_snapshot

    config = _config(
        db, config_path, log_format, verbose, api_url=api_url, api_key_file=api_key_file
    )
    result = run_snapshot(config, from_raw=from_raw, progress=sys.stderr.isatty())
    click.echo(result.summary_line())
    sys.exit(result.exit_code)


@cli.command()
@common_options
@click.option("--full-refresh", is_flag=True, help="Rebuild every mart from all history.")
@click.option(
    "--engine",
    type=click.Choice(["duckdb", "spark"]),
    default="duckdb",
    show_default=True,
    help="Where the models run: the DuckDB file, or Apache Spark over the lake (--lake).",
)
@click.option(
    "--lake",
    type=click.Path(file_okay=False),
    default=None,
    help="The Parquet lake of `gpucost lake export` (--engine spark; marts go to LAKE/marts/).",
)
@click.option(
    "--spark-master",
    default=None,
    help="Spark master URL, e.g. spark://host:7077 [env SPARK_MASTER; default local[2]].",
)
def build(db, config_path, log_format, verbose, full_refresh, engine, lake, spark_master):
    """Run the SQL models in sql/ into the marts, then their data tests.

    With --engine spark the same models, transpiled, run on Apache Spark over the lake (always
    a full refresh) and each mart is written as Parquet under LAKE/marts/<name>/.

    \b
    Example:
        gpucost build --db gpucost.duckdb --full-refresh
        gpucost build --engine spark --lake /data/gpucost-lake --spark-master local[4]
    """
    from pipeline.errors import ConfigError
    from pipeline.models import build_models

    config = _config(db, config_path, log_format, verbose)
    if engine == "spark":
        if lake is None:
            raise ConfigError("--engine spark needs --lake DIR (see `gpucost lake export`)")
        from pipeline.engines.spark import build_on_spark

        result = build_on_spark(lake, config.thresholds, config=config, master=spark_master)
    else:
        if lake is not None or spark_master is not None:
            raise ConfigError("--lake and --spark-master go with --engine spark")
        result = build_models(config, full_refresh=full_refresh)
    click.echo(result.summary_line())


@cli.command()
@common_options
@out_option
@force_out_option
def report(db, config_path, log_format, verbose, out_dir, force_out):
    """Render the HTML report, the CSV exports and the FOCUS export; print the report's path.

    \b
    Example:
        gpucost report --db gpucost.duckdb --out reports/out
    """
    from pipeline.report import render_report

    config = _config(db, config_path, log_format, verbose, out_dir=out_dir)
    result = render_report(config, Path(config.report.out_dir), force_out=force_out)
    click.echo(str(result.index_html))


@cli.command()
@common_options
@api_options
@out_option
@force_out_option
def run(db, config_path, log_format, verbose, api_url, api_key_file, out_dir, force_out):
    """Snapshot, build and report, then notify when channels are configured, as cron calls it.

    Exit 3 if some clusters failed or a notification could not be delivered (it stays pending
    for the next night); a channel that is down never fails the snapshot, build or report.

    \b
    Example (crontab, 03:15 UTC every night):
        15 3 * * * cd /srv/gpucost && GPUCOST_API_KEY=$(cat key) gpucost run --log-format json
    """
    from pipeline.models import build_models
    from pipeline.report import check_out_dir, render_report
    from pipeline.snapshot import run_snapshot

    config = _config(
        db,
        config_path,
        log_format,
        verbose,
        api_url=api_url,
        api_key_file=api_key_file,
        out_dir=out_dir,
    )
    # A refused --out is said before the night's snapshot, not after it.
    check_out_dir(Path(config.report.out_dir), force=force_out)
    try:
        snap = run_snapshot(config, progress=sys.stderr.isatty())
        log.info(snap.summary_line())
        built = build_models(config)
        log.info(built.summary_line())
        rendered = render_report(config, Path(config.report.out_dir), force_out=force_out)
    except Exception as exc:
        # The one command that acts after an error: a failed night is news too (run_health),
        # so notify runs after the message; notify's own trouble changes nothing here.
        code = _fail(exc, verbose)
        _notify_after_run(config, verbose)
        sys.exit(code)
    click.echo(str(rendered.index_html))
    notified = _notify_after_run(config, verbose)
    sys.exit(snap.exit_code or notified)


def _notify_after_run(config: Config, verbose: bool) -> int:
    """Notify last when channels are configured; 0, or 3 when a delivery failed or notify
    itself failed: a channel that is down never fails the snapshot, build or report."""
    if not config.notify.channels:
        return EXIT_OK
    from pipeline.notify import run_notify

    try:
        result = run_notify(config)
    except Exception as exc:
        _fail(exc, verbose)
        return EXIT_PARTIAL
    log.info(result.summary_line())
    return result.exit_code


@cli.command()
@common_options
@out_option
@click.option(
    "--nights",
    type=click.IntRange(1, 60),
    default=14,
    show_default=True,
    help="Simulated nightly snapshots.",
)
@click.option(
    "--clusters",
    type=click.IntRange(1, 100_000),
    default=40,
    show_default=True,
    help="Clusters in the simulated fleet.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Fleet seed.")
def demo(db, config_path, log_format, verbose, out_dir, nights, clusters, seed):
    """Run the whole pipeline against the built-in simulator and print the report's path.

    Starts the simulator on a free loopback port, takes NIGHTS nightly snapshots of a mixed
    fleet in simulated time, builds the marts and renders the report. The database is
    ./demo.duckdb unless --db names another (a previous demo database there is replaced).

    \b
    Example:
        gpucost demo --db demo.duckdb --out reports/out
    """
    from pipeline.demo import run_demo

    config = _config(db or "demo.duckdb", config_path, log_format, verbose, out_dir=out_dir)
    result = run_demo(
        config, nights=nights, clusters=clusters, seed=seed, progress=sys.stderr.isatty()
    )
    for line in result.lines():
        click.echo(line)


@cli.command()
@common_options
@click.argument("sql")
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="A table for people; CSV or JSON lines (every row) for tools.",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Rows a table shows.",
)
def query(db, config_path, log_format, verbose, sql, output, max_rows):
    """Run a read-only SQL query on the database and print the rows.

    The marts are in schema `marts`, the snapshot tables in `snap`, the run ledger in
    `meta.runs`. The database is opened read-only: a query cannot change it.

    \b
    Example:
        gpucost query --db demo.duckdb "select kind, count(*) from marts.recommendations group by 1"
    """
    from pipeline.query import format_result, run_query

    config = _config(db, config_path, log_format, verbose)
    result = run_query(config.store.db, sql)
    click.echo(format_result(result, output, max_rows=max_rows), nl=False)


@cli.command()
@common_options
def notify(db, config_path, log_format, verbose):
    """Announce what is new since the last notify to the configured channels.

    Reads the marts only (recommendations opened and resolved, budget thresholds, spend
    anomalies, run health), records each event in the database's ledger and delivers it once
    per channel; a failed delivery stays pending for the next notify (exit 3).

    \b
    Example:
        gpucost notify --config gpucost.toml
    """
    from pipeline.notify import run_notify

    config = _config(db, config_path, log_format, verbose)
    result = run_notify(config)
    click.echo(result.summary_line())
    sys.exit(result.exit_code)


@cli.group()
def recs() -> None:
    """Act on recommendations: list, show, dismiss, snooze, reopen.

    Decisions record who (GPUCOST_USER, else USER or LOGNAME), when and why; they survive
    rebuilds. A dismissed recommendation comes back when its savings grow by half.

    \b
    Example:
        gpucost recs list --status open
    """


def _recs_call(db, config_path, log_format, verbose, action):
    """Open the database (suppressions synchronized), run `action(con)`, print its lines."""
    from pipeline.recs import open_store

    config = _config(db, config_path, log_format, verbose)
    with open_store(config) as store:
        lines = action(store.con)
    for line in lines:
        click.echo(line)


_UNTIL = click.DateTime(formats=["%Y-%m-%d"])


@recs.command("list")
@common_options
@click.option(
    "--status",
    type=click.Choice(["open", "dismissed", "snoozed", "suppressed", "resolved", "closed"]),
    default=None,
    help="Only recommendations in this effective state.",
)
@click.option("--project", default=None, help="Only this project (id or name).")
def recs_list(db, config_path, log_format, verbose, status, project):
    """List recommendations with their effective state, largest savings first.

    \b
    Example:
        gpucost recs list --status open --project ML
    """
    from pipeline.recs import list_recommendations, table_lines

    _recs_call(
        db,
        config_path,
        log_format,
        verbose,
        lambda con: table_lines(list_recommendations(con, state=status, project=project)),
    )


@recs.command("show")
@common_options
@click.argument("rec_id")
def recs_show(db, config_path, log_format, verbose, rec_id):
    """Show one recommendation: evidence, savings, state and every decision taken on it.

    \b
    Example:
        gpucost recs show 1a2b3c4d5e6f7a8b
    """
    from pipeline.recs import decision_history, describe, get_recommendation

    def show(con):
        lines = describe(get_recommendation(con, rec_id))
        history = decision_history(con, rec_id)
        if history:
            lines.append("  history")
        for d in history:
            until = f" until {d['until_day']}" if d["until_day"] else ""
            lines.append(
                f"    {d['decided_at']:%Y-%m-%d %H:%M} {d['decided_by']}: {d['action']}{until}"
                + (f" ({d['reason']})" if d["reason"] else "")
            )
        return lines

    _recs_call(db, config_path, log_format, verbose, show)


def _decide(db, config_path, log_format, verbose, rec_id, action, reason=None, until=None):
    from pipeline.recs import decide

    def act(con):
        rec = decide(con, rec_id, action, reason=reason, until=until.date() if until else None)
        return [f"{rec['rec_id']} {rec['kind']} {rec['cluster_name']}: now {rec['state']}"]

    _recs_call(db, config_path, log_format, verbose, act)


@recs.command("dismiss")
@common_options
@click.argument("rec_id")
@click.option("--reason", required=True, help="Why: shown to the next reader.")
@click.option("--until", type=_UNTIL, default=None, help="Until this day (YYYY-MM-DD).")
def recs_dismiss(db, config_path, log_format, verbose, rec_id, reason, until):
    """Dismiss a recommendation (for good, or until a day); it comes back if its savings grow
    by half.

    \b
    Example:
        gpucost recs dismiss 1a2b3c4d5e6f7a8b --reason "benchmark box, idle on purpose"
    """
    _decide(db, config_path, log_format, verbose, rec_id, "dismiss", reason, until)


@recs.command("snooze")
@common_options
@click.argument("rec_id")
@click.option("--until", type=_UNTIL, required=True, help="Until this day (YYYY-MM-DD).")
@click.option("--reason", default=None, help="Why (optional).")
def recs_snooze(db, config_path, log_format, verbose, rec_id, until, reason):
    """Snooze a recommendation until a day; it is open again from that day.

    \b
    Example:
        gpucost recs snooze 1a2b3c4d5e6f7a8b --until 2026-12-15
    """
    _decide(db, config_path, log_format, verbose, rec_id, "snooze", reason, until)


@recs.command("reopen")
@common_options
@click.argument("rec_id")
@click.option("--reason", default=None, help="Why (optional).")
def recs_reopen(db, config_path, log_format, verbose, rec_id, reason):
    """Reopen a dismissed or snoozed recommendation.

    \b
    Example:
        gpucost recs reopen 1a2b3c4d5e6f7a8b
    """
    _decide(db, config_path, log_format, verbose, rec_id, "reopen", reason)


@cli.command()
@common_options
@click.option("--month", required=True, help="The UTC month to close, YYYY-MM.")
def close(db, config_path, log_format, verbose, month):
    """Close a month: freeze its marts.project_monthly rows as last built.

    Later revisions of a closed month are booked as adjustment_cost in the first open month.
    Closing a month twice, a month with no data, or a month before a closed one is an error
    (exit 2).

    \b
    Example:
        gpucost build && gpucost close --month 2026-11
    """
    from pipeline.finance import close_month, parse_month

    config = _config(db, config_path, log_format, verbose)
    result = close_month(config, parse_month(month))
    click.echo(result.summary_line())


@cli.group()
def lake() -> None:
    """The Parquet lake: the snapshot tables by UTC day, for Spark, Trino or a warehouse.

    \b
    Example:
        gpucost lake export --db gpucost.duckdb --lake /data/gpucost-lake
    """


@lake.command("export")
@common_options
@click.option(
    "--lake",
    "lake_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="The lake folder (local or mounted; created when missing).",
)
def lake_export(db, config_path, log_format, verbose, lake_dir):
    """Write the runs not yet in the lake as Parquet, partitioned by UTC day (hive style).

    Incremental and atomic per run: runs already exported are not written again (a rerun
    changes nothing), and a killed export never leaves a run that looks exported.

    \b
    Example (after the nightly run):
        gpucost lake export --db gpucost.duckdb --lake /data/gpucost-lake
    """
    from pipeline.lake import export_lake

    config = _config(db, config_path, log_format, verbose)
    result = export_lake(config.store.db, lake_dir)
    click.echo(result.summary_line())


def _register_simulator() -> None:
    from pipeline.simulator.cli import simulate

    cli.add_command(simulate)


_register_simulator()


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(standalone_mode=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else 1)
        sys.exit(code)
    except click.exceptions.UsageError:  # pragma: no cover - standalone_mode handles these
        sys.exit(EXIT_USAGE)
