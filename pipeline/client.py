"""The provider API over httpx: list the clusters, fetch their details, parse them.

    with ApiClient.from_config(config) as client:
        summaries = client.list_clusters()
        for result in client.fetch_details(summaries):   # FetchResult, as they complete
            ...

- Pagination with or without a `pagination` object (without: page until a page is short);
  duplicates across pages are removed by id.
- Details are fetched by a pool of `concurrency` worker threads sharing one keep-alive
  `httpx.Client`; each response is parsed (orjson; the stdlib parser for what orjson refuses,
  and again with `Decimal` when money arrives as JSON numbers), redacted, normalized and
  validated (`pipeline/process.py`), so the consumer receives normalized details (the snapshot
  tables' columns, from the redacted document: `normalize.NormalizedDetail`). That work holds
  the GIL throughout: for a fetch of `PROCESSES_FROM` clusters or more, a worker process does
  it (`pipeline/workers.py`; on one CPU, or when it dies, the fetching thread). The iterator
  submits new work only as results are taken, which bounds memory (backpressure): the one
  queue between the provider and the snapshot's loader.
- How each request goes out is the transport's job (`pipeline/transport.py`, an httpx
  transport): rate-limit pacing from the `X-RateLimit-*` headers, retries (429, 5xx, timeouts,
  broken connections, truncated bodies; an unparsable body once; never 400/401/403/404/409/422),
  `Retry-After`, the circuit breaker, the run deadline and the response-size guard. Here:
  401/403 raise `AuthError`; 404 on a detail is outcome "gone"; a request the transport gave up
  on is outcome "failed" with the reason and the redacted raw body. When the fleet needs more
  requests than the rate limit allows within `retry_max_seconds`, running and recently changed
  clusters are fetched first and the rest come back as outcome "skipped".
- The API key lives only in the Authorization header of the httpx client: it is not an attribute
  of ApiClient, never in a URL, a log line, an exception or a repr.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from queue import SimpleQueue
from typing import Any, Literal
from urllib.parse import quote

import httpx

from pipeline.config import Config, check_api_url, read_api_key
from pipeline.errors import ApiError, AuthError, ConfigError
from pipeline.log import get_logger
from pipeline.normalize import NormalizedDetail, NormalizeError, normalize_list_page, parse_json
from pipeline.process import Processed, UnusableBody, parse_body, process_document
from pipeline.rawbody import compress, decompress
from pipeline.redact import known_secrets, redact_document, redact_text, register_secret
from pipeline.transport import (
    ATTEMPTS,
    CLUSTER_ID,
    DOCUMENT,
    ClientStats,
    Final,
    OverBudget,
    Policy,
    ProviderTransport,
    RequestFailed,
    Transient,
    env_proxy,
    error_summary,
)
from pipeline.validate import cluster_id_problem
from pipeline.workers import ParseWorkers, WorkerDied

__all__ = ["ApiClient", "ClientStats", "EventKind", "FetchResult", "Outcome"]

DEFAULT_PAGE_SIZE = 100
DEFAULT_CONCURRENCY = 8
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_RETRY_MAX_SECONDS = 300.0
# The whole snapshot's time limit: a night's run takes minutes (seconds for a hundred clusters;
# the request budget skips what the rate limit cannot reach within retry_max_seconds).
DEFAULT_RUN_DEADLINE_SECONDS = 3600.0
# The circuit breaker: this many requests in a row failed (5xx, timeouts, broken connections;
# a 429 is pacing, not a failure) over at least this many seconds without one good answer means
# the provider is down: the rest of the run is recorded failed ("provider unavailable") instead
# of each cluster spending its own retry budget (91 clusters x 300 s of backoff).
DEFAULT_BREAKER_FAILURES = 20
DEFAULT_BREAKER_SECONDS = 60.0
DETAIL_PARAMS = {
    "include_metrics": "true",
    "include_cost_breakdown": "true",
    "metrics_window": "7d",
}
# Pages beyond what the list's own total needs (clusters created while paging shift items).
_EXTRA_PAGES = 2
# Without any total from the provider: a last bound (a million clusters at 100 a page).
_MAX_PAGES = 10_000
_STATUS_RANK = {"running": 0, "error": 1}
# Results held beyond the requests running, per worker, unless the caller asks for another
# backlog (each finished one holds its document until it is taken).
QUEUED_PER_WORKER = 1
# Redacting, normalizing and validating a 7-day detail of 8 GPUs takes ~4.6 ms of CPU, all of
# it holding the GIL (`python -m bench.ingest_paths`): the client's threads can only take
# turns at it. With a second CPU, a worker process does it instead (`pipeline/workers.py`)
# while this process keeps the HTTP and the store. A worker process takes ~0.5 s of CPU to
# start: fetches of fewer details than PROCESSES_FROM stay in the threads.
PARSE_PROCESSES = 1 if (os.cpu_count() or 1) >= 2 else 0
PROCESSES_FROM = 200

# What became of one cluster's detail request: "gone" is a 404, "skipped" the request budget.
Outcome = Literal["ok", "gone", "failed", "skipped"]
# What `on_event(kind, cluster_id)` is told: one outcome per cluster ("done" for ok), and a
# "retry" from the worker about to retry a request.
EventKind = Literal["done", "gone", "failed", "skipped", "retry"]
OnEvent = Callable[[EventKind, str], None]
_log = get_logger("client")


@dataclass(kw_only=True)
class FetchResult:
    """What became of one cluster's detail request (docs/architecture.md); made by the named
    constructors `ok`, `gone`, `failed` and `skipped`."""

    cluster_id: str
    outcome: Outcome
    detail: NormalizedDetail | None = None  # the snapshot tables' columns when ok (redacted)
    # The response body, redacted, in its stored form (`rawbody.compress`): a result waiting
    # for its batch holds ~20 KB rather than ~135 KB. `raw_body` reads it.
    raw_gzip: bytes | None = None
    http_status: int | None = None
    reason: str | None = None  # why it failed / was gone / was skipped
    attempts: int = 0  # requests made for this cluster (retries = attempts - 1)
    # The response's HTTP `Date` header: the provider's clock, for the snapshot's time checks.
    provider_date: str | None = None

    @property
    def raw_body(self) -> bytes | None:
        """The response body, redacted (None when there was none)."""
        return None if self.raw_gzip is None else decompress(self.raw_gzip)

    @classmethod
    def ok(
        cls,
        *,
        cluster_id: str,
        detail: NormalizedDetail,
        raw_gzip: bytes,
        attempts: int,
        provider_date: str | None = None,
    ) -> FetchResult:
        """A normalized, redacted, validated detail (HTTP 200), with its body compressed."""
        return cls(
            cluster_id=cluster_id,
            outcome="ok",
            detail=detail,
            raw_gzip=raw_gzip,
            http_status=200,
            attempts=attempts,
            provider_date=provider_date,
        )

    @classmethod
    def gone(cls, *, cluster_id: str, reason: str, raw_body: bytes, attempts: int) -> FetchResult:
        """The provider no longer knows the cluster (HTTP 404)."""
        return cls(
            cluster_id=cluster_id,
            outcome="gone",
            raw_gzip=compress(raw_body),
            http_status=404,
            reason=reason,
            attempts=attempts,
        )

    @classmethod
    def failed(
        cls,
        *,
        cluster_id: str,
        reason: str,
        raw_body: bytes | None = None,
        http_status: int | None = None,
        attempts: int = 0,
        provider_date: str | None = None,
    ) -> FetchResult:
        """No usable detail: `reason` says why (the redacted body, when there was one)."""
        return cls(
            cluster_id=cluster_id,
            outcome="failed",
            raw_gzip=None if raw_body is None else compress(raw_body),
            http_status=http_status,
            reason=reason,
            attempts=attempts,
            provider_date=provider_date,
        )

    @classmethod
    def skipped(cls, *, cluster_id: str, reason: str, attempts: int = 0) -> FetchResult:
        """Not fetched: the request budget could not reach it in time."""
        return cls(cluster_id=cluster_id, outcome="skipped", reason=reason, attempts=attempts)


@dataclass
class _Response:
    """What the client reads of a response the transport let through."""

    status: int
    body: bytes
    doc: Any = None  # parsed JSON of a 200 (by the worker that fetched it)
    date: str | None = None  # the HTTP Date header


def _parse_body(body: bytes) -> Any:
    """The transport's `parse` hook for a 200 body: `process.parse_body`, its failures as the
    transport's (an unparsable body is tried once more; one nested too deep is not)."""
    try:
        return parse_body(body)
    except UnusableBody as exc:
        raise _unusable(body, exc.reason, retry=exc.retry) from None


def _unusable(body: bytes, reason: str, *, retry: bool) -> Transient | Final:
    """What the transport is told of a 200 body that cannot be used: fetch it once more
    (`Transient`, an unparsable body) or give up (`Final`, nested too deep)."""
    if retry:
        return Transient(reason, status=200, body=body, malformed=True)
    return Final(reason, status=200)


def _pages_allowed(total: Any, total_pages: Any, limit: int) -> int | None:
    """The most pages a list may take by its own totals (plus `_EXTRA_PAGES` for clusters
    created while paging), or None when it gives none."""
    bounds = []
    if isinstance(total_pages, int) and total_pages >= 0:
        bounds.append(total_pages)
    if isinstance(total, int) and total >= 0 and limit > 0:
        bounds.append(-(-total // limit))
    return max(bounds) + _EXTRA_PAGES if bounds else None


def _priority(summary: dict[str, Any]) -> tuple[int, float]:
    updated = summary.get("updated_at")
    stamp = updated.timestamp() if isinstance(updated, datetime) else 0.0
    return (_STATUS_RANK.get(str(summary.get("status")), 2), -stamp)


class ApiClient:
    """A client of the provider API; a context manager that closes its HTTP connections."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        retry_max_seconds: float = DEFAULT_RETRY_MAX_SECONDS,
        include_logs: bool = False,
        allow_insecure_http: bool = False,
        run_deadline_seconds: float = DEFAULT_RUN_DEADLINE_SECONDS,
        breaker_failures: int = DEFAULT_BREAKER_FAILURES,
        breaker_seconds: float = DEFAULT_BREAKER_SECONDS,
        transport: httpx.BaseTransport | None = None,
        on_event: OnEvent | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
        processes: int | None = None,
    ):
        """Build a client for `base_url` (e.g. `https://api.example-gpu.cloud/v1`).

        `transport` replaces the network under the provider transport (tests pass
        `httpx.MockTransport`); `sleep` and `clock` (wall-clock epoch seconds, as
        `X-RateLimit-Reset` is) are injectable for the same reason. `on_event(kind, cluster_id)`
        is told "done", "failed", "gone", "skipped" from the iterating thread and "retry" from
        the worker that retries. `processes` worker processes (default `PARSE_PROCESSES`; 0:
        none) process the details of a fetch of at least `PROCESSES_FROM` clusters.

        Every run ends in bounded time: nothing is sent `run_deadline_seconds` after the client
        was made, nor once `breaker_failures` requests in a row failed over `breaker_seconds`
        (the provider is down); what is left comes back "failed" with the reason.
        """
        self.base_url = check_api_url(base_url, allow_insecure_http=allow_insecure_http)
        if not api_key or not api_key.isascii() or not api_key.isprintable():
            raise ConfigError("the API key is empty or holds characters a header cannot carry")
        register_secret(api_key)  # never written or printed, even when the provider echoes it
        if page_size < 1 or concurrency < 1 or timeout <= 0 or max_response_bytes < 1:
            raise ConfigError("page_size, concurrency, timeout and max_response_bytes must be > 0")
        if run_deadline_seconds <= 0 or breaker_failures < 1 or breaker_seconds < 0:
            raise ConfigError(
                "run_deadline_seconds and breaker_failures must be > 0, breaker_seconds >= 0"
            )
        self.page_size = page_size
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.retry_max_seconds = retry_max_seconds
        self.include_logs = include_logs
        self.run_deadline_seconds = run_deadline_seconds
        self.on_event = on_event
        if processes is not None and processes < 0:
            raise ConfigError("processes must be >= 0")
        self.processes = PARSE_PROCESSES if processes is None else processes
        # The worker processes of the fetch under way (`fetch_details`), if it has any and
        # they still work (set back to None when one dies; the fetch closes them either way).
        self._processes: ParseWorkers | None = None
        # Parsing, redacting and normalizing a response hold the GIL from start to end, so the
        # workers cannot do them in parallel anyway: one at a time does, and the others wait on
        # this lock (asleep) instead of taking the GIL from each other every switch interval.
        self._cpu_work = threading.Lock()
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        # Given a transport, httpx no longer routes through the environment's proxy itself.
        network = transport or httpx.HTTPTransport(limits=limits, proxy=env_proxy(self.base_url))
        self._transport = ProviderTransport(
            network,
            policy=Policy(
                timeout=timeout,
                max_response_bytes=max_response_bytes,
                retry_max_seconds=retry_max_seconds,
                run_deadline_seconds=run_deadline_seconds,
                breaker_failures=breaker_failures,
                breaker_seconds=breaker_seconds,
            ),
            parse=self._parse_hook,
            on_retry=self._on_retry,
            sleep=sleep,
            clock=clock,
        )
        self.stats: ClientStats = self._transport.stats
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
            transport=self._transport,
            follow_redirects=False,
        )

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        transport: httpx.BaseTransport | None = None,
        on_event: OnEvent | None = None,
    ) -> ApiClient:
        """A client from the configuration: api.url (checked), the key from the environment or
        api.api_key_file, and the [api] settings. No key is a `ConfigError`."""
        api = config.api
        url = check_api_url(api.url, allow_insecure_http=api.allow_insecure_http)
        key = read_api_key(api.api_key_file)
        if not key:
            raise ConfigError("no API key: set GPUCOST_API_KEY or api.api_key_file")
        return cls(
            url,
            key,
            page_size=api.page_size,
            concurrency=api.concurrency,
            timeout=api.timeout_seconds,
            max_response_bytes=api.max_response_bytes,
            retry_max_seconds=api.retry_max_seconds,
            include_logs=api.include_logs,
            allow_insecure_http=api.allow_insecure_http,
            run_deadline_seconds=api.run_deadline_seconds,
            breaker_failures=api.breaker_failures,
            breaker_seconds=api.breaker_seconds,
            processes=api.parse_processes,
            transport=transport,
            on_event=on_event,
        )

    def __repr__(self) -> str:
        return (
            f"ApiClient(base_url={self.base_url!r}, page_size={self.page_size}, "
            f"concurrency={self.concurrency}, api_key=<hidden>)"
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._transport.aborted.set()
        self._http.close()

    def halted(self) -> str | None:
        """Why nothing more is sent (breaker open, deadline passed, aborted), or None."""
        return self._transport.halted()

    # ------------------------------------------------------------------ plumbing

    def _emit(self, kind: EventKind, cluster_id: str) -> None:
        if self.on_event is not None:
            self.on_event(kind, cluster_id)

    def _on_retry(self, cluster_id: str) -> None:
        self._emit("retry", cluster_id)

    def _parse_hook(self, body: bytes, request: httpx.Request) -> Any:
        """The transport's parse hook for a 200 body: a list page is parsed; a detail (its
        request names the cluster) is also redacted, normalized and validated (`Processed`),
        in a worker process when the fetch has one, else here under the workers' CPU lock."""
        processes = self._processes
        if CLUSTER_ID not in request.extensions:
            with self._cpu_work:
                return _parse_body(body)
        if processes is not None:
            try:
                done = processes.process(body)
            except WorkerDied as exc:
                # A worker process died (killed for memory?): this body and the rest are
                # processed here, as without one.
                if self._processes is not None:
                    _log.warning("a parsing process ended (%s); parsing in the threads", exc)
                    self._processes = None
            else:
                if isinstance(done, Processed):
                    return done
                kind, reason = done
                if kind in ("retry", "final"):
                    raise _unusable(body, reason, retry=kind == "retry")
                # "error": the worker's processing raised; here it raises where it always has.
        with self._cpu_work:
            return process_document(_parse_body(body), body)

    def _get(
        self, path: str, params: dict[str, str], cluster_id: str | None
    ) -> tuple[_Response, int]:
        """GET through the provider transport: (the last response, attempts), or raises the
        transport's `RequestFailed` (`attempts` set); 401/403 raise `AuthError`."""
        extensions = {CLUSTER_ID: cluster_id} if cluster_id is not None else None
        request = self._http.build_request("GET", path, params=params, extensions=extensions)
        http = self._http.send(request, stream=True)
        try:
            # The transport read (and decoded) the body already: its stream holds it whole.
            stream = http.stream
            assert isinstance(stream, httpx.SyncByteStream)
            body = b"".join(stream)
        finally:
            http.close()
        # httpx's response and its stream refer to each other: a cycle only the cyclic GC
        # frees. Left on it, every parsed document (~1 MB with 8 GPUs x 7 days) and body lived
        # until a collection found them (13 % of a 1,000-cluster snapshot's CPU went to the
        # GC). What we keep is taken out; what stays in the cycle is small.
        doc = http.extensions.pop(DOCUMENT, None)
        http.stream = httpx.ByteStream(b"")
        response = _Response(http.status_code, body, doc, http.headers.get("date"))
        status = response.status
        if status in (401, 403):
            word = "refused the API key" if status == 401 else "refused permission for the key"
            detail = error_summary(response.body)
            raise AuthError(
                f"the provider {word} (HTTP {status}{' ' + detail if detail else ''}) at "
                f"{self.base_url}{path}; check GPUCOST_API_KEY or api.api_key_file"
            )
        return response, http.extensions[ATTEMPTS]

    # ------------------------------------------------------------------ list

    def list_clusters(self) -> list[dict[str, Any]]:
        """Every cluster's canonical summary, deduplicated by id, in the provider's order.

        Paging ends when the provider says so (`has_next`, else `total_pages`), when a page
        brings no cluster not seen before, and at most `_EXTRA_PAGES` pages beyond what the
        list's own `total` needs. A list that contradicts itself (more pages announced than
        its `total_pages`, more clusters than its `total`) is an `ApiError`, as is one that
        cannot be read. Raises `AuthError` (401/403).
        """
        seen: dict[str, dict[str, Any]] = {}
        page = 1
        most_pages: int | None = None  # what the list's own totals allow
        while True:
            listing = self._list_page(page)
            for error in listing.errors:
                _log.warning("skipping a malformed cluster summary on page %d: %s", page, error)
            new = 0
            for summary in listing.clusters:
                if summary["id"] not in seen:
                    seen[summary["id"]] = summary
                    new += 1
            if listing.raw_count == 0:
                break
            pagination = listing.pagination or {}
            limit = pagination.get("limit") or self.page_size
            has_next = pagination.get("has_next")
            total, total_pages = pagination.get("total"), pagination.get("total_pages")
            bound = _pages_allowed(total, total_pages, limit)
            if bound is not None:
                most_pages = max(most_pages or 0, bound)
            if has_next is True and total_pages is not None and page >= total_pages:
                raise ApiError(
                    f"the cluster list contradicts itself: page {page} of total_pages="
                    f"{total_pages} says has_next=true"
                )
            if total is not None and total >= 0 and len(seen) > total + limit:
                raise ApiError(
                    f"the cluster list contradicts itself: {len(seen)} distinct clusters by "
                    f"page {page}, but total={total}"
                )
            if has_next is None and total_pages is not None:
                has_next = page < total_pages
            if has_next is None:
                # No pagination object: a full page means there may be more; a server that
                # ignores `page` keeps sending the same items, which must not loop forever.
                has_next = listing.raw_count >= limit and new > 0
            if not has_next:
                break
            if new == 0:
                # Nothing new on a whole page: the provider repeats itself; more pages would
                # only repeat it again.
                _log.warning(
                    "the cluster list repeats itself: page %d brought no new cluster; "
                    "stopped paging with %d clusters",
                    page,
                    len(seen),
                )
                break
            if page >= (most_pages if most_pages is not None else _MAX_PAGES):
                raise ApiError(
                    f"the cluster list does not end: still has_next after {page} pages "
                    f"(its totals allow {most_pages if most_pages is not None else _MAX_PAGES})"
                )
            page += 1
        self._transport.pacer.planned = 0
        return list(seen.values())

    def _list_page(self, page: int) -> Any:
        """One page of the list, normalized; `ApiError` when it cannot be read."""
        params = {"page": str(page), "limit": str(self.page_size)}
        try:
            response, _ = self._get("/clusters", params, None)
        except Transient as exc:
            raise ApiError(
                f"listing clusters failed on page {page}: {exc.reason}", status=exc.status
            ) from None
        except Final as exc:
            raise ApiError(f"listing clusters failed on page {page}: {exc.reason}") from None
        if response.status != 200:
            raise ApiError(
                f"listing clusters failed on page {page}: HTTP {response.status} "
                f"{error_summary(response.body)}".rstrip(),
                status=response.status,
                body=redact_text(response.body.decode("utf-8", "replace")).encode(),
            )
        try:
            # Lists are small: parse again, exactly, so hourly_rate never sees a float.
            return normalize_list_page(redact_document(parse_json(response.body)))
        except NormalizeError as exc:
            raise ApiError(f"listing clusters failed on page {page}: {exc}") from None

    # ------------------------------------------------------------------ details

    def _plan(self, items: Iterable[str | dict[str, Any]]) -> tuple[list[str], list[FetchResult]]:
        """Order the clusters (running, error, then the rest; newest change first) and skip
        what the request budget cannot reach within retry_max_seconds."""
        summaries: dict[str, dict[str, Any]] = {}
        for item in items:
            summary = {"id": item} if isinstance(item, str) else item
            summaries.setdefault(str(summary["id"]), summary)
        order = sorted(summaries, key=lambda cid: _priority(summaries[cid]))
        capacity = self._transport.pacer.capacity(self.retry_max_seconds)
        if capacity is None or capacity >= len(order):
            return order, []
        reason = (
            f"request budget exhausted: {len(order)} clusters need more requests than the "
            f"{capacity} the rate limit allows within retry_max_seconds="
            f"{self.retry_max_seconds:g}; fetched running and recently changed clusters first"
        )
        skipped = [FetchResult.skipped(cluster_id=cid, reason=reason) for cid in order[capacity:]]
        return order[:capacity], skipped

    def _detail_params(self) -> dict[str, str]:
        params = dict(DETAIL_PARAMS)
        if self.include_logs:
            params["include_logs"] = "true"
        return params

    def fetch_detail(self, cluster_id: str) -> FetchResult:
        """Fetch, redact, normalize and validate one cluster's detail (`validate.py`).

        An id that is not a plain path segment fails without a request. Raises `AuthError` on
        401/403.
        """
        problem = cluster_id_problem(cluster_id)
        if problem is not None:
            return FetchResult.failed(cluster_id=cluster_id, reason=problem)
        path = "/clusters/" + quote(cluster_id, safe="")
        try:
            response, attempts = self._get(path, self._detail_params(), cluster_id)
        except OverBudget as exc:
            return FetchResult.skipped(
                cluster_id=cluster_id,
                reason="request budget exhausted: the next request could only go out after "
                f"waiting longer than retry_max_seconds={self.retry_max_seconds:g}",
                attempts=exc.attempts - 1,
            )
        except Transient as exc:
            attempts = exc.attempts
            raw = redact_text(exc.body.decode("utf-8", "replace")).encode() if exc.body else None
            reason = f"gave up after {attempts} attempt{'s' * (attempts != 1)}: {exc.reason}"
            halted = self.halted()
            return FetchResult.failed(
                cluster_id=cluster_id,
                reason=f"{halted} ({reason})" if halted else reason,
                raw_body=raw,
                http_status=exc.status,
                attempts=attempts,
            )
        except RequestFailed as exc:  # Final: too large, nested too deep, halted
            return FetchResult.failed(
                cluster_id=cluster_id,
                reason=exc.reason,
                http_status=exc.status,
                attempts=exc.attempts,
            )
        if response.status != 200:
            raw = redact_text(response.body.decode("utf-8", "replace")).encode()
            reason = f"HTTP {response.status} {error_summary(response.body)}".rstrip()
            if response.status == 404:
                return FetchResult.gone(
                    cluster_id=cluster_id, reason=reason, raw_body=raw, attempts=attempts
                )
            return FetchResult.failed(
                cluster_id=cluster_id,
                reason=reason,
                raw_body=raw,
                http_status=response.status,
                attempts=attempts,
            )
        return self._result(cluster_id, response, attempts)

    def _result(self, cluster_id: str, response: _Response, attempts: int) -> FetchResult:
        """A 200's processed detail (`Processed`, made by the worker that fetched it or by a
        worker process) as the cluster's outcome: "ok", or "failed" with the reason."""
        done = response.doc
        assert isinstance(done, Processed)
        if done.failure is not None:
            return FetchResult.failed(
                cluster_id=cluster_id,
                reason=done.failure,
                raw_body=done.raw,
                http_status=200,
                attempts=attempts,
                provider_date=response.date if done.outside_contract else None,
            )
        detail = done.detail
        assert detail is not None and done.raw_gzip is not None
        if detail.cluster_id != cluster_id:
            return FetchResult.failed(
                cluster_id=cluster_id,
                reason=f"malformed detail: asked for {cluster_id}, the response is for "
                f"{detail.cluster_id}",
                raw_body=decompress(done.raw_gzip),
                http_status=200,
                attempts=attempts,
            )
        return FetchResult.ok(
            cluster_id=cluster_id,
            detail=detail,
            raw_gzip=done.raw_gzip,
            attempts=attempts,
            provider_date=response.date,
        )

    def fetch_details(
        self,
        cluster_ids_or_summaries: Iterable[str | dict[str, Any]],
        *,
        backlog: int | None = None,
    ) -> Generator[FetchResult, None, None]:
        """Yield one FetchResult per distinct cluster, in the order they complete.

        At most `concurrency` requests are in flight, and at most `backlog` more results
        (default `QUEUED_PER_WORKER` per worker) wait finished or queued: new requests start
        only as results are taken (backpressure; this is what bounds the snapshot's memory).
        Raises `AuthError` (after cancelling the rest) when the provider refuses the key.
        """
        if backlog is None:
            backlog = QUEUED_PER_WORKER * self.concurrency
        targets, skipped = self._plan(cluster_ids_or_summaries)
        pacer = self._transport.pacer
        pacer.planned = len(targets)
        for result in skipped:
            self._emit("skipped", result.cluster_id)
            yield result
        if not targets:
            return
        aborted = self._transport.aborted
        aborted.clear()
        workers = None
        if self.processes and len(targets) >= PROCESSES_FROM:
            try:
                workers = self._processes = ParseWorkers(self.processes, tuple(known_secrets()))
            except OSError as exc:  # no process could start (limits, memory): the threads do it
                _log.warning("no parsing process could start (%s); parsing in the threads", exc)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="gpucost-api")
        # Each request, when done, puts its future here: the consumer takes them in completion
        # order without waiting on every pending future at once (`wait(FIRST_COMPLETED)` locks
        # and unlocks all of them per result).
        finished: SimpleQueue[Future[FetchResult]] = SimpleQueue()
        in_flight = 0
        todo = iter(targets)
        over_budget = False
        try:

            def refill() -> None:
                # `concurrency` workers run; `backlog` more wait queued or finished, so no
                # worker idles while the consumer handles a result. Nothing more: that is the
                # backpressure.
                nonlocal in_flight
                while in_flight < self.concurrency + max(backlog, 0):
                    cid = next(todo, None)
                    if cid is None:
                        return
                    pool.submit(self.fetch_detail, cid).add_done_callback(finished.put)
                    in_flight += 1

            refill()
            while in_flight:
                future = finished.get()
                in_flight -= 1
                result = future.result()
                if result.outcome == "skipped":
                    over_budget = True
                self._emit("done" if result.outcome == "ok" else result.outcome, result.cluster_id)
                yield result
                halted = self.halted()
                if halted is not None:
                    # Provider down or deadline passed: the rest fail at once, not one by one.
                    for cid in todo:
                        self._emit("failed", cid)
                        yield FetchResult.failed(cluster_id=cid, reason=halted)
                if over_budget:
                    # The budget will not come back in time: the rest are skipped, not tried.
                    for cid in todo:
                        self._emit("skipped", cid)
                        yield FetchResult.skipped(
                            cluster_id=cid,
                            reason="request budget exhausted: waiting for the rate-limit reset "
                            f"would exceed retry_max_seconds={self.retry_max_seconds:g}",
                        )
                refill()
        finally:
            aborted.set()
            pool.shutdown(wait=True, cancel_futures=True)
            aborted.clear()
            self._processes = None
            if workers is not None:
                workers.close()
