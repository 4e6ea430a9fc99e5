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
from pipeline.errors import EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, GpucostError
from pipeline.log import configure_logging, get_logger

log = get_logger("cli")


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command shares: --db, --config, --log-format, --verbose."""

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
        return func(*args, **kwargs)

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
    if isinstance(exc, GpucostError):
        click.echo(f"gpucost: {exc}", err=True)
        return exc.exit_code
    if verbose:
        import traceback

        traceback.print_exception(exc)
    click.echo(f"gpucost: unexpected error: {type(exc).__name__}: {exc}", err=True)
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

    try:
        config = _config(
            db, config_path, log_format, verbose, api_url=api_url, api_key_file=api_key_file
        )
        result = run_snapshot(config, from_raw=from_raw, progress=sys.stderr.isatty())
    except Exception as exc:
        sys.exit(_fail(exc, verbose))
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

    try:
        config = _config(db, config_path, log_format, verbose)
        if engine == "spark":
            if lake is None:
                raise ConfigError("--engine spark needs --lake DIR (see `gpucost lake export`)")
            from pipeline.engines.spark import build_on_spark

            result = build_on_spark(lake, config.thresholds, master=spark_master)
        else:
            if lake is not None or spark_master is not None:
                raise ConfigError("--lake and --spark-master go with --engine spark")
            result = build_models(config, full_refresh=full_refresh)
    except Exception as exc:
        sys.exit(_fail(exc, verbose))
    click.echo(result.summary_line())


@cli.command()
@common_options
@out_option
def report(db, config_path, log_format, verbose, out_dir):
    """Render the HTML report, the CSV exports and the FOCUS export; print the report's path.

    \b
    Example:
        gpucost report --db gpucost.duckdb --out reports/out
    """
    from pipeline.report import render_report

    try:
        config = _config(db, config_path, log_format, verbose, out_dir=out_dir)
        result = render_report(config, Path(config.report.out_dir))
    except Exception as exc:
        sys.exit(_fail(exc, verbose))
    click.echo(str(result.index_html))


@cli.command()
@common_options
@api_options
@out_option
def run(db, config_path, log_format, verbose, api_url, api_key_file, out_dir):
    """Snapshot, build and report, as cron calls it; exit 3 if some clusters failed.

    \b
    Example (crontab, 03:15 UTC every night):
        15 3 * * * cd /srv/gpucost && GPUCOST_API_KEY=$(cat key) gpucost run --log-format json
    """
    from pipeline.models import build_models
    from pipeline.report import render_report
    from pipeline.snapshot import run_snapshot

    try:
        config = _config(
            db,
            config_path,
            log_format,
            verbose,
            api_url=api_url,
            api_key_file=api_key_file,
            out_dir=out_dir,
        )
        snap = run_snapshot(config, progress=sys.stderr.isatty())
        log.info(snap.summary_line())
        built = build_models(config)
        log.info(built.summary_line())
        rendered = render_report(config, Path(config.report.out_dir))
    except Exception as exc:
        sys.exit(_fail(exc, verbose))
    click.echo(str(rendered.index_html))
    sys.exit(snap.exit_code)


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

    try:
        config = _config(db or "demo.duckdb", config_path, log_format, verbose, out_dir=out_dir)
        result = run_demo(
            config, nights=nights, clusters=clusters, seed=seed, progress=sys.stderr.isatty()
        )
    except Exception as exc:
        sys.exit(_fail(exc, verbose))
    for line in result.lines():
        click.echo(line)


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

    try:
        config = _config(db, config_path, log_format, verbose)
        result = export_lake(config.store.db, lake_dir)
    except Exception as exc:
        sys.exit(_fail(exc, verbose))
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
