"""The provider API over httpx: list, details, retries, pacing, guards, variants.

    with ApiClient.from_config(config) as client:
        summaries = client.list_clusters()
        for result in client.fetch_details(summaries):   # FetchResult, as they complete
            ...

- Pagination with or without a `pagination` object (without: page until a page is short);
  duplicates across pages are removed by id.
- Details are fetched by a pool of `concurrency` worker threads sharing one keep-alive
  `httpx.Client`; each worker also parses (orjson; the stdlib parser for what orjson refuses,
  and again with `Decimal` when money arrives as JSON numbers), redacts and normalizes its
  response, so the consumer receives normalized details (the snapshot tables' columns, from the
  redacted document: `normalize.NormalizedDetail`). The iterator
  submits new work only as results are taken, which bounds memory (backpressure).
- Rate limit: the `X-RateLimit-*` headers of every response feed a shared pacer. While the
  requests still to make fit in the remaining budget, requests go out at once; when they do not,
  the remaining budget is spread over the time to the reset, so a well-behaved run sees few or
  no 429s. A 429 waits exactly `Retry-After` (and holds every worker until then). When the
  fleet needs more requests than the budget allows within `retry_max_seconds`, running and
  recently changed clusters are fetched first and the rest come back as outcome "skipped".
- Retries (tenacity: exponential backoff with full jitter, total sleep bounded by
  `retry_max_seconds`) for 429, 500, 502, 503, 504, timeouts, connection errors and truncated
  bodies; an unparsable body is retried once. Never for 400/401/403/404/409/422.
  401/403 raise `AuthError`; 404 on a detail is outcome "gone".
- Guards: per-request timeout, maximum response size (streamed, aborted beyond it), malformed
  responses -> outcome "failed" with the reason and the redacted raw body.
- The API key lives only in the Authorization header of the httpx client: it is not an attribute
  of ApiClient, never in a URL, a log line, an exception or a repr.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import tenacity

from pipeline.config import Config, check_api_url, read_api_key
from pipeline.errors import ApiError, AuthError, ConfigError
from pipeline.log import get_logger
from pipeline.normalize import (
    MAX_NESTING,
    InexactMoneyError,
    NormalizedDetail,
    NormalizeError,
    check_nesting,
    dump_json,
    normalize_detail,
    normalize_list_page,
    parse_json,
)
from pipeline.redact import redact_document, redact_text, register_secret
from pipeline.validate import ContractError, cluster_id_problem, validate_detail

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
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# An unparsable 200 is most often a body cut short in transit: one more try, not a backoff
# schedule (a provider that sends broken JSON for a cluster sends it every time).
MALFORMED_RETRIES = 1
_BACKOFF_MULTIPLIER = 0.5
_BACKOFF_MAX = 30.0
# Exponential backoff with full jitter: workers that failed together do not retry together.
_BACKOFF = tenacity.wait_random_exponential(multiplier=_BACKOFF_MULTIPLIER, max=_BACKOFF_MAX)
# Pages beyond what the list's own total needs (clusters created while paging shift items).
_EXTRA_PAGES = 2
# Without any total from the provider: a last bound (a million clusters at 100 a page).
_MAX_PAGES = 10_000
_STATUS_RANK = {"running": 0, "error": 1}
# Requests submitted beyond those running, per worker (each finished one holds its document).
QUEUED_PER_WORKER = 1

OnEvent = Callable[[str, str], None]
_log = get_logger("client")


@dataclass
class FetchResult:
    """What became of one cluster's detail request (docs/architecture.md)."""

    cluster_id: str
    outcome: str  # "ok" | "gone" (404) | "failed" | "skipped" (request budget)
    detail: NormalizedDetail | None  # the snapshot tables' columns when ok (from the redacted doc)
    raw_body: bytes | None  # the response body, redacted
    http_status: int | None
    reason: str | None  # why it failed / was gone / was skipped
    attempts: int  # requests made for this cluster (retries = attempts - 1)
    # The response's HTTP `Date` header: the provider's clock, for the snapshot's time checks.
    provider_date: str | None = None


def _fast_loads(body: bytes) -> Any:
    """Parse a 200 body quickly: orjson, numbers as floats (money is checked afterwards).

    orjson refuses a few things the JSON grammar or the stdlib allow (NaN, lone surrogates,
    numbers beyond a double): those bodies go through the stdlib parser, so both accept the
    same documents; ValueError when neither can parse it. A document nested deeper than
    `normalize.MAX_NESTING` raises `NormalizeError` (orjson stops at 1024 levels, the stdlib
    parser at the recursion limit: neither may abort the run).
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            doc = json.loads(body)
        except RecursionError:
            raise NormalizeError(f"nested deeper than {MAX_NESTING} levels") from None
    check_nesting(doc)
    return doc


def _fast_dumps(doc: Any) -> bytes:
    """Compact JSON of a parsed body; what orjson cannot write (an integer beyond 64 bits from
    the stdlib fallback) goes through `dump_json`."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        return dump_json(doc)


@dataclass
class ClientStats:
    """Counters over the client's life: requests sent, retries, 429s received, and seconds
    spent waiting (backoff, Retry-After and pacing, summed over the workers)."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    waited_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: float) -> None:
        """Add to counters from any worker thread."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class _Failure(Exception):
    """A request that did not produce a usable response; `attempts` is set by `_request`."""

    attempts = 0


class _Transient(_Failure):
    """A failure worth retrying; `reason` is safe to record (no key, no body)."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        body: bytes | None = None,
        malformed: bool = False,
    ):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.body = body
        self.malformed = malformed


class _Final(_Failure):
    """A failure not worth retrying (response too large)."""

    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class _OverBudget(_Failure):
    """The next request could only go out after waiting longer than retry_max_seconds."""


class _Halted(_Final):
    """The run stopped sending: the circuit breaker is open or the run deadline passed."""


@dataclass
class _Response:
    status: int
    body: bytes
    doc: Any = None  # parsed JSON of a 200
    date: str | None = None  # the HTTP Date header


class _Breaker:
    """Opens when `failures` requests in a row failed over at least `seconds` (thread-safe).

    Once open it stays open for the run: the provider is plainly down, and the next night
    tries again.
    """

    def __init__(self, failures: int, seconds: float, clock: Callable[[], float]):
        self.failures = failures
        self.seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._streak = 0
        self._since: float | None = None
        self.reason: str | None = None  # set when open

    def success(self) -> None:
        with self._lock:
            self._streak = 0
            self._since = None

    def failure(self, what: str) -> bool:
        """Count one failed request; True when this one opened the breaker."""
        with self._lock:
            if self.reason is not None:
                return False
            now = self._clock()
            self._streak += 1
            if self._since is None:
                self._since = now
            if self._streak >= self.failures and now - self._since >= self.seconds:
                self.reason = (
                    f"provider unavailable: {self._streak} requests in a row failed over "
                    f"{now - self._since:.0f} s (last: {what}); circuit breaker open"
                )
                return True
            return False


def _header_float(headers: httpx.Headers, name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _retry_after(headers: httpx.Headers, now: float) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP date."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class _Pacer:
    """Shared rate-limit state from the `X-RateLimit-*` headers; decides when a request goes.

    It tracks one window: its reset time and the requests left in it, counting its own
    reservations at once (responses of requests in flight arrive later). When the budget is
    used up, the next window is opened speculatively just after the reset, assumed to last a
    full window from then (a provider may start it only at the next request); headers of
    responses from a window already left behind are ignored.
    """

    def __init__(self, clock: Callable[[], float], sleep: Callable[[float], None]):
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.limit: int | None = None
        self.remaining: int | None = None
        self.reset_at: float | None = None
        self.window: float | None = None
        self.opens_at = 0.0  # no request of the tracked window goes before this
        self.hold_until = 0.0
        self.next_slot = 0.0
        self.planned = 0  # requests the run still intends to make
        # When the answer to the tracked window's first request arrived: the window cannot
        # have started later, so it resets no later than this plus its length. Reset headers
        # are whole seconds rounded up; with short windows that rounding alone would cost up
        # to a second per window.
        self.first_seen: float | None = None

    def known(self) -> bool:
        return self.remaining is not None and self.reset_at is not None

    def _open_next(self, at: float) -> None:
        self.opens_at = at
        self.reset_at = at + (self.window or 1.0)
        self.remaining = self.limit if self.limit is not None else 1
        self.next_slot = 0.0
        self.first_seen = None

    def _reset(self) -> float:
        """The tracked window's reset: the header's, or earlier when its first answer says so."""
        assert self.reset_at is not None
        if self.first_seen is not None and self.window:
            return min(self.reset_at, self.first_seen + self.window)
        return self.reset_at

    def acquire(self, max_wait: float) -> float:
        """Reserve one request; sleep until it may go. Raises _OverBudget beyond max_wait."""
        with self._lock:
            now = self._clock()
            at = max(now, self.hold_until)
            if self.known():
                assert self.remaining is not None and self.reset_at is not None
                reset = self._reset()
                if now >= reset:
                    self._open_next(now)
                elif self.remaining <= 0:
                    self._open_next(reset + 0.05)
                assert self.remaining is not None and self.reset_at is not None
                at = max(at, self.opens_at)
                if self.planned > self.remaining:
                    # More to do than the budget allows before the reset: spread what is left
                    # evenly between the last scheduled request and the reset.
                    at = max(at, self.next_slot)
                    self.next_slot = at + max(0.0, self._reset() - at) / self.remaining
                if at - now > max_wait:
                    raise _OverBudget()
                self.remaining -= 1
            elif at - now > max_wait:
                raise _OverBudget()
            self.planned = max(0, self.planned - 1)
            delay = at - now
        if delay > 0:
            self._sleep(delay)
        return delay

    def update(self, headers: httpx.Headers, sent_at: float) -> None:
        """Learn from the `X-RateLimit-*` headers of a response to a request sent at `sent_at`."""
        remaining = _header_float(headers, "x-ratelimit-remaining")
        reset = _header_float(headers, "x-ratelimit-reset")
        limit = _header_float(headers, "x-ratelimit-limit")
        window = _header_float(headers, "x-ratelimit-window")
        if remaining is None or reset is None:
            return
        received = self._clock()
        if reset < 1_000_000_000:
            # Some providers send seconds until the reset rather than an epoch time.
            reset += received
        # The first request a window counted (a window may start at its first request).
        first = limit is not None and int(remaining) == int(limit) - 1
        with self._lock:
            if limit is not None:
                self.limit = int(limit)
            if window is not None and window > 0:
                self.window = window
            # Reset times are whole seconds, rounded up, and a window may start at its first
            # request: a reset within this slack of ours is the window we track.
            slack = min(1.5, (self.window or 3.0) / 2)
            if self.reset_at is None or self.remaining is None or reset > self.reset_at + slack:
                self.reset_at = reset
                self.remaining = int(remaining)
                self.opens_at = 0.0
                self.next_slot = 0.0
                self.first_seen = received if first else None
            elif sent_at >= self.opens_at:
                # The window we track: our own count already includes requests in flight, the
                # provider's reset is the better one (a sliding window frees slots earlier).
                self.remaining = min(self.remaining, int(remaining))
                self.reset_at = reset
                if first:
                    self.first_seen = received
            # else: the answer to a request sent before the tracked window opened.

    def hold(self, seconds: float) -> None:
        """After a 429: no worker sends anything for `seconds`."""
        with self._lock:
            self.hold_until = max(self.hold_until, self._clock() + seconds)

    def capacity(self, horizon: float) -> int | None:
        """Requests the budget allows from now to now + horizon; None when unknown."""
        with self._lock:
            if not self.known() or self.limit is None:
                return None
            assert self.remaining is not None and self.reset_at is not None
            now = self._clock()
            if now >= self.reset_at:
                return None  # the window is over: the next answer will tell
            total = self.remaining
            until_reset = self.reset_at - now
            if until_reset <= horizon:
                resets = 1
                if self.window:
                    resets += int((horizon - until_reset) // self.window)
                total += resets * self.limit
            return total


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


def _error_summary(body: bytes) -> str:
    """`CODE: message` from a contract error body, redacted; empty when it is not one."""
    try:
        doc = parse_json(body)
    except NormalizeError:
        return ""
    if not isinstance(doc, dict):
        return ""
    code, message = doc.get("error"), doc.get("message")
    text = " ".join(str(p) for p in (code, message) if p)
    return redact_text(text)[:200]


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
    ):
        """Build a client for `base_url` (e.g. `https://api.example-gpu.cloud/v1`).

        `transport` replaces the network (tests pass `httpx.MockTransport`); `sleep` and `clock`
        (wall-clock epoch seconds, as `X-RateLimit-Reset` is) are injectable for the same
        reason. `on_event(kind, cluster_id)` is told "done", "failed", "gone", "skipped" from
        the iterating thread and "retry" from the worker that retries.

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
        self.on_event = on_event
        self.stats = ClientStats()
        self._abort = threading.Event()
        # Set when the breaker opens or the deadline passes: every wait ends, nothing is sent.
        self._halt = threading.Event()
        self.run_deadline_seconds = run_deadline_seconds
        self._deadline = time.monotonic() + run_deadline_seconds
        self._breaker = _Breaker(breaker_failures, breaker_seconds, time.monotonic)
        # By default a wait ends early when the run is aborted (AuthError, consumer gone) or
        # halted, so that shutting the workers down never waits out a backoff or a reset.
        self._sleep_fn = sleep or self._default_sleep
        self._clock = clock
        self._pacer = _Pacer(clock, self._sleep_counted)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
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
        self._abort.set()
        self._http.close()

    # ------------------------------------------------------------------ plumbing

    def _default_sleep(self, seconds: float) -> None:
        # Not past the deadline; the halt event is also set by an abort.
        seconds = min(seconds, max(0.0, self._deadline - time.monotonic()))
        if seconds > 0:
            self._halt.wait(seconds)

    def halted(self) -> str | None:
        """Why nothing more is sent (breaker open, deadline passed, aborted), or None."""
        if self._breaker.reason is not None:
            return self._breaker.reason
        if time.monotonic() >= self._deadline:
            self._halt.set()
            return (
                f"run deadline reached: api.run_deadline_seconds={self.run_deadline_seconds:g} "
                "passed before this cluster could be read"
            )
        if self._abort.is_set():
            return "the run was aborted"
        return None

    def _failed_request(self, what: str) -> None:
        if self._breaker.failure(what):
            _log.warning("%s", self._breaker.reason)
            self._halt.set()

    def _sleep_counted(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.add(waited_seconds=seconds)
            self._sleep_fn(seconds)

    def _emit(self, kind: str, cluster_id: str) -> None:
        if self.on_event is not None:
            self.on_event(kind, cluster_id)

    def _send(self, path: str, params: dict[str, str]) -> _Response:
        """One request: pace, send, read at most max_response_bytes, classify the status."""
        halted = self.halted()
        if halted is not None:
            raise _Halted(halted)
        self._pacer.acquire(
            min(self.retry_max_seconds, max(0.0, self._deadline - time.monotonic()))
        )
        self.stats.add(requests=1)
        sent_at = self._clock()
        started = time.monotonic()
        try:
            with self._http.stream("GET", path, params=params) as resp:
                self._pacer.update(resp.headers, sent_at)
                declared = resp.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.max_response_bytes:
                    raise _Final(
                        f"response of {declared} bytes exceeds max_response_bytes="
                        f"{self.max_response_bytes}",
                        resp.status_code,
                    )
                chunks, size = [], 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        raise _Final(
                            f"response exceeds max_response_bytes={self.max_response_bytes}",
                            resp.status_code,
                        )
                    if time.monotonic() - started > self.timeout:
                        self._failed_request("a body too slow")
                        raise _Transient(f"timed out after {self.timeout:g} s reading the body")
                    chunks.append(chunk)
                status, headers = resp.status_code, resp.headers
        except httpx.TimeoutException as exc:
            self._failed_request("a timeout")
            raise _Transient(f"timeout ({type(exc).__name__})") from None
        except httpx.RemoteProtocolError as exc:
            # Also a body shorter than its Content-Length: truncated in transit.
            self._failed_request("a broken connection")
            raise _Transient(f"connection broken: {exc}") from None
        except httpx.TransportError as exc:
            self._failed_request("a connection error")
            raise _Transient(f"connection error ({type(exc).__name__}): {exc}") from None
        if status >= 500:
            self._failed_request(f"HTTP {status}")
        elif status != 429:
            self._breaker.success()
        body = b"".join(chunks)
        if status in (401, 403):
            word = "refused the API key" if status == 401 else "refused permission for the key"
            detail = _error_summary(body)
            raise AuthError(
                f"the provider {word} (HTTP {status}{' ' + detail if detail else ''}) at "
                f"{self.base_url}{path}; check GPUCOST_API_KEY or api.api_key_file"
            )
        if status in TRANSIENT_STATUSES:
            retry_after = None
            if status == 429:
                self.stats.add(throttled=1)
                retry_after = _retry_after(headers, self._clock())
                if retry_after is None:
                    retry_after = self._retry_after_from_body(body)
                if retry_after is not None:
                    self._pacer.hold(retry_after)
            raise _Transient(
                f"HTTP {status} {_error_summary(body)}".rstrip(),
                status=status,
                retry_after=retry_after,
                body=body,
            )
        response = _Response(status, body, date=headers.get("date"))
        if status == 200:
            try:
                # Plain (fast) parse: numbers as floats. Money normally arrives as strings and
                # becomes Decimal from them; an amount sent as a JSON number makes the caller
                # parse again with parse_json (InexactMoneyError), so it never goes via a float.
                response.doc = _fast_loads(body)
            except NormalizeError as exc:
                raise _Final(f"malformed response: {exc}", status) from None
            except (ValueError, UnicodeDecodeError) as exc:
                reason = f"invalid JSON: {exc}"
                raise _Transient(reason, status=status, body=body, malformed=True) from None
        return response

    @staticmethod
    def _retry_after_from_body(body: bytes) -> float | None:
        try:
            doc = parse_json(body)
            value = doc.get("details", {}).get("retry_after")
            return max(0.0, float(value)) if value is not None else None
        except (NormalizeError, AttributeError, TypeError, ValueError):
            return None

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return exc.retry_after  # exactly what the provider asked for
        return float(_BACKOFF(state))

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        if self.halted() is not None:
            return True
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.malformed:
            return state.attempt_number > MALFORMED_RETRIES
        return state.idle_for + (state.upcoming_sleep or 0.0) > self.retry_max_seconds

    def _request(
        self, path: str, params: dict[str, str], cluster_id: str | None
    ) -> tuple[_Response, int]:
        """`_send` with retries: (last response, attempts), or raises the last failure with
        its `attempts` attribute set."""
        attempts = 0

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            reason = exc.reason if isinstance(exc, _Transient) else repr(exc)
            self.stats.add(retries=1)
            _log.debug(
                "retrying %s after %s (attempt %d), waiting %.1f s",
                cluster_id or path,
                reason,
                state.attempt_number,
                state.upcoming_sleep,
            )
            if cluster_id is not None:
                self._emit("retry", cluster_id)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            wait=self._wait,
            stop=self._stop,
            sleep=self._sleep_counted,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    response = self._send(path, params)
        except _Failure as exc:
            exc.attempts = attempts
            raise
        return response, attempts

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
        self._pacer.planned = 0
        return list(seen.values())

    def _list_page(self, page: int) -> Any:
        """One page of the list, normalized; `ApiError` when it cannot be read."""
        params = {"page": str(page), "limit": str(self.page_size)}
        try:
            response, _ = self._request("/clusters", params, None)
        except _Transient as exc:
            raise ApiError(
                f"listing clusters failed on page {page}: {exc.reason}", status=exc.status
            ) from None
        except _Final as exc:
            raise ApiError(f"listing clusters failed on page {page}: {exc.reason}") from None
        if response.status != 200:
            raise ApiError(
                f"listing clusters failed on page {page}: HTTP {response.status} "
                f"{_error_summary(response.body)}".rstrip(),
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
        capacity = self._pacer.capacity(self.retry_max_seconds)
        if capacity is None or capacity >= len(order):
            return order, []
        reason = (
            f"request budget exhausted: {len(order)} clusters need more requests than the "
            f"{capacity} the rate limit allows within retry_max_seconds="
            f"{self.retry_max_seconds:g}; fetched running and recently changed clusters first"
        )
        skipped = [
            FetchResult(cid, "skipped", None, None, None, reason, 0) for cid in order[capacity:]
        ]
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
            return FetchResult(cluster_id, "failed", None, None, None, problem, 0)
        path = "/clusters/" + quote(cluster_id, safe="")
        try:
            response, attempts = self._request(path, self._detail_params(), cluster_id)
        except _OverBudget as exc:
            return FetchResult(
                cluster_id,
                "skipped",
                None,
                None,
                None,
                "request budget exhausted: the next request could only go out after waiting "
                f"longer than retry_max_seconds={self.retry_max_seconds:g}",
                exc.attempts - 1,
            )
        except _Transient as exc:
            attempts = exc.attempts
            raw = redact_text(exc.body.decode("utf-8", "replace")).encode() if exc.body else None
            reason = f"gave up after {attempts} attempt{'s' * (attempts != 1)}: {exc.reason}"
            halted = self.halted()
            return FetchResult(
                cluster_id,
                "failed",
                None,
                raw,
                exc.status,
                f"{halted} ({reason})" if halted else reason,
                attempts,
            )
        except _Final as exc:
            return FetchResult(
                cluster_id,
                "failed",
                None,
                None,
                exc.status,
                exc.reason,
                exc.attempts,
            )
        if response.status != 200:
            raw = redact_text(response.body.decode("utf-8", "replace")).encode()
            summary = _error_summary(response.body)
            if response.status == 404:
                return FetchResult(
                    cluster_id, "gone", None, raw, 404, f"HTTP 404 {summary}".rstrip(), attempts
                )
            return FetchResult(
                cluster_id,
                "failed",
                None,
                raw,
                response.status,
                f"HTTP {response.status} {summary}".rstrip(),
                attempts,
            )
        doc = redact_document(response.doc)
        raw = None
        try:
            try:
                raw = _fast_dumps(doc)
                detail = normalize_detail(doc, exact_money=True)
            except InexactMoneyError:
                # Money sent as JSON numbers: the exact path (Decimal from the text).
                doc = redact_document(parse_json(response.body))
                raw = dump_json(doc)
                detail = normalize_detail(doc)
            # Before anything is written: values outside the contract fail this cluster.
            validate_detail(detail)
        except ContractError as exc:
            return FetchResult(
                cluster_id,
                "failed",
                None,
                raw,
                200,
                f"outside the contract: {exc}",
                attempts,
                provider_date=response.date,
            )
        except NormalizeError as exc:
            raw = raw if raw is not None else dump_json(doc)
            return FetchResult(
                cluster_id, "failed", None, raw, 200, f"malformed detail: {exc}", attempts
            )
        if detail.cluster_id != cluster_id:
            return FetchResult(
                cluster_id,
                "failed",
                None,
                raw,
                200,
                "malformed detail: asked for "
                f"{cluster_id}, the response is for {detail.cluster_id}",
                attempts,
            )
        return FetchResult(
            cluster_id, "ok", detail, raw, 200, None, attempts, provider_date=response.date
        )

    def fetch_details(
        self, cluster_ids_or_summaries: Iterable[str | dict[str, Any]]
    ) -> Iterator[FetchResult]:
        """Yield one FetchResult per distinct cluster, in the order they complete.

        At most `concurrency` requests are in flight; new ones start as results are taken.
        Raises `AuthError` (after cancelling the rest) when the provider refuses the key.
        """
        targets, skipped = self._plan(cluster_ids_or_summaries)
        self._pacer.planned = len(targets)
        for result in skipped:
            self._emit("skipped", result.cluster_id)
            yield result
        if not targets:
            return
        self._abort.clear()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="gpucost-api")
        pending: set[Future[FetchResult]] = set()
        queue = iter(targets)
        over_budget = False
        try:

            def refill() -> None:
                # `concurrency` workers run; a few more wait queued so no worker idles while
                # the consumer handles a result. Nothing more: that is the backpressure.
                while len(pending) < self.concurrency + QUEUED_PER_WORKER * self.concurrency:
                    cid = next(queue, None)
                    if cid is None:
                        return
                    pending.add(pool.submit(self.fetch_detail, cid))

            refill()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    pending.discard(future)
                    result = future.result()
                    if result.outcome == "skipped":
                        over_budget = True
                    self._emit(
                        "done" if result.outcome == "ok" else result.outcome, result.cluster_id
                    )
                    yield result
                halted = self.halted()
                if halted is not None:
                    # Provider down or deadline passed: the rest fail at once, not one by one.
                    for cid in queue:
                        self._emit("failed", cid)
                        yield FetchResult(cid, "failed", None, None, None, halted, 0)
                if over_budget:
                    # The budget will not come back in time: the rest are skipped, not tried.
                    for cid in queue:
                        result = FetchResult(
                            cid,
                            "skipped",
                            None,
                            None,
                            None,
                            "request budget exhausted: waiting for the rate-limit reset would "
                            f"exceed retry_max_seconds={self.retry_max_seconds:g}",
                            0,
                        )
                        self._emit("skipped", cid)
                        yield result
                refill()
        finally:
            self._abort.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self._abort.clear()
