"""`gpucost snapshot` as a subprocess: kill -9 mid-run, the lock, and secrets never stored."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.simulator import CANARY, FaultSpec, Fleet, FleetSpec, Simulator
from pipeline.snapshot import run_snapshot
from pipeline.store import Store
from tests.snapshot_helpers import (
    API_KEY,
    START,
    duplicate_keys,
    fleet_buckets,
    make_config,
    stored_buckets,
)


def _gpucost(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "gpucost"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "pipeline", *args]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}
    env["GPUCOST_API_KEY"] = API_KEY
    return env


def _detail_requests(sim: Simulator) -> int:
    return sum(
        sum(c.values()) for p, c in sim.stats()["requests"].items() if p.startswith("/v1/clusters/")
    )


def test_kill_9_mid_run_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCOST_API_KEY", API_KEY)
    db = tmp_path / "g.duckdb"
    fleet = Fleet(FleetSpec(seed=3, clusters=200, start=START))
    # Every detail answers slowly, so the run is certainly in flight when it is killed.
    sim = Simulator(fleet, api_key=API_KEY, faults=FaultSpec(rates={"slow": 1.0}, slow_seconds=0.1))
    with sim.run_in_thread(port=0) as url:
        proc = subprocess.Popen(
            _gpucost("snapshot", "--db", str(db), "--api-url", url, "-v"),
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Kill right after the first batch is committed (the verbose log says so), while the
        # rest of the fleet is still being fetched.
        assert proc.stderr is not None
        for line in proc.stderr:
            if "committed a batch" in line:
                break
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        with Store.open(db, read_only=True) as store:
            (killed,) = store.con.execute(
                "select run_id, status, clusters_fetched from meta.runs"
            ).fetchall()
            kept = store.con.execute(
                "select count(*) from snap.cluster_snapshots where run_id = ?", [killed[0]]
            ).fetchall()[0][0]
        # never complete; the ledger's counter and the data committed together
        assert killed[1] == "running"
        assert killed[2] == kept >= 100
        result = run_snapshot(make_config(db, url))
    listed = {s["id"] for s in fleet.list_summaries()}
    assert (result.status, result.fetched) == ("complete", len(listed))
    with Store.open(db, read_only=True) as store:
        statuses = dict(store.con.execute("select run_id, status from meta.runs").fetchall())
        message = store.con.execute(
            "select message from meta.runs where run_id = ?", [killed[0]]
        ).fetchall()[0][0]
        assert statuses == {killed[0]: "failed", result.run_id: "complete"}
        assert message.startswith("interrupted")
        assert duplicate_keys(store.con) == []
        assert store.con.execute("select count(*) from snap.cluster_snapshots").fetchall() == [
            (len(listed),)
        ]
        for cid in sorted(listed):
            assert stored_buckets(store.con, cid) == fleet_buckets(fleet.detail(cid)), cid


def test_second_run_exits_5_at_once_and_touches_nothing(tmp_path):
    db = tmp_path / "g.duckdb"
    fleet = Fleet(FleetSpec(seed=3, clusters=5, start=START))
    sim = Simulator(fleet, api_key=API_KEY)
    with sim.run_in_thread(port=0) as url, Store.open(db) as holder:
        proc = subprocess.run(
            _gpucost("snapshot", "--db", str(db), "--api-url", url),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 5, proc.stderr
        assert "lock" in proc.stderr
        assert sim.stats()["requests_total"] == 0
        assert holder.con.execute("select count(*) from meta.runs").fetchall() == [(0,)]


def _all_text(store: Store) -> list[str]:
    """Every varchar and blob value of every table, raw bodies decompressed."""
    out: list[str] = []
    columns = store.con.execute(
        "select table_schema, table_name, column_name, data_type from information_schema.columns"
        " where table_schema in ('meta', 'snap', 'raw')"
        " and (data_type = 'VARCHAR' or data_type = 'BLOB')"
    ).fetchall()
    assert len(columns) > 40
    for schema, table, column, kind in columns:
        for (value,) in store.con.execute(
            f'select "{column}" from {schema}.{table} where "{column}" is not null'
        ).fetchall():
            if kind == "BLOB":
                raw = bytes(value)
                out.append(
                    (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode(
                        "utf-8", "replace"
                    )
                )
            else:
                out.append(value)
    return out


def test_canary_never_reaches_the_database_raw_store_logs_or_output(tmp_path):
    db = tmp_path / "g.duckdb"
    config = tmp_path / "gpucost.toml"
    config.write_text("[api]\ninclude_logs = true\n", encoding="utf-8")
    fleet = Fleet(FleetSpec(seed=7, clusters=40, start=START))
    served = json.dumps([fleet.detail(s["id"], include_logs=True) for s in fleet.list_summaries()])
    assert served.count(CANARY) > 10, "no canary planted: the test would prove nothing"
    # a permanently malformed response keeps its (redacted) body in meta.run_failures
    faults = FaultSpec(rates={"invalid_json": 0.2}, permanent=frozenset({"invalid_json"}))
    sim = Simulator(fleet, api_key=API_KEY, faults=faults)
    with sim.run_in_thread(port=0) as url:
        proc = subprocess.run(
            _gpucost(
                "snapshot",
                "--db",
                str(db),
                "--api-url",
                url,
                "--config",
                str(config),
                "--log-format",
                "json",
                "-v",
            ),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("snapshot ") and "partial" in proc.stdout
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert any(r.get("message") == "snapshot finished" and r.get("failed", 0) > 0 for r in records)
    assert CANARY not in proc.stdout and CANARY not in proc.stderr
    assert API_KEY not in proc.stdout and API_KEY not in proc.stderr
    with Store.open(db, read_only=True) as store:
        texts = _all_text(store)
        failures = store.con.execute(
            "select count(*) from meta.run_failures where raw_body is not null"
        ).fetchall()[0][0]
    assert failures > 0 and any("[REDACTED]" in t for t in texts)
    assert not [t for t in texts if CANARY in t or API_KEY in t]
    for path in tmp_path.iterdir():
        if path.name.startswith("g.duckdb"):
            data = path.read_bytes()
            assert CANARY.encode() not in data and API_KEY.encode() not in data, path.name
