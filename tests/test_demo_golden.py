"""The 14-night demo gives the same marts before and after a refactor.

`tests/golden/demo_marts.json` holds, for every mart, its row count and a digest of its rows
(sorted, every value as text, doubles to 12 significant digits so that a change in DuckDB's
summation order cannot move it). It was recorded on main before the ingestion redesign (issue 12)
began; a change that moves a number shows up here as the mart whose digest changed.

A change that is *meant* to move numbers records the new digests with
`GPUCOST_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_demo_golden.py` and says why in its commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from decimal import Decimal
from pathlib import Path

from pipeline import duck
from pipeline.config import Config, ReportSettings, StoreSettings
from pipeline.demo import run_demo

GOLDEN = Path(__file__).resolve().parent / "golden" / "demo_marts.json"
# Run bookkeeping, stamped with the wall clock: not a number the refactor may change.
_WALL_CLOCK_MARTS = frozenset({"build_models", "build_runs"})


def _text(value: object) -> str:
    if isinstance(value, float):
        return format(value, ".12g")
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def mart_digests(db: Path) -> dict[str, list[object]]:
    con = duck.connect(db, read_only=True)
    try:
        names = [
            row[0]
            for row in con.execute(
                "select table_name from information_schema.tables "
                "where table_schema = 'marts' order by 1"
            ).fetchall()
        ]
        digests: dict[str, list[object]] = {}
        for name in names:
            if name in _WALL_CLOCK_MARTS:
                continue
            rows = con.execute(f'select * from marts."{name}"').fetchall()
            lines = sorted(json.dumps([_text(v) for v in row]) for row in rows)
            digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
            digests[name] = [len(rows), digest]
        return digests
    finally:
        con.close()


def test_the_14_night_demo_gives_the_recorded_marts(tmp_path):
    config = Config(
        store=StoreSettings(db=str(tmp_path / "demo.duckdb")),
        report=ReportSettings(out_dir=str(tmp_path / "out")),
    )
    run_demo(config, nights=14)
    got = mart_digests(tmp_path / "demo.duckdb")
    if os.environ.get("GPUCOST_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))
    changed = sorted(name for name in set(want) | set(got) if want.get(name) != got.get(name))
    assert not changed, f"marts that changed: {changed}"
