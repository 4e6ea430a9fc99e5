"""The snapshot stage: list the clusters, fetch their details, load them as they arrive.

    result = run_snapshot(config)            # or from_raw=True to rebuild from the raw store
    print(result.summary_line()); sys.exit(result.exit_code)     # 0 complete, 3 partial

The run is recorded in `meta.runs` from its start (`running`) to its end (`complete` when every
listed cluster was stored or is gone, `partial` when some failed or were skipped, `failed` when
the list could not be read or the provider refused the key). Details are loaded in batches of
`DEFAULT_BATCH_CLUSTERS` clusters, each batch committed with the ledger's counters, so a crash
loses at most one batch and never leaves a run that looks finished; the next run marks it
`failed` ("interrupted") and, since keys make loads idempotent, simply does the whole job again.

The client's workers fetch ahead of the loader by a bounded backlog (`BACKLOG_PER_WORKER`
results per worker: the one queue between the provider and the store, `fetch_details(backlog=)`),
and each full batch is written to DuckDB by a writer thread while the next one fills, so HTTP
keeps going during writes and memory stays bounded (one batch writes while one fills).

What the stage needs from its client and its store is written down as Protocols
(`SnapshotClient`, `SnapshotStore`), so that mypy checks the contract at the seams.

On a terminal a rich progress bar shows clusters done, failed and retried; otherwise the stage is
quiet and the CLI prints `summary_line()`. With `--log-format json` the summary is also logged
as one JSON record with the counts. The API key is never logged: this module never sees it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import time
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from pipeline.config import Config
from pipeline.errors import EXIT_OK, EXIT_PARTIAL, ApiError, AuthError, GpucostError
from pipeline.ledger import FailureOutcome, FailureStage, RunStatus
from pipeline.log import get_logger
from pipeline.store import DEFAULT_BATCH_CLUSTERS, LoadBatch, Store, rollback_quietly
from pipeline.validate import TimeGuard, validate_detail

if TYPE_CHECKING:
    from pipeline.client import EventKind, FetchResult
    from pipeline.transport import ClientStats

_log = get_logger("snapshot")
# Results the client's workers may hold ahead of the loader, per API worker (besides the
# requests running). Every result held keeps its normalized detail and raw body alive (~0.5 MB
# with 8 GPUs x 168 buckets, measured with tracemalloc), and fresh memory costs page faults: the
# batch writer runs on its own thread, so a short backlog no longer stalls the workers.
BACKLOG_PER_WORKER = 4
# DuckDB settings for the snapshot's connection (None: DuckDB's default). Loading is many small
# writes: more threads than this only add scheduling on a machine the API calls already load;
# a memory limit keeps the process's peak bounded as the database grows (DuckDB's default is
# 80 % of RAM, and its buffer cache grows with the tables the nightly replacement touches).
DUCKDB_THREADS: int | None = None
# DuckDB's memory limit is `store.snapshot_memory_mb` (default 192). Its buffer cache otherwise
# keeps what the night's writes and replacements touched (its default limit is 80 % of RAM); the
# night's rows stay in memory until a checkpoint. Beyond the limit DuckDB evicts, or spills to a
# temporary file beside the database. Measured at 1,000 clusters (bench/README.md, "Memory"):
# 192 MB peaks at ~380-400 MB, 64 MB at ~290-310 MB for 10-20 % more CPU. 64 MB failed
# 3,000-cluster nights ("failed to pin block"), with a 32 MB checkpoint threshold and with the
# 256 MB one below; 96 MB held. The setting's floor is 128 MB.
# The WAL size at which DuckDB checkpoints (its default is 16 MB: with 8 GPUs x 168 buckets
# that is every batch or two, and in a steady night each checkpoint rewrites again the row
# groups the replacements deleted from). Commits stay durable (the WAL is synced at each
# commit); the rest is checkpointed when the store closes. Measured at 1,000 clusters: night 2
# CPU 11.1-11.6 s -> 10.6-10.9 s, night 1 unchanged.
DUCKDB_CHECKPOINT_THRESHOLD: str | None = "256MB"
# The young-generation threshold of Python's cyclic GC while the stage runs (default 700). A
# detail's parse makes thousands of containers that reference counting frees anyway (JSON has
# no cycles); at 700 the collector runs several times per detail and each pass walks the
# young objects of every thread's documents: ~3 % of the stage's CPU at 1,000 clusters.
GC_THRESHOLD_YOUNG = 50_000


@contextlib.contextmanager
def _gc_tuned() -> Generator[None, None, None]:
    """Run the stage with a less eager cyclic GC, restored afterwards: the objects alive before
    (imported modules, config) are frozen out of the collector's scans and the young
    generation collects every `GC_THRESHOLD_YOUNG` allocations."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD_YOUNG, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


class SnapshotClient(Protocol):
    """What the snapshot stage needs from a provider client while it runs
    (`pipeline.client.ApiClient`; `run_snapshot` makes and closes it)."""

    @property
    def stats(self) -> ClientStats:
        """Requests made and retries so far (read while the run goes, for the ledger)."""
        ...

    def list_clusters(self) -> list[dict[str, Any]]:
        """Every cluster's summary; `ApiError` or `AuthError` when the list cannot be read."""
        ...

    def fetch_details(
        self,
        cluster_ids_or_summaries: Iterable[str | dict[str, Any]],
        *,
        backlog: int | None = None,
    ) -> Generator[FetchResult, None, None]:
        """One result per cluster as they complete, at most `backlog` held ahead; raises
        `AuthError` when the provider refuses the key."""
        ...


class SnapshotStore(Protocol):
    """What the snapshot writes through while it runs (`pipeline.store.Store`): the run's
    ledger row, its list-stage failure and its batches."""

    def set_listed(self, run_id: str, count: int) -> None:
        """Record how many clusters the list gave."""
        ...

    def record_failure(
        self,
        run_id: str,
        *,
        cluster_id: str | None,
        stage: FailureStage,
        outcome: FailureOutcome,
        reason: str,
        http_status: int | None = None,
        raw_body: bytes | None = None,
    ) -> None:
        """Record one failure outside a batch (the list could not be read)."""
        ...

    def write_batch(
        self,
        batch: LoadBatch,
        *,
        requests_made: int | None = None,
        retries: int | None = None,
        count: bool = True,
        transaction: bool = True,
    ) -> int:
        """Write a batch of results with the ledger's counters, in one transaction."""
        ...

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        message: str | None = None,
        requests_made: int | None = None,
        retries: int | None = None,
        raw_retention_days: int | None = None,
    ) -> None:
        """Record the run's end (and prune the raw store)."""
        ...

    def reconnect(self) -> None:
        """A fresh connection after a fatal write error."""
        ...


@dataclass
class SnapshotResult:
    """What one snapshot run did; `exit_code` is what the CLI returns."""

    run_id: str
    status: RunStatus  # running, then complete | partial | failed
    listed: int = 0
    fetched: int = 0
    failed: int = 0
    gone: int = 0
    skipped: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    from_raw: bool = False

    @property
    def exit_code(self) -> int:
        """0 complete, 3 partial (some clusters failed or were skipped; the rest are kept)."""
        return EXIT_OK if self.status == "complete" else EXIT_PARTIAL

    def summary_line(self) -> str:
        """One line for cron mail and terminals."""
        if self.from_raw:
            return (
                f"snapshot {self.run_id} {self.status} (from raw): {self.fetched} responses "
                f"reloaded, {self.failed} failed in {self.seconds:.1f} s"
            )
        retries = f"{self.retries} retr{'y' if self.retries == 1 else 'ies'}"
        return (
            f"snapshot {self.run_id} {self.status}: {self.listed} listed, {self.fetched} stored, "
            f"{self.gone} gone, {self.failed} failed, {self.skipped} skipped; "
            f"{self.requests} requests ({retries}) in {self.seconds:.1f} s"
        )

    def as_log_fields(self) -> dict[str, Any]:
        """The counts as flat fields for a JSON log record."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "listed": self.listed,
            "fetched": self.fetched,
            "failed": self.failed,
            "gone": self.gone,
            "skipped": self.skipped,
            "requests": self.requests,
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
            "from_raw": self.from_raw,
        }


class _Progress:
    """A rich progress bar on stderr, fed by the client's events (from its threads)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.failed = 0
        self.retried = 0
        self._bar: Any = None
        self._task: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("snapshot"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("failed {task.fields[failed]}  retried {task.fields[retried]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._bar.add_task("snapshot", total=None, failed=0, retried=0)
            self._bar.start()

    def set_total(self, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def event(self, kind: EventKind, cluster_id: str) -> None:
        if kind == "retry":
            self.retried += 1
        elif kind in ("failed", "skipped"):
            self.failed += 1
        if self._bar is not None:
            self._bar.update(
                self._task,
                advance=0 if kind == "retry" else 1,
                failed=self.failed,
                retried=self.retried,
            )

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def run_snapshot(
    config: Config,
    *,
    from_raw: bool = False,
    progress: bool = False,
    transport: httpx.BaseTransport | None = None,
    batch_clusters: int = DEFAULT_BATCH_CLUSTERS,
) -> SnapshotResult:
    """Snapshot every cluster into the database of `config.store.db`.

    `from_raw=True` rebuilds the normalized tables from the raw store instead of calling the
    API. `transport` replaces httpx's network (tests). Raises `LockedError` (another run holds
    the lock, nothing touched), `AuthError` (the run is recorded failed), `ApiError` (the list
    could not be read; recorded failed) and `ConfigError`.
    """
    with _gc_tuned():
        if from_raw:
            return _rebuild_from_raw(config, batch_clusters)
        return _run_live(
            config, progress=progress, transport=transport, batch_clusters=batch_clusters
        )


def _run_live(
    config: Config,
    *,
    progress: bool,
    transport: httpx.BaseTransport | None,
    batch_clusters: int,
) -> SnapshotResult:
    from pipeline.client import ApiClient

    started = time.monotonic()
    bar = _Progress(progress)
    # The client is built first: a missing key or URL fails before the database is touched.
    try:
        client = ApiClient.from_config(config, transport=transport, on_event=bar.event)
    except BaseException:
        bar.stop()
        raise
    try:
        with client, Store.open(config.store.db) as store:
            if DUCKDB_THREADS is not None:
                store.con.execute(f"set threads = {int(DUCKDB_THREADS)}")
            store.con.execute(f"set memory_limit = '{int(config.store.snapshot_memory_mb)}MB'")
            if DUCKDB_CHECKPOINT_THRESHOLD is not None:
                store.con.execute(f"set checkpoint_threshold = '{DUCKDB_CHECKPOINT_THRESHOLD}'")
            store.mark_interrupted_runs()
            run_id = store.start_run(client.base_url)
            result = SnapshotResult(run_id, "running")
            try:
                _snapshot(config, client, store, result, bar, batch_clusters)
            except BaseException as exc:
                result.status = "failed"
                _finish(store, result, client, message=_failure_message(exc))
                raise
            result.status = "complete" if not (result.failed or result.skipped) else "partial"
            result.seconds = time.monotonic() - started
            _finish(store, result, client, raw_retention_days=config.store.raw_retention_days)
    finally:
        bar.stop()
    _log_summary(config, result)
    return result


def _failure_message(exc: BaseException) -> str:
    if isinstance(exc, GpucostError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"unexpected {type(exc).__name__}: {exc}"


def _finish(
    store: SnapshotStore,
    result: SnapshotResult,
    client: SnapshotClient,
    *,
    message: str | None = None,
    raw_retention_days: int | None = None,
) -> None:
    result.requests = client.stats.requests
    result.retries = client.stats.retries

    def record() -> None:
        store.finish_run(
            result.run_id,
            result.status,
            message=message,
            requests_made=result.requests,
            retries=result.retries,
            raw_retention_days=raw_retention_days,
        )

    try:
        record()
    except Exception:
        if result.status != "failed":
            raise
        # A fatal write error (a full disk) can leave the connection unusable while the
        # one-row ledger update still fits: a fresh connection gets it recorded.
        try:
            store.reconnect()
            record()
        except Exception:  # the next run marks it failed ("interrupted")
            _log.exception("could not record run %s as failed", result.run_id)


def _snapshot(
    config: Config,
    client: SnapshotClient,
    store: SnapshotStore,
    result: SnapshotResult,
    bar: _Progress,
    batch_clusters: int,
) -> None:
    run_id = result.run_id
    try:
        summaries = client.list_clusters()
    except AuthError:
        raise
    except ApiError as exc:
        store.record_failure(
            run_id,
            cluster_id=None,
            stage="list",
            outcome="failed",
            reason=str(exc),
            http_status=exc.status,
            raw_body=exc.body,
        )
        raise
    result.listed = len(summaries)
    store.set_listed(run_id, result.listed)
    bar.set_total(result.listed)
    keep_raw = config.store.raw_retention_days > 0
    writer = _Writer(store, result, client)
    guard = TimeGuard()
    # A batch's results are judged together (their snapshot times against each other's),
    # then queued for the writer.
    held: list[Any] = []

    def flush() -> None:
        if not held:
            return
        batch = LoadBatch(run_id, keep_raw=keep_raw)
        for fetched in _check_times(guard, held):
            batch.add_result(fetched)
        held.clear()
        writer.submit(batch)

    try:
        # A batch write takes a fraction of a second and releases the GIL: a few results per
        # worker keep HTTP busy meanwhile; more would only hold canonical details (~0.7 MB
        # each with 8 GPUs) in memory.
        backlog = max(BACKLOG_PER_WORKER * config.api.concurrency, 1)
        # Closed at once when the loop ends early: the workers stop and the pool shuts down.
        fetching = contextlib.closing(client.fetch_details(summaries, backlog=backlog))
        with fetching as results:
            for fetched in results:
                held.append(fetched)
                if fetched.outcome != "ok":
                    _log.debug(
                        "cluster %s %s: %s", fetched.cluster_id, fetched.outcome, fetched.reason
                    )
                if len(held) >= batch_clusters:
                    flush()
    except AuthError:
        # What was fetched before the provider refused the key is still worth keeping.
        flush()
        writer.close()
        raise
    except BaseException:
        writer.close(wait_only=True)
        raise
    flush()
    writer.close()


class _Writer:
    """Writes batches on one background thread, one at a time, while the next batch fills.

    DuckDB releases the GIL while it inserts and commits (and waits for the disk), so the
    writes overlap fetching and normalizing instead of pausing them. At most one batch is
    being written and one filling: memory stays bounded. A write's error is raised by the
    next `submit` or by `close`.
    """

    def __init__(self, store: SnapshotStore, result: SnapshotResult, client: SnapshotClient):
        self._store = store
        self._result = result
        self._client = client
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpucost-write")
        self._pending: Future[LoadBatch] | None = None

    def _write(self, batch: LoadBatch) -> LoadBatch:
        stats = self._client.stats
        self._store.write_batch(batch, requests_made=stats.requests, retries=stats.retries)
        return batch

    def _collect(self) -> None:
        if self._pending is None:
            return
        future, self._pending = self._pending, None
        batch = future.result()
        result = self._result
        result.fetched += batch.fetched
        result.failed += batch.failed
        result.gone += batch.gone
        result.skipped += batch.skipped
        _log.debug(
            "committed a batch of %d clusters (%d stored so far)", len(batch), result.fetched
        )
        for failure in batch.failures:
            if failure["stage"] == "load":
                _log.debug("cluster %s not loaded: %s", failure["cluster_id"], failure["reason"])

    def submit(self, batch: LoadBatch) -> None:
        """Write `batch` once the previous write is done (raising its error, if any)."""
        self._collect()
        self._pending = self._pool.submit(self._write, batch)

    def close(self, *, wait_only: bool = False) -> None:
        """Finish the write in flight; with `wait_only`, ignore its outcome (already failing)."""
        try:
            if wait_only:
                if self._pending is not None:
                    wait([self._pending])
                    self._pending = None
            else:
                self._collect()
        finally:
            self._pool.shutdown(wait=True)


def _check_times(guard: TimeGuard, results: list[Any]) -> list[Any]:
    """The results, those whose snapshot time is far from the run's turned into failures (a
    provider clock years ahead would otherwise be "newest" forever and pin every bucket)."""
    ok = [i for i, r in enumerate(results) if r.outcome == "ok" and r.detail is not None]
    errors = guard.check_many([(results[i].detail, results[i].provider_date) for i in ok])
    out = list(results)
    for i, error in zip(ok, errors, strict=True):
        if error is not None:
            out[i] = dataclasses.replace(
                results[i],
                outcome="failed",
                detail=None,
                reason=f"outside the contract: {error}",
            )
    return out


def _log_summary(config: Config, result: SnapshotResult) -> None:
    # Text mode stays quiet: the CLI prints the summary line itself.
    if config.log.format == "json":
        _log.info("snapshot finished", extra=result.as_log_fields())


def _rebuild_from_raw(config: Config, batch_clusters: int) -> SnapshotResult:
    """Re-normalize every raw response and rebuild the snap rows they produced, atomically."""
    from pipeline.normalize import normalize_detail, parse_json

    started = time.monotonic()
    with Store.open(config.store.db) as store:
        store.mark_interrupted_runs()
        run_id = store.start_run(None)
        result = SnapshotResult(run_id, "running", from_raw=True)
        covered = store.raw_run_ids()
        if not covered:
            store.finish_run(run_id, "failed", message="no raw responses to rebuild from")
            raise GpucostError(
                "the raw store is empty: nothing to rebuild from (store.raw_retention_days = "
                f"{config.store.raw_retention_days})"
            )
        store.con.begin()
        try:
            # Rows of the covered runs are derived again from their responses; rows of older
            # runs, whose raw responses were pruned, stay as they are.
            store.delete_rows_of_runs(covered)
            batch = LoadBatch(run_id, keep_raw=False)
            for raw_run, cluster_id, _fetched_at, body in store.iter_raw():
                result.listed += 1
                try:
                    detail = normalize_detail(parse_json(body))
                    validate_detail(detail)
                except ApiError as exc:
                    batch.add_failure(
                        cluster_id,
                        "failed",
                        f"raw response of run {raw_run} does not normalize: {exc}",
                        stage="load",
                        raw_body=body,
                    )
                else:
                    batch.add_detail(detail, run_id=raw_run)
                if len(batch) >= batch_clusters:
                    store.write_batch(batch, transaction=False)
                    result.fetched += batch.fetched
                    result.failed += batch.failed
                    batch = LoadBatch(run_id, keep_raw=False)
            store.write_batch(batch, transaction=False)
            result.fetched += batch.fetched
            result.failed += batch.failed
            store.set_listed(run_id, result.listed)
            store.con.commit()
        except BaseException as exc:
            rollback_quietly(store.con)
            store.finish_run(run_id, "failed", message=_failure_message(exc))
            raise
        result.status = "complete" if not result.failed else "partial"
        result.seconds = time.monotonic() - started
        store.finish_run(
            run_id, result.status, message=f"rebuilt from the raw responses of {len(covered)} runs"
        )
    _log_summary(config, result)
    return result
