"""The runs ledger: a run is `running` until finished; the next run marks the interrupted ones."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from pipeline.connection import StoreWriteError
from pipeline.ledger import FINISHED_STATUSES, INTERRUPTED_MESSAGE, new_run_id
from pipeline.normalize import normalize_detail
from pipeline.store import LoadBatch, Store
from tests.store_fixtures import detail


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "g.duckdb")
    yield s
    s.close()


def test_a_started_run_is_running_with_zero_counters(store):
    run_id = store.start_run("http://127.0.0.1/v1")
    run = store.run(run_id)
    assert run["status"] == "running" and run["api_base_url"] == "http://127.0.0.1/v1"
    assert run["finished_at"] is None and run["message"] is None
    assert [run[c] for c in ("clusters_listed", "clusters_fetched", "requests_made")] == [0, 0, 0]
    store.set_listed(run_id, 7)
    assert store.run(run_id)["clusters_listed"] == 7


def test_a_run_not_in_the_ledger_is_a_key_error(store):
    with pytest.raises(KeyError):
        store.run("20261120T030000Z-000000")


def test_run_ids_sort_by_their_start_time():
    t = datetime(2026, 11, 20, 3, tzinfo=UTC)
    earlier, later = new_run_id(t), new_run_id(t + timedelta(seconds=1))
    assert re.fullmatch(r"20261120T030000Z-[0-9a-f]{6}", earlier)
    assert sorted([later, earlier]) == [earlier, later]


def test_only_complete_partial_and_failed_finish_a_run(store):
    assert FINISHED_STATUSES == ("complete", "partial", "failed")
    run_id = store.start_run(None)
    for wrong in ("running", "completed", "interrupted"):
        with pytest.raises(ValueError, match="unknown run status"):
            store.finish_run(run_id, wrong)  # type: ignore[arg-type]
    assert store.run(run_id)["status"] == "running"
    store.finish_run(run_id, "partial", message="2 clusters failed", requests_made=12, retries=2)
    run = store.run(run_id)
    assert (run["status"], run["message"], run["requests_made"], run["retries"]) == (
        "partial",
        "2 clusters failed",
        12,
        2,
    )
    assert run["finished_at"] is not None


def test_the_finishing_message_is_redacted(store):
    run_id = store.start_run(None)
    store.finish_run(run_id, "failed", message="ApiError: echoed api_key=s3cr3tvalue back")
    message = store.run(run_id)["message"]
    assert "s3cr3tvalue" not in message and "[REDACTED]" in message


def test_only_runs_still_running_are_marked_interrupted(store):
    done = store.start_run(None)
    store.finish_run(done, "complete")
    stale = [store.start_run(None), store.start_run(None)]
    assert store.mark_interrupted_runs() == 2
    for run_id in stale:
        run = store.run(run_id)
        assert (run["status"], run["message"]) == ("failed", INTERRUPTED_MESSAGE)
    assert store.run(done)["status"] == "complete" and store.run(done)["message"] is None
    assert store.mark_interrupted_runs() == 0


def test_the_raw_pruning_and_the_finish_commit_together_or_not_at_all(store, monkeypatch):
    old = store.start_run(None)
    batch = LoadBatch(old)
    batch.add_detail(normalize_detail(detail("cls_a")), raw_body=b'{"id": "cls_a"}')
    store.write_batch(batch)
    store.finish_run(old, "complete")
    store.con.execute("update raw.responses set fetched_at = fetched_at - interval 3 day")
    run_id = store.start_run(None)

    def refused(*args, **kwargs):
        raise duckdb.IOException("IO Error: No space left on device")

    monkeypatch.setattr(store.ledger, "record_finish", refused)
    with pytest.raises(StoreWriteError, match="no space left on device"):
        store.finish_run(run_id, "complete", raw_retention_days=1)
    assert store.raw_run_ids() == [old]  # the prune was rolled back with the finish
    assert store.run(run_id)["status"] == "running"
    monkeypatch.undo()
    store.finish_run(run_id, "complete", raw_retention_days=1)
    assert store.raw_run_ids() == []
    assert store.run(run_id)["status"] == "complete"
