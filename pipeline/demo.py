"""The one-command demo: the whole pipeline against the built-in simulator, in simulated time.

Starts the simulator in-process on a free loopback port, takes one snapshot per simulated night
(the fleet's virtual clock advances a day between them) and builds the marts after each, as the
nightly cron job would; then renders the report. Everything goes over real HTTP, exactly as
against a real provider.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from pipeline import duck
from pipeline.config import Config
from pipeline.errors import ConfigError, GpucostError
from pipeline.log import get_logger

DEMO_START = datetime(2026, 11, 13, 3, 0, tzinfo=UTC)

log = get_logger("demo")


@dataclass
class DemoResult:
    """What the demo made: the report, the CSVs and the database a user can open."""

    db: Path
    index_html: Path
    files: list[Path]
    nights: int
    clusters: int
    seconds: float
    run_summaries: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What the CLI prints: the outputs, a query that works, and last the report's path."""
        out = [f"  {path}" for path in self.files if path != self.index_html]
        out.append(
            f"demo: {self.nights} simulated nights of {self.clusters} clusters in "
            f"{self.seconds:.1f} s; database {self.db}"
        )
        out.append(
            f"explore the data with: {gpucost_program()} query --db {shlex.quote(str(self.db))} "
            '"select kind, cluster_id, monthly_savings, currency from marts.recommendations '
            'order by monthly_savings desc"'
        )
        out.append(str(self.index_html))
        return out


def gpucost_program() -> str:
    """How the user can call gpucost: `gpucost` when it is on PATH, else its full path.

    `make install` puts it in .venv/bin, which is rarely on PATH: a hint naming plain `gpucost`
    would fail there.
    """
    here = Path(sys.executable).parent / "gpucost"
    found = shutil.which("gpucost")
    if found and (not here.exists() or Path(found).resolve() == here.resolve()):
        return "gpucost"
    return shlex.quote(str(here)) if here.exists() else "gpucost"


def _is_demo_database(path: Path) -> bool:
    """True when every run recorded in `path` read a loopback simulator (safe to replace)."""
    from pipeline.config import is_loopback_url

    try:
        con = duck.connect(path, read_only=True)
    except (duckdb.Error, GpucostError):
        return False
    try:
        urls = [row[0] for row in con.execute("select api_base_url from meta.runs").fetchall()]
    except duckdb.Error:
        return False
    finally:
        con.close()
    return all(url and is_loopback_url(url) for url in urls)


def _fresh_database(path: Path) -> None:
    """Remove a previous demo database (never a database that read a real provider)."""
    if not path.exists():
        return
    if not _is_demo_database(path):
        raise ConfigError(
            f"{path} exists and is not a demo database; pass --db with a new file for the demo"
        )
    for stale in [path, Path(f"{path}.wal"), Path(f"{path}.raw")]:
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()


def run_demo(
    config: Config,
    *,
    nights: int = 14,
    clusters: int = 40,
    seed: int = 7,
    progress: bool = False,
    start: datetime = DEMO_START,
) -> DemoResult:
    """Run `nights` simulated nightly snapshots of a `clusters`-strong fleet, build, report."""
    from pipeline.models import build_models
    from pipeline.report import render_report
    from pipeline.simulator.fleet import Fleet, FleetSpec
    from pipeline.simulator.server import Simulator
    from pipeline.snapshot import run_snapshot

    began = time.monotonic()
    db = Path(config.store.db)
    _fresh_database(db)
    fleet = Fleet(FleetSpec(seed=seed, clusters=clusters, start=start))
    api_key = secrets.token_urlsafe(24)
    summaries: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gpucost-demo-") as tmp:
        key_file = Path(tmp) / "api-key"
        key_file.touch(mode=0o600)
        key_file.write_text(api_key, encoding="utf-8")
        sim = Simulator(fleet, api_key=api_key)
        with sim.run_in_thread(port=0) as base_url:
            night_config = dataclasses.replace(
                config,
                api=dataclasses.replace(config.api, url=base_url, api_key_file=str(key_file)),
            )
            # The demo's key lives in a file; a GPUCOST_API_KEY from the user's shell (meant
            # for a real provider) must not win over it.
            saved_key = os.environ.pop("GPUCOST_API_KEY", None)
            try:
                for night in range(nights):
                    fleet.set_clock(start + timedelta(days=night))
                    snap = run_snapshot(night_config, progress=progress)
                    built = build_models(night_config)
                    line = (
                        f"night {night + 1:2d}/{nights} {fleet.now:%Y-%m-%d %H:%M}Z: "
                        f"{snap.fetched} clusters stored, {snap.gone} gone, {snap.failed} "
                        f"failed ({snap.status}); {len(built.models_built)} models built, "
                        f"{built.tests_passed} data tests passed"
                    )
                    summaries.append(line)
                    log.info(line)
            finally:
                if saved_key is not None:
                    os.environ["GPUCOST_API_KEY"] = saved_key
    rendered = render_report(config, Path(config.report.out_dir))
    return DemoResult(
        db=db.resolve(),
        index_html=Path(rendered.index_html).resolve(),
        files=[Path(p).resolve() for p in rendered.files],
        nights=nights,
        clusters=clusters,
        seconds=time.monotonic() - began,
        run_summaries=summaries,
    )
