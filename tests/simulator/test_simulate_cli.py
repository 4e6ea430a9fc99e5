"""`gpucost simulate serve` and `gpucost simulate truth` as a user runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from pipeline.simulator.cli import simulate
from pipeline.simulator.fleet import Fleet, FleetSpec
from pipeline.simulator.truth import ground_truth

from .conftest import START

KEY = "cli-test-key-9876"


class _Served:
    """A `gpucost simulate serve` subprocess: its base URL (first stdout line) and stderr."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "simulate", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(timeout=30)
        assert line and line[0], f"no URL printed; stderr: {self._stop_and_read()}"
        self.url = line[0].strip()

    def _stop_and_read(self) -> str:
        self.proc.kill()
        return self.proc.communicate(timeout=10)[1]

    def stop(self) -> tuple[int, str]:
        """SIGTERM, as a service manager stops it; (exit code, stderr)."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=15)
        return self.proc.returncode, err


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GPUCOST_API_KEY"}
    return {**env, **extra}


def test_serve_prints_its_url_first_and_answers_with_the_key_from_the_environment():
    served = _Served(["--clusters", "6", "--seed", "3"], _env(GPUCOST_API_KEY=KEY))
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", served.url)
        auth = {"Authorization": f"Bearer {KEY}"}
        listing = httpx.get(f"{served.url}/clusters", headers=auth, params={"limit": 100})
        assert listing.status_code == 200
        expected = Fleet(FleetSpec(seed=3, clusters=6, start=START)).list_summaries()
        by_id = {item["id"]: item for item in listing.json()["data"]["clusters"]}
        assert by_id == {item["id"]: item for item in json.loads(json.dumps(expected))}
        assert httpx.get(f"{served.url}/clusters").status_code == 401
        admin = served.url.removesuffix("/v1") + "/_sim/clock"
        moved = httpx.post(admin, headers=auth, json={"advance_hours": 48})
        assert moved.json() == {"now": "2026-11-15T03:00:00Z"}
    finally:
        code, err = served.stop()
    assert code == 0
    assert KEY not in err


def test_serve_applies_key_file_rate_limit_faults_and_variants(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    served = _Served(
        [
            "--clusters",
            "4",
            "--api-key-file",
            str(key_file),
            "--rate-limit",
            "50",
            "--fault",
            "error_500=1.0",
            "--variant",
            "camel",
            "--variant",
            "bare",
        ],
        _env(GPUCOST_API_KEY="some-other-key"),
    )
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as http:
            listing = http.get(f"{served.url}/clusters")
            assert listing.status_code == 500  # the list page's first attempt
            listing = http.get(f"{served.url}/clusters")
            assert listing.headers["X-RateLimit-Limit"] == "50"
            assert isinstance(listing.json(), list) and "gpuType" in listing.json()[0]
    finally:
        assert served.stop()[0] == 0


def test_serve_answers_403_to_a_forbidden_key_and_gpucost_snapshot_exits_4(tmp_path):
    forbidden = tmp_path / "forbidden"
    forbidden.write_text("read-forbidden-key\n", encoding="utf-8")
    served = _Served(
        ["--clusters", "3", "--forbidden-key-file", str(forbidden)], _env(GPUCOST_API_KEY=KEY)
    )
    try:
        with httpx.Client(headers={"Authorization": "Bearer read-forbidden-key"}) as http:
            refused = http.get(f"{served.url}/clusters")
        assert refused.status_code == 403
        assert refused.json()["error"] == "FORBIDDEN"
        snapshot = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "snapshot",
                "--api-url",
                served.url,
                "--db",
                str(tmp_path / "g.duckdb"),
            ],
            env=_env(GPUCOST_API_KEY="read-forbidden-key"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert snapshot.returncode == 4, snapshot.stderr
        assert "read-forbidden-key" not in snapshot.stderr + snapshot.stdout
    finally:
        assert served.stop()[0] == 0


def test_serve_without_a_key_generates_one_in_a_private_file():
    served = _Served(["--clusters", "2"], _env())
    try:
        code, err = served.stop()
    except Exception:
        served.proc.kill()
        raise
    match = re.search(r"generated one in (\S+)", err)
    assert match, err
    path = Path(match.group(1))
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(path.read_text(encoding="utf-8").strip()) >= 24
    finally:
        path.unlink()
        path.parent.rmdir()
    assert code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--fault", "teapot=0.1"],
        ["--fault", "error_500=3"],
        ["--variant", "yaml"],
        ["--start", "yesterday"],
    ],
)
def test_serve_rejects_bad_options_as_usage_errors(args):
    result = CliRunner().invoke(simulate, ["serve", *args], env={"GPUCOST_API_KEY": KEY})
    assert result.exit_code == 2, result.output


def test_truth_prints_the_ground_truth_as_json():
    result = CliRunner().invoke(
        simulate, ["truth", "--clusters", "5", "--seed", "7", "--nights", "3"]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    fleet = Fleet(FleetSpec(seed=7, clusters=5, start=START))
    times = [START + timedelta(days=k) for k in range(3)]
    assert printed == json.loads(json.dumps(ground_truth(fleet, times).to_dict()))
    assert printed["daily"]


def test_truth_at_explicit_times_equals_the_same_nights():
    at = ["--at", "2026-11-13T03:00:00Z", "--at", "2026-11-14T03:00:00+00:00"]
    by_at = CliRunner().invoke(simulate, ["truth", "--clusters", "3", *at])
    by_nights = CliRunner().invoke(simulate, ["truth", "--clusters", "3", "--nights", "2"])
    assert by_at.exit_code == 0 and by_at.output == by_nights.output
    other = CliRunner().invoke(
        simulate,
        [
            "truth",
            "--clusters",
            "3",
            "--nights",
            "2",
            "--start",
            datetime(2026, 11, 20, 3, tzinfo=UTC).isoformat(),
        ],
    )
    assert other.output != by_nights.output


def test_truth_needs_times():
    result = CliRunner().invoke(simulate, ["truth", "--clusters", "3"])
    assert result.exit_code == 2 and "--nights" in result.output
