"""What cron sees: quiet runs without a terminal, one summary line, JSON logs that parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.simulator import Fleet, FleetSpec, Simulator
from tests.snapshot_helpers import API_KEY, START


@pytest.fixture()
def provider():
    fleet = Fleet(FleetSpec(seed=5, clusters=6, start=START))
    with Simulator(fleet, api_key=API_KEY).run_in_thread(port=0) as url:
        yield url


def _gpucost(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}
    env["GPUCOST_API_KEY"] = API_KEY
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,  # no TTY, as under cron
        text=True,
        timeout=300,
    )


def test_snapshot_under_cron_says_one_summary_line_and_nothing_else(tmp_path, provider):
    result = _gpucost(tmp_path, "snapshot", "--api-url", provider, "--db", "g.duckdb")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    (line,) = result.stdout.splitlines()
    assert line.startswith("snapshot ") and " complete: 6 listed, 6 stored" in line


def test_run_with_json_logs_writes_only_json_to_stderr_and_the_report_path_to_stdout(
    tmp_path, provider
):
    result = _gpucost(
        tmp_path,
        "run",
        "--api-url",
        provider,
        "--db",
        "g.duckdb",
        "--out",
        "out",
        "--log-format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["out/index.html"]
    records = [json.loads(line) for line in result.stderr.splitlines()]
    messages = [r["message"] for r in records]
    assert any(m.startswith("snapshot ") for m in messages)
    assert any(m.startswith("build ") for m in messages)
    assert all(r["level"] in {"info", "warning", "error"} for r in records)
    assert API_KEY not in result.stderr + result.stdout
