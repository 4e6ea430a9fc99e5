"""marts.spend_anomalies against a hand-computed case: the mart's SQL run over hand-written
`intermediate.cluster_daily` rows (the day's cost and billed hours of each cluster), with the
default thresholds (a baseline of 14 days, money floor 25, 3 x MAD, 20 %).

Project p holds clusters a and b, 21 complete days D0..D20:

    a: 100 a day, 300 on D20 (started a second shift)
    b: 50 a day D0..D12, 40 a day D13..D19, 44 on D20 (the same hours and GPUs every day)

The project's (and the fleet's) cost: 150 a day D0..D12, 140 D13..D19, 344 on D20.
- D20: baseline = median of D6..D19 = median(7 x 150, 7 x 140) = 145; MAD = median(|150-145| x 7,
  |140-145| x 7) = 5; 344 - 145 = 199 >= 25, > 3 x 5 and 137 % >= 20 %: flagged. a moved
  300 - 100 = +200 against its own baseline; b moved 44 - median(7 x 50, 7 x 40) = 44 - 45 = -1,
  against the project's move: cluster_ids = "a", and a's cause is its own change from D19
  (billed hours 24 -> 48: started).
  A baseline of 13 days (D7..D19) would give b 44 - median(6 x 50, 7 x 40) = 44 - 40 = +4, and
  list it: the case fails a mart that reads one day too few of a cluster's baseline.
- D14..D19: baseline = 150 (more than half the 14 days before are 150-days), 140 is 10 below:
  under the money floor of 25, not flagged.
- D0..D13: no full baseline (fewer than 14 days before): not judged.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import duckdb
import pytest

from pipeline.config import Thresholds
from pipeline.models import discover_models, set_threshold_variables

D0 = date(2026, 10, 1)
CURRENCY = "USD"


def _cost(cluster: str, n: int) -> Decimal:
    if cluster == "a":
        return Decimal(300 if n == 20 else 100)
    return Decimal(50 if n <= 12 else 40 if n <= 19 else 44)


def _hours(cluster: str, n: int) -> Decimal:
    # a runs a second shift on D20; b bills the same hours every day (its cost is usage)
    return Decimal(48 if cluster == "a" and n == 20 else 24)


@pytest.fixture(scope="module")
def con():
    models = {m.relation: m for m in discover_models()}
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    set_threshold_variables(con, Thresholds())
    con.execute("create schema intermediate")
    con.execute(
        "create table intermediate.cluster_daily (cluster_id varchar, day date, "
        "currency varchar, cost decimal(38, 6), billed_hours decimal(38, 6), "
        "billed_gpus bigint, cost_per_gpu_hour decimal(38, 12), "
        "first_bucket_at timestamptz, last_bucket_end_at timestamptz)"
    )
    rows = []
    for cluster in ("a", "b"):
        for n in range(21):
            day = D0 + timedelta(days=n)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            cost, hours = _cost(cluster, n), _hours(cluster, n)
            rows.append(
                [cluster, day, CURRENCY, cost, hours, 8, cost / (8 * hours), start,
                 start + timedelta(days=1)]
            )  # fmt: skip
    con.executemany(
        "insert into intermediate.cluster_daily values (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
    )
    con.execute(
        "create table intermediate.cluster_projects as "
        "select * from (values ('a', 'p'), ('b', 'p')) as t(cluster_id, project_id)"
    )
    changes = models["intermediate.cluster_day_changes"]
    con.execute(f"create view intermediate.cluster_day_changes as {changes.sql}")
    yield con, models["marts.spend_anomalies"].sql
    con.close()


def _anomalies(con) -> dict[tuple[str, date], dict]:
    connection, sql = con
    cursor = connection.execute(f"select * from ({sql}) as mart order by scope, day")
    names = [c[0] for c in cursor.description]
    found = {}
    for values in cursor.fetchall():
        row = dict(zip(names, values, strict=True))
        found[(row["scope"], row["day"])] = row
    return found


def test_the_flagged_day_of_the_project_and_the_fleet_with_its_clusters_and_cause(con):
    found = _anomalies(con)
    d20 = D0 + timedelta(days=20)
    assert set(found) == {("fleet", d20), ("project", d20)}
    for scope in ("fleet", "project"):
        row = found[(scope, d20)]
        assert row["scope_id"] == ("p" if scope == "project" else None)
        assert (row["cost"], row["baseline"], row["mad"]) == (344, 145, 5)
        assert row["deviation_pct"] == pytest.approx(199 / 145 * 100)
        assert row["cluster_ids"] == "a"
        assert row["cause"] == "started"
