"""A run killed at any point (`kill -9` included) never leaves anything that looks finished.

The snapshot's own kill test is in tests/test_snapshot.py; these kill `gpucost build` and
`gpucost report` at several points of their work and check that the marts and the report files
are either the last good ones or the new ones, never half of each, and that the next run works.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from pipeline.config import Config, ReportSettings, StoreSettings
from pipeline.demo import run_demo

MARTS = ("idle_waste_daily", "projection_drift", "recommendations", "fleet_daily", "clusters")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A database after 4 simulated nights of 10 clusters, built and reported."""
    folder = tmp_path_factory.mktemp("crash")
    config = Config(
        store=StoreSettings(db=str(folder / "demo.duckdb")),
        report=ReportSettings(out_dir=str(folder / "out")),
    )
    run_demo(config, nights=4, clusters=10, seed=7)
    return folder


def _marts(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {m: con.execute(f"select * from marts.{m} order by all").fetchall() for m in MARTS}
    finally:
        con.close()


def _run_and_kill(args: list[str], after: float) -> int | None:
    """Start `gpucost ARGS`, SIGKILL it after `after` seconds; its exit code if it ended first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    time.sleep(after)
    finished = proc.poll()
    if finished is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return finished


def _duration(args: list[str]) -> float:
    """The shortest of two uninterrupted runs of `gpucost ARGS`, in seconds."""
    times = []
    for _ in range(2):
        began = time.monotonic()
        subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, check=True)
        times.append(time.monotonic() - began)
    return min(times)


FRACTIONS = (0.3, 0.5, 0.7, 0.85)


def test_build_killed_at_any_point_keeps_the_last_good_marts(built):
    db = built / "demo.duckdb"
    args = ["build", "--full-refresh", "--db", str(db)]
    before = _marts(db)
    duration = _duration(args)
    killed = 0
    for fraction in FRACTIONS:
        finished = _run_and_kill(args, duration * fraction)
        killed += finished is None
        # Killed mid-build or not, the marts are the last good ones (a full refresh of the
        # same snapshots gives the same rows), and the next build works.
        assert finished in (None, 0)
        assert _marts(db) == before, fraction
        rebuilt = subprocess.run(
            [sys.executable, "-m", "pipeline", "build", "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert _marts(db) == before
    assert killed >= 2, "the kills all came too late to test anything"


def test_report_killed_at_any_point_leaves_whole_files(built):
    db = built / "demo.duckdb"
    out = built / "out"
    args = ["report", "--db", str(db), "--out", str(out)]
    previous = {p.name for p in out.iterdir()}
    duration = _duration(args)
    killed = 0
    for fraction in FRACTIONS:
        killed += _run_and_kill(args, duration * fraction) is None
        # Every file under a final name is whole (the previous one or a complete new one).
        for name in previous:
            data = (out / name).read_bytes()
            if name.endswith(".html"):
                assert data.rstrip().endswith(b"</html>"), (name, fraction)
            else:
                assert data.endswith(b"\n"), (name, fraction)
    assert killed >= 2, "the kills all came too late to test anything"
    redo = subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=300
    )
    assert redo.returncode == 0, redo.stderr
    assert {p.name for p in out.iterdir()} >= previous


def test_report_removes_temporary_files_a_killed_run_left_behind(built):
    out = built / "out"
    stale = out / ".index.html.abc123"
    fresh = out / ".focus.csv.def456"  # a report writing right now: kept
    foreign = out / ".notes.txt.1"  # not one of ours: kept
    for path in (stale, fresh, foreign):
        path.write_text("half a file", encoding="utf-8")
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    os.utime(foreign, (hours_ago, hours_ago))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "report",
            "--db",
            str(built / "demo.duckdb"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert fresh.exists() and foreign.exists()
