"""The raw response store: bodies compressed, read back oldest first a chunk at a time, pruned
by age."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.rawstore import RAW_ENCODING, RawRow, compress, write_bodies
from pipeline.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "g.duckdb")
    yield s
    s.close()


def _row(run_id: str, cluster_id: str, fetched_at: datetime, body: bytes) -> RawRow:
    return RawRow(run_id, cluster_id, fetched_at, fetched_at - timedelta(minutes=5), compress(body))


class _CountingCursor:
    """A cursor that remembers how many rows each fetchmany asked for and got."""

    def __init__(self, real: Any, fetches: list[tuple[int, int]]) -> None:
        self._real = real
        self._fetches = fetches

    def execute(self, *args: Any) -> Any:
        return self._real.execute(*args)

    def fetchmany(self, size: int) -> list[Any]:
        rows = self._real.fetchmany(size)
        self._fetches.append((size, len(rows)))
        return rows

    def close(self) -> None:
        self._real.close()


class _CountingConnection:
    def __init__(self, real: Any, fetches: list[tuple[int, int]]) -> None:
        self._real = real
        self._fetches = fetches

    def cursor(self) -> _CountingCursor:
        return _CountingCursor(self._real.cursor(), self._fetches)


def test_a_body_is_stored_gzip_the_same_bytes_each_time(store):
    body = b'{"id": "cls_a", "name": "' + b"x" * 2000 + b'"}'
    assert compress(body) == compress(body)  # no timestamp in the gzip header
    assert gzip.decompress(compress(body)) == body and len(compress(body)) < len(body) / 10
    now = datetime.now(UTC)
    store.con.begin()
    write_bodies(store.con, [_row("r1", "cls_a", now, body)])
    write_bodies(store.con, [])
    store.con.commit()
    stored = store.con.execute(
        "select run_id, cluster_id, snapshot_at, encoding, body from raw.responses"
    ).fetchall()
    assert stored == [("r1", "cls_a", now - timedelta(minutes=5), RAW_ENCODING, compress(body))]
    assert [(r.run_id, r.cluster_id, r.fetched_at, r.body) for r in store.iter_raw()] == [
        ("r1", "cls_a", now, body)
    ]


def test_responses_come_back_oldest_first_a_chunk_at_a_time(store):
    t = datetime(2026, 11, 20, 3, tzinfo=UTC)
    rows = [
        _row("r2", "cls_b", t + timedelta(days=1), b"r2-b"),
        _row("r1", "cls_b", t, b"r1-b"),
        _row("r2", "cls_a", t + timedelta(days=1), b"r2-a"),
        _row("r1", "cls_a", t, b"r1-a"),
        _row("r3", "cls_a", t + timedelta(days=2), b"r3-a"),
    ]
    write_bodies(store.con, rows)
    fetches: list[tuple[int, int]] = []
    real = store.con
    store.con = _CountingConnection(real, fetches)  # type: ignore[assignment]
    try:
        read = store.raw.iter(chunk=2)
        first = next(read)
        assert fetches == [(2, 2)]  # one chunk in memory, not the whole store
        seen = [first, *read]
    finally:
        store.con = real
    assert [r.body for r in seen] == [b"r1-a", b"r1-b", b"r2-a", b"r2-b", b"r3-a"]
    assert fetches == [(2, 2), (2, 2), (2, 1), (2, 0)]
    assert store.raw_run_ids() == ["r1", "r2", "r3"]


def test_the_caller_can_write_while_the_responses_are_read(store):
    t = datetime(2026, 11, 20, 3, tzinfo=UTC)
    write_bodies(store.con, [_row("r1", f"cls_{k}", t, b"{}") for k in range(5)])
    store.con.execute("create table seen (cluster_id varchar)")
    for response in store.raw.iter(chunk=2):
        store.con.execute("insert into seen values (?)", [response.cluster_id])
    assert store.con.execute("select count(*) from seen").fetchall() == [(5,)]


def test_pruning_deletes_what_was_fetched_before_the_retention(store):
    now = datetime.now(UTC)
    write_bodies(
        store.con,
        [
            _row("r_old", "cls_a", now - timedelta(days=3), b"old"),
            _row("r_mid", "cls_a", now - timedelta(days=1, hours=1), b"mid"),
            _row("r_new", "cls_a", now, b"new"),
        ],
    )
    assert store.prune_raw(4) == 0
    assert store.prune_raw(2) == 1
    assert store.raw_run_ids() == ["r_mid", "r_new"]
    assert store.raw.prune(days=1) == 1
    assert [r.body for r in store.iter_raw()] == [b"new"]
