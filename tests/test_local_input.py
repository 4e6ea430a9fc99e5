"""Wrong local input and configuration is a clear error with the right exit code, never a
wrong number, a download, or an "unexpected error": thresholds, the key file, --db, --out, the
lock. `gpucost` runs as a subprocess, against the simulator over real HTTP where it calls one."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipeline import duck
from pipeline.config import Thresholds, load_config
from pipeline.errors import ConfigError
from pipeline.simulator import Fleet, FleetSpec, Simulator
from pipeline.store import Store
from tests.report_fixtures import create_fixture_db
from tests.snapshot_helpers import START

KEY = "local-input-key-5501"


def _gpucost(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "gpucost"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "pipeline", *args]


def _run(*args: str, key: str | None = KEY, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}
    if key is not None:
        env["GPUCOST_API_KEY"] = key
    return subprocess.run(
        _gpucost(*args), env=env, capture_output=True, text=True, timeout=240, cwd=cwd
    )


# -- thresholds ----------------------------------------------------------------------------

THRESHOLDS = [f.name for f in dataclasses.fields(Thresholds)]
PERCENTAGES = [
    "idle_threshold_pct",
    "stop_idle_share_pct",
    "downsize_percentile",
    "drift_min_coverage_pct",
]


def _toml(tmp_path: Path, key: str, value: str) -> Path:
    path = tmp_path / "gpucost.toml"
    path.write_text(f"[thresholds]\n{key} = {value}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "-0.5"])
@pytest.mark.parametrize("key", THRESHOLDS)
def test_every_threshold_refuses_nan_infinity_and_negatives_naming_the_key(
    tmp_path: Path, key: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=f"thresholds.{key}"):
        load_config(_toml(tmp_path, key, value))


@pytest.mark.parametrize("key", PERCENTAGES)
def test_a_percentage_above_100_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=f"thresholds.{key} must be at most 100"):
        load_config(_toml(tmp_path, key, "100.5"))


def test_every_default_threshold_is_accepted(tmp_path: Path) -> None:
    lines = [
        f"{f.name} = {getattr(Thresholds(), f.name)!r}" for f in dataclasses.fields(Thresholds)
    ]
    path = tmp_path / "gpucost.toml"
    path.write_text("[thresholds]\n" + "\n".join(lines) + "\n", encoding="utf-8")
    loaded = load_config(path).thresholds
    assert loaded == Thresholds()
    assert all(math.isfinite(getattr(loaded, f.name)) for f in dataclasses.fields(Thresholds))


def test_build_with_a_nan_threshold_is_exit_2_naming_the_key(tmp_path: Path) -> None:
    proc = _run(
        "build",
        "--db",
        str(tmp_path / "g.duckdb"),
        "--config",
        str(_toml(tmp_path, "idle_threshold_pct", "nan")),
    )
    assert proc.returncode == 2, proc.stderr
    assert "thresholds.idle_threshold_pct must be a finite number" in proc.stderr
    assert "unexpected" not in proc.stderr


# -- the key file --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulator_url():
    fleet = Fleet(FleetSpec(seed=5, clusters=3, start=START))
    with Simulator(fleet, api_key=KEY).run_in_thread(port=0) as url:
        yield url


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o640, True), (0o600, False)])
def test_a_key_file_others_can_read_is_used_with_a_warning(
    tmp_path: Path, simulator_url: str, mode: int, warned: bool
) -> None:
    key_file = tmp_path / "api_key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    key_file.chmod(mode)
    proc = _run(
        "snapshot",
        "--db",
        str(tmp_path / "g.duckdb"),
        "--api-url",
        simulator_url,
        "--api-key-file",
        str(key_file),
        key=None,
    )
    assert proc.returncode == 0, proc.stderr
    assert ("accessible by others" in proc.stderr) == warned
    if warned:
        assert f"chmod 600 {key_file}" in proc.stderr
    assert KEY not in proc.stderr + proc.stdout


def test_a_key_file_that_is_not_utf8_is_exit_2(tmp_path: Path, simulator_url: str) -> None:
    key_file = tmp_path / "api_key"
    key_file.write_bytes(b"\xff\xfe\x00k\x00e\x00y\x00")
    key_file.chmod(0o600)
    proc = _run(
        "snapshot",
        "--db",
        str(tmp_path / "g.duckdb"),
        "--api-url",
        simulator_url,
        "--api-key-file",
        str(key_file),
        key=None,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"api key file {key_file} is not UTF-8 text" in proc.stderr


# -- --db that is not a DuckDB database --------------------------------------------------


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    import sqlite3

    path = tmp_path / "finance.sqlite"
    con = sqlite3.connect(path)
    con.execute("create table t (a)")
    con.commit()
    con.close()
    return path


@pytest.mark.parametrize("command", ["snapshot", "build", "report"])
def test_a_sqlite_db_is_exit_2_naming_the_file_and_loads_no_extension(
    tmp_path: Path, sqlite_db: Path, simulator_url: str, command: str
) -> None:
    args = ["--api-url", simulator_url] if command == "snapshot" else []
    if command == "report":
        args = ["--out", str(tmp_path / "out")]
    home = tmp_path / "home"  # DuckDB's extension folder: must stay empty
    home.mkdir()
    env_home = {"HOME": str(home)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}
    proc = subprocess.run(
        _gpucost(command, "--db", str(sqlite_db), *args),
        env={**env, **env_home, "GPUCOST_API_KEY": KEY},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"database {sqlite_db} is a SQLite file" in proc.stderr
    assert not list(home.rglob("*.duckdb_extension"))


def test_a_file_that_is_no_database_is_exit_2(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all\n", encoding="utf-8")
    proc = _run("build", "--db", str(text))
    assert proc.returncode == 2, proc.stderr
    assert f"database {text} is not a DuckDB database" in proc.stderr


def test_every_connection_gpucost_opens_never_installs_or_loads_extensions(tmp_path: Path) -> None:
    settings = (
        "select current_setting('autoinstall_known_extensions'),"
        " current_setting('autoload_known_extensions')"
    )
    con = duck.connect(tmp_path / "a.duckdb")
    assert con.execute(settings).fetchall() == [(False, False)]
    con.close()
    with Store.open(tmp_path / "b.duckdb") as store:
        assert store.con.execute(settings).fetchall() == [(False, False)]


def test_no_module_opens_duckdb_but_through_the_helper() -> None:
    # One helper for every connection: a new duckdb.connect elsewhere would skip its settings.
    root = Path(__file__).resolve().parent.parent / "pipeline"
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "duck.py" and "duckdb.connect(" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


# -- the lock ------------------------------------------------------------------------------


def test_a_report_while_a_snapshot_holds_the_database_is_exit_5(tmp_path: Path) -> None:
    db = create_fixture_db(tmp_path / "g.duckdb")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pipeline.store import Store; s = Store.open(sys.argv[1]);"
            " print('ready', flush=True); sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        proc = _run("report", "--db", str(db), "--out", str(tmp_path / "out"))
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()
    assert proc.returncode == 5, proc.stderr
    assert "in use by another gpucost run" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_lock_is_free_again_after_the_holder_ends(tmp_path: Path) -> None:
    db = create_fixture_db(tmp_path / "g.duckdb")
    con = duckdb.connect(str(db))
    con.close()
    proc = _run("report", "--db", str(db), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr


def test_docs_say_what_gpucost_rejects_with_an_exit_code_per_row() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "rejects.md").read_text("utf-8")
    assert text.startswith("# What gpucost rejects, and why\n")
    section = text.split("## From local input and configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0] == "| input | what happens | exit code |"
    assert len(rows) > 10
    for row in rows[1:]:
        exit_cell = row.rstrip(" |").rsplit("|", 1)[1].strip()
        assert re.fullmatch(r"[0-5]( \(or [0-5] .*\))?|as the run", exit_cell), row
