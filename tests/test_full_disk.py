"""A full disk, for real: `gpucost snapshot` onto a 3 MB tmpfs names the cause, and the run is
recorded failed, never left `running` (skipped where mounting a tmpfs is not permitted)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import writer
from pipeline.simulator import Fleet, FleetSpec, Simulator
from pipeline.store import Store
from tests.snapshot_helpers import API_KEY, START


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot run mount here")
    if done.returncode != 0:
        pytest.skip("mounting a small tmpfs is not permitted here (needs root)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=30)


def _gpucost(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "gpucost"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "pipeline", *args]


def test_a_full_disk_names_its_cause_in_the_cli_and_the_ledger(small_disk: Path) -> None:
    db = small_disk / "g.duckdb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}
    env["GPUCOST_API_KEY"] = API_KEY
    sim = Simulator(Fleet(FleetSpec(seed=3, clusters=60, start=START)), api_key=API_KEY)
    with sim.run_in_thread(port=0) as url:
        done = subprocess.run(
            _gpucost("snapshot", "--db", str(db), "--api-url", url),
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert done.returncode == 1, done.stderr
    assert "no space left on device" in done.stderr
    assert "cannot rollback" not in done.stderr
    with Store.open(db, read_only=True) as store:
        runs = store.con.execute("select status, message from meta.runs").fetchall()
    assert len(runs) == 1
    status, message = runs[0]
    assert status == "failed"
    assert "no space left on device" in message and "cannot rollback" not in message


def test_a_write_failing_for_lack_of_space_fails_the_run_with_its_cause(tmp_path, monkeypatch):
    """The same without root: DuckDB's own I/O error injected at the write layer."""
    import duckdb

    from pipeline.snapshot import run_snapshot
    from pipeline.store import StoreWriteError
    from tests.snapshot_helpers import make_config

    def full(con, rows):
        raise duckdb.IOException('Could not write file "g.duckdb.wal": No space left on device')

    monkeypatch.setattr(writer, "_write_buckets", full)
    monkeypatch.setenv("GPUCOST_API_KEY", API_KEY)
    db = tmp_path / "g.duckdb"
    sim = Simulator(Fleet(FleetSpec(seed=3, clusters=5, start=START)), api_key=API_KEY)
    with sim.run_in_thread(port=0) as url, pytest.raises(StoreWriteError) as caught:
        run_snapshot(make_config(db, url))
    assert "no space left on device" in str(caught.value)
    assert caught.value.exit_code == 1
    with Store.open(db, read_only=True) as store:
        ((status, message),) = store.con.execute("select status, message from meta.runs").fetchall()
    assert status == "failed" and "no space left on device" in message
