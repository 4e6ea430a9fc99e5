"""A notify killed between a channel accepting a message and the ledger recording it loses no
event: the next notify sends it again (at-least-once; receivers dedupe by event id)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import duckdb

from pipeline.config import load_config
from pipeline.notify import run_notify
from tests.models_fixtures import HOUR, T0, D, FixtureDB, hours
from tests.notify_helpers import http_receiver

KILLED_AFTER_SEND = textwrap.dedent(
    """
    import os, signal, sys
    from pipeline import notify
    from pipeline.config import load_config

    # the moment after the receiver answered 200 and before the ledger write
    notify._after_send = lambda: os.kill(os.getpid(), signal.SIGKILL)
    notify.run_notify(load_config(sys.argv[1], env={}))
    """
)


def test_kill_between_send_and_ledger_write_resends_the_event_next_time(tmp_path):
    db_path = tmp_path / "gpucost.duckdb"
    db = FixtureDB(db_path)
    db.snapshot("c1", T0)
    db.buckets("c1", hours(T0 - 168 * HOUR, 168), gpus=[(1.0, 8.0)] * 2, cost=D("6.90"))
    db.build()
    db.close()
    with http_receiver() as rx:
        config_file = tmp_path / "gpucost.toml"
        config_file.write_text(
            f'[store]\ndb = "{db_path}"\n[[notify.channels]]\nname = "finops"\n'
            f'kind = "webhook"\nurl = "{rx.url}"\n'
        )
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_AFTER_SEND, str(config_file)],
            capture_output=True,
            timeout=240,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
        assert len(rx.received) == 1  # the receiver has it ...
        with duckdb.connect(str(db_path), read_only=True) as con:
            statuses = con.execute("select status from meta.notify_deliveries").fetchall()
        assert statuses == [("pending",), ("pending",)]  # ... the ledger does not know
        result = run_notify(load_config(config_file, env={}))
    assert (result.new_events, result.sent, result.exit_code) == (0, 2, 0)
    first, second = (post.json()["events"] for post in rx.received)
    assert [e["id"] for e in first] == [e["id"] for e in second]  # same ids: dedupe by id
    assert len({e["id"] for post in rx.received for e in post.json()["events"]}) == 2
