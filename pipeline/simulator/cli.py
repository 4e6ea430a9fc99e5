"""`gpucost simulate`: serve the provider simulator, or print its ground truth.

The API key of `serve` comes from `--api-key-file` (first line), else from `GPUCOST_API_KEY`;
with neither, `serve` generates a random key, writes it to a new file readable by its owner only
and says where on stderr (never on the command line, never in stdout's first line, which is the
base URL for scripts to read).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import click

from pipeline.simulator.faults import FAULT_KINDS, FaultSpec
from pipeline.simulator.variants import VARIANT_NAMES, VariantSpec

DEFAULT_START = "2026-11-13T03:00:00Z"


def _parse_start(value: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _fleet_options(func: Any) -> Any:
    func = click.option(
        "--start",
        default=DEFAULT_START,
        show_default=True,
        help="Virtual clock at start (ISO 8601, UTC).",
    )(func)
    func = click.option(
        "--seed",
        type=int,
        default=7,
        show_default=True,
        help="Fleet seed: the same seed gives the same fleet.",
    )(func)
    func = click.option(
        "--clusters",
        type=click.IntRange(1, 100_000),
        default=40,
        show_default=True,
        help="Clusters in the simulated fleet.",
    )(func)
    return func


def _make_fleet(clusters: int, seed: int, start: str) -> Any:
    from pipeline.simulator.fleet import Fleet, FleetSpec

    return Fleet(FleetSpec(seed=seed, clusters=clusters, start=_parse_start(start)))


def _read_key_lines(path: str, hint: str) -> list[str]:
    """The non-empty lines of a key file; a missing or empty file is a usage error."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=hint) from None
    keys = [line.strip() for line in lines if line.strip()]
    if not keys:
        raise click.BadParameter(f"{path} is empty", param_hint=hint)
    return keys


def _read_key(api_key_file: str | None) -> tuple[str, str | None]:
    """(key, where it was generated or None). The option beats the environment."""
    if api_key_file:
        return _read_key_lines(api_key_file, "--api-key-file")[0], None
    if os.environ.get("GPUCOST_API_KEY", "").strip():
        return os.environ["GPUCOST_API_KEY"].strip(), None
    key = secrets.token_urlsafe(24)
    folder = Path(tempfile.mkdtemp(prefix="gpucost-sim-"))
    path = folder / "api_key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key, str(path)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def simulate() -> None:
    """Run the built-in provider simulator (real HTTP on loopback) or print its ground truth."""


@simulate.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind (loopback unless you mean it).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port; 0 picks a free one (the URL is printed).",
)
@_fleet_options
@click.option(
    "--rate-limit",
    type=click.IntRange(1, None),
    default=None,
    help="Requests allowed per window (wall-clock); default unlimited.",
)
@click.option(
    "--rate-window",
    type=click.FloatRange(0.001, None),
    default=3600.0,
    show_default=True,
    help="Rate-limit window in seconds.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="KIND=RATE[:permanent]",
    help=f"Inject a fault (repeatable). Kinds: {', '.join(FAULT_KINDS)}.",
)
@click.option(
    "--fault-seed", type=int, default=0, show_default=True, help="Seed of the fault decisions."
)
@click.option(
    "--timeout-seconds",
    type=click.FloatRange(0, None),
    default=35.0,
    show_default=True,
    help="How long a `timeout` fault stays silent (past the client's timeout).",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    type=click.Choice(VARIANT_NAMES),
    help="Response variant (repeatable, combinable).",
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File whose first line is the key to accept [else env GPUCOST_API_KEY; "
    "else a generated key, written to a private file named on stderr].",
)
@click.option(
    "--forbidden-key-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File of keys (one a line) that authenticate but may not read: answered 403.",
)
def serve(
    host,
    port,
    clusters,
    seed,
    start,
    rate_limit,
    rate_window,
    faults,
    fault_seed,
    timeout_seconds,
    variants,
    api_key_file,
    forbidden_key_file,
):
    """Serve the simulated provider API until Ctrl-C; print its base URL first.

    The first line of stdout is the base URL (ending in /v1). Virtual time moves only through
    POST /_sim/clock ({"now": ISO} or {"advance_hours": n}); GET /_sim/stats shows counters.

    \b
    Example:
        GPUCOST_API_KEY=dev-key gpucost simulate serve --port 8080 --clusters 100 \\
            --rate-limit 1000 --fault error_500=0.05 --variant camel
    """
    from pipeline.simulator.server import RateLimit, Simulator

    try:
        fault_spec = FaultSpec.parse(faults, seed=fault_seed, timeout_seconds=timeout_seconds)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from None
    key, generated = _read_key(api_key_file)
    fleet = _make_fleet(clusters, seed, start)
    sim = Simulator(
        fleet,
        api_key=key,
        forbidden_keys=tuple(
            _read_key_lines(forbidden_key_file, "--forbidden-key-file")
            if forbidden_key_file
            else ()
        ),
        rate_limit=RateLimit(rate_limit, rate_window) if rate_limit else None,
        faults=fault_spec,
        variants=VariantSpec.parse(variants),
    )

    def ready(base_url: str) -> None:
        # stderr first: a script that reads the URL may stop the server right away
        if generated:
            click.echo(f"gpucost simulate: no key given; generated one in {generated}", err=True)
        click.echo(
            f"gpucost simulate: {clusters} clusters, seed {seed}, now "
            f"{fleet.now.isoformat()}; Ctrl-C to stop",
            err=True,
        )
        click.echo(base_url)
        sys.stdout.flush()

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        sim.serve_forever(host, port, ready=ready)
    except KeyboardInterrupt:
        stats = sim.stats()
        click.echo(f"gpucost simulate: stopped after {stats['requests_total']} requests", err=True)
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


@simulate.command()
@_fleet_options
@click.option("--at", "times", multiple=True, help="A snapshot time (ISO 8601; repeatable).")
@click.option(
    "--nights",
    type=click.IntRange(1, 400),
    default=None,
    help="Snapshots at START, START+1d, ... (NIGHTS of them), as the demo takes them.",
)
def truth(clusters, seed, start, times, nights):
    """Print the ground truth (JSON) of a fleet snapshotted at the given times.

    Computed from the fleet's own generative series by the definitions in DESIGN.md: daily
    idle waste, projection outcomes and recommendations, to check a pipeline against.

    \b
    Example:
        gpucost simulate truth --clusters 40 --seed 7 --nights 14 > truth.json
    """
    from pipeline.simulator.truth import ground_truth

    if not times and nights is None:
        raise click.UsageError("give --nights N or at least one --at TIME")
    begin = _parse_start(start)
    snapshot_times = [_parse_start(t) for t in times]
    if nights is not None:
        snapshot_times += [begin + timedelta(days=k) for k in range(nights)]
    fleet = _make_fleet(clusters, seed, start)
    result = ground_truth(fleet, sorted(set(snapshot_times)))
    click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
