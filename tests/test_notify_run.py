"""`gpucost run` calls notify last when channels are configured: a channel that is down never
fails the snapshot, build or report (the run exits 3 and the events wait for the next night)."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import duckdb
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.simulator import Fleet, FleetSpec, Simulator
from tests.notify_helpers import http_receiver
from tests.snapshot_helpers import API_KEY, START


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(tmp_path: Path, api_url: str, hook_url: str, key: str = API_KEY) -> tuple[int, str]:
    config = tmp_path / "gpucost.toml"
    config.write_text(
        f'[[notify.channels]]\nname = "finops"\nkind = "webhook"\nurl = "{hook_url}"\n'
        "timeout_seconds = 2.0\n"
    )
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--db",
            str(tmp_path / "gpucost.duckdb"),
            "--config",
            str(config),
            "--api-url",
            api_url,
            "--out",
            str(tmp_path / "out"),
        ],
        env={"GPUCOST_API_KEY": key},
    )
    return result.exit_code, result.output


def test_a_channel_down_never_fails_the_night_and_run_health_follows_the_runs(tmp_path):
    fleet = Fleet(FleetSpec(seed=7, clusters=6, start=START))
    with Simulator(fleet, api_key=API_KEY).run_in_thread(port=0) as url:
        code, output = _run(tmp_path, url, f"http://127.0.0.1:{_closed_port()}/hook")
        assert code == 3, output
        assert (tmp_path / "out" / "index.html").exists()
        with duckdb.connect(str(tmp_path / "gpucost.duckdb"), read_only=True) as con:
            runs = con.execute("select status from meta.runs").fetchall()
            pending = con.execute(
                "select count(*) from meta.notify_deliveries where status = 'pending'"
            ).fetchone()[0]
            opened = con.execute(
                "select count(*) from marts.recommendation_states where state = 'open' "
                "and monthly_savings >= 100"
            ).fetchone()[0]
        assert runs == [("complete",)]
        assert pending == opened > 0
        with http_receiver() as rx:
            fleet.set_clock(START + timedelta(days=1))
            code, output = _run(tmp_path, url, rx.url)
            assert code == 0, output
            assert len({e["id"] for e in rx.events()}) == len(rx.events()) >= pending
            assert "run_health" not in {e["type"] for e in rx.events()}
            # a night the provider refuses the key fails (exit 4), and says so
            fleet.set_clock(START + timedelta(days=2))
            code, output = _run(tmp_path, url, rx.url, key="wrong-key")
            assert code == 4, output
            (health,) = [e for e in rx.events() if e["type"] == "run_health"]
            assert (health["status"], health["previous_status"]) == ("failed", "complete")
            # and the next good night, that it recovered
            fleet.set_clock(START + timedelta(days=3))
            code, output = _run(tmp_path, url, rx.url)
    assert code == 0, output
    recovered = [e for e in rx.events() if e["type"] == "run_health"][-1]
    assert (recovered["status"], recovered["recovered"]) == ("complete", True)
