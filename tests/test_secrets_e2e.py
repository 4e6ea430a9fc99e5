"""The configured API key is a secret everywhere gpucost writes or prints, even when a hostile
provider echoes it: stderr, stdout, error messages, meta.runs, meta.run_failures, snapshot
columns and the raw store. Over real HTTP, `gpucost` as a subprocess."""

from __future__ import annotations

import contextlib
import gzip
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb

from pipeline.redact import REDACTED
from tests.hostile_server import example_detail, example_list, serve

# Nothing in this key looks like a secret to a pattern: only knowing it can redact it.
KEY = "Zq81kLm3Xv72pT0bW4"


def _gpucost(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "gpucost"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "pipeline", *args]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}
    return {**env, "GPUCOST_API_KEY": KEY, **extra}


def _every_stored_text(db: Path) -> str:
    """Every value of every table, as text, with the raw store's gzip bodies opened."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        parts: list[str] = []
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() where not internal"
        ).fetchall()
        for schema, table in tables:
            for row in con.execute(f'select * from "{schema}"."{table}"').fetchall():
                for value in row:
                    if isinstance(value, bytes):
                        with contextlib.suppress(OSError):
                            value = gzip.decompress(value)
                        parts.append(value.decode("utf-8", "replace"))
                    else:
                        parts.append(str(value))
        return "\n".join(parts)
    finally:
        con.close()


def _files_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def _echoing_provider(path: str, query: dict[str, list[str]], auth: str) -> tuple[int, Any]:
    if auth != f"Bearer {KEY}":
        return 401, {"success": False, "error": "UNAUTHORIZED", "message": "no"}
    if path == "/clusters":
        return 200, example_list(["c-echo", "c-400", "c-broken", "c-plain"])
    if path == "/clusters/c-echo":
        doc = example_detail("c-echo", description=f"made with key {KEY} for you", name=KEY)
        doc["data"]["status_details"]["message"] = f"last login used {KEY}"
        doc["data"]["tags"] = {KEY: "as a key", "plain": [f"x{KEY}x"]}
        return 200, doc
    if path == "/clusters/c-400":
        return 400, {"success": False, "error": "BAD_REQUEST", "message": f"bad key {KEY}"}
    if path == "/clusters/c-broken":
        return 200, (
            b'{"success": true, "data": {"id": "c-broken", "description": "key='
            + KEY.encode()
            + b" "
            + KEY.encode()
            + b'", "nam'
        )
    if path == "/clusters/c-plain":
        return 200, example_detail("c-plain")
    return 404, {"success": False, "error": "RESOURCE_NOT_FOUND", "message": path}


def test_a_key_the_provider_echoes_is_never_printed_or_stored(tmp_path: Path) -> None:
    db = tmp_path / "g.duckdb"
    config = tmp_path / "gpucost.toml"
    config.write_text("[api]\nretry_max_seconds = 1\n", encoding="utf-8")
    with serve(_echoing_provider) as url:
        proc = subprocess.run(
            _gpucost("snapshot", "--db", str(db), "--config", str(config), "--api-url", url, "-v"),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 3, proc.stderr  # partial: two clusters failed
        json_log = subprocess.run(
            _gpucost(
                "snapshot",
                "--db",
                str(db),
                "--config",
                str(config),
                "--api-url",
                url,
                "--log-format",
                "json",
                "-v",
            ),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
    for out in (proc.stdout, proc.stderr, json_log.stdout, json_log.stderr):
        assert KEY not in out
    stored = _every_stored_text(db)
    assert KEY not in stored
    # ... and the places it was echoed were written, redacted (the test would pass vacuously
    # if nothing had been stored).
    assert f"made with key {REDACTED} for you" in stored
    assert "bad key [REDACTED]" in stored
    assert "c-broken" in stored
    assert KEY.encode() not in _files_bytes(tmp_path)


def test_a_401_that_echoes_the_key_prints_and_stores_it_redacted(tmp_path: Path) -> None:
    db = tmp_path / "g.duckdb"

    def refuse(path: str, query: dict[str, list[str]], auth: str) -> tuple[int, Any]:
        message = f"key {auth.removeprefix('Bearer ')} is revoked"
        return 401, {"success": False, "error": "UNAUTHORIZED", "message": message}

    with serve(refuse) as url:
        proc = subprocess.run(
            _gpucost("snapshot", "--db", str(db), "--api-url", url),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 4, proc.stderr
    assert "is revoked" in proc.stderr  # the provider's words are kept, its echo is not
    assert KEY not in proc.stderr and KEY not in proc.stdout
    assert KEY not in _every_stored_text(db)
    assert KEY.encode() not in _files_bytes(tmp_path)
