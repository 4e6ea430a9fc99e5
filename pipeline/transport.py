"""How gpucost talks HTTP to the provider: pacing, retries, circuit breaker, deadline, size guard.

    transport = ProviderTransport(httpx.HTTPTransport(limits=...), policy=Policy(...))
    http = httpx.Client(base_url=..., transport=transport)
    response = http.get("/clusters/cls_1", extensions={CLUSTER_ID: "cls_1"})
    response.extensions[ATTEMPTS], response.extensions[DOCUMENT]

An `httpx.BaseTransport` around another (the network's `httpx.HTTPTransport`, or a test's
`httpx.MockTransport`), so the client (`client.py`) only lists, fetches and parses. For every
request it:

- halts before sending when the circuit breaker is open, the run deadline has passed or the
  run was aborted (`Halted`);
- paces: the `X-RateLimit-*` headers of every response feed a shared `Pacer`; a request that
  could only go out after more than `retry_max_seconds` raises `OverBudget`;
- reads the body, at most `max_response_bytes` (declared or streamed: `Final`), within the
  timeout (a body trickling in slower is a timeout);
- retries (tenacity: exponential backoff with full jitter, total sleep bounded by
  `retry_max_seconds`) 429, 500, 502, 503, 504, timeouts, broken connections and truncated
  bodies; a 429 waits exactly `Retry-After` (header, else the body's `details.retry_after`)
  and holds every worker until then. An unparsable 200 (the `parse` hook raised a `Transient`
  with `malformed=True`) is tried once more. Any other status comes back as the response;
- counts every failed request towards the circuit breaker, and every answer that is not a 5xx
  or 429 resets it; counters go to `ClientStats`.

The response it returns carries the body read in full (decoded: no `Content-Encoding` left),
the number of requests made in `extensions[ATTEMPTS]`, and for a 200 what the `parse` hook
returned in `extensions[DOCUMENT]` (parsed once, by the worker that fetched it). Failures are
raised as `RequestFailed` subclasses, with `attempts` set.
"""

from __future__ import annotations

import email.utils
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import tenacity

from pipeline.log import get_logger
from pipeline.normalize import NormalizeError, parse_json
from pipeline.redact import redact_text

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# An unparsable 200 is most often a body cut short in transit: one more try, not a backoff
# schedule (a provider that sends broken JSON for a cluster sends it every time).
MALFORMED_RETRIES = 1
_BACKOFF_MULTIPLIER = 0.5
_BACKOFF_MAX = 30.0
# Exponential backoff with full jitter: workers that failed together do not retry together.
_BACKOFF = tenacity.wait_random_exponential(multiplier=_BACKOFF_MULTIPLIER, max=_BACKOFF_MAX)
# Request extensions the transport reads, response extensions it sets.
CLUSTER_ID = "gpucost.cluster_id"  # request: whose detail (for the "retry" event and logs)
ATTEMPTS = "gpucost.attempts"  # response: requests made (retries = attempts - 1)
DOCUMENT = "gpucost.document"  # response: what `parse` returned for a 200
# Headers describing the body as it travelled; the response handed on carries it decoded.
_TRANSFER_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})

_log = get_logger("client")


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


# ---------------------------------------------------------------------------------- failures


class RequestFailed(Exception):
    """A request that did not produce a usable response; `attempts` is set when it is raised
    out of the transport. `reason` is safe to record (no key, no body)."""

    attempts = 0

    def __init__(self, reason: str, *, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Transient(RequestFailed):
    """A failure worth retrying: 429/5xx (`status`, `body`), timeouts, broken connections,
    an unparsable body (`malformed`)."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        body: bytes | None = None,
        malformed: bool = False,
    ):
        super().__init__(reason, status=status)
        self.retry_after = retry_after
        self.body = body
        self.malformed = malformed


class Final(RequestFailed):
    """A failure not worth retrying (response too large, a document nested too deep)."""


class OverBudget(RequestFailed):
    """The next request could only go out after waiting longer than retry_max_seconds."""

    def __init__(self) -> None:
        super().__init__("request budget exhausted")


class Halted(Final):
    """The run stopped sending: the circuit breaker is open, the deadline passed or aborted."""


# ---------------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Policy:
    """The limits of one run's requests (docs/configuration.md, [api])."""

    timeout: float
    max_response_bytes: int
    retry_max_seconds: float
    run_deadline_seconds: float
    breaker_failures: int
    breaker_seconds: float


class Breaker:
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
        """A good answer: the streak starts again."""
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


def retry_after_seconds(headers: httpx.Headers, now: float) -> float | None:
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


class Pacer:
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
        """Whether a response has told the window's budget yet."""
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
        """Reserve one request; sleep until it may go. Raises OverBudget beyond max_wait."""
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
                    raise OverBudget()
                self.remaining -= 1
            elif at - now > max_wait:
                raise OverBudget()
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


def _retry_after_from_body(body: bytes) -> float | None:
    """`details.retry_after` of a 429's contract error body, when it has one."""
    try:
        doc = parse_json(body)
        value = doc.get("details", {}).get("retry_after")
        return max(0.0, float(value)) if value is not None else None
    except (NormalizeError, AttributeError, TypeError, ValueError):
        return None


def error_summary(body: bytes) -> str:
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


def env_proxy(url: str) -> str | None:
    """The proxy the environment (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, ...) names for
    `url`, or None: what httpx's own client would use when given no transport."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


# ---------------------------------------------------------------------------------- transport


class ProviderTransport(httpx.BaseTransport):
    """Wraps `inner` with pacing, retries, the circuit breaker, the run deadline and the
    response-size guard (the module's docstring says how each works).

    `parse(body, request)` turns a 200 body into a document (raising `Transient(malformed=True)`
    for a body worth one more try, `Final` for one not worth any); `on_retry(cluster_id)` is called
    by the worker that is about to retry a request carrying `extensions[CLUSTER_ID]`; `sleep`
    and `clock` (wall-clock epoch seconds, as `X-RateLimit-Reset` is) are injectable (tests).
    """

    def __init__(
        self,
        inner: httpx.BaseTransport,
        *,
        policy: Policy,
        parse: Callable[[bytes, httpx.Request], Any],
        on_retry: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self._inner = inner
        self.policy = policy
        self._parse = parse
        self._on_retry = on_retry
        self.stats = ClientStats()
        # Set by the client while a fetch is being torn down (AuthError, consumer gone).
        self.aborted = threading.Event()
        # Set when the breaker opens or the deadline passes: every wait ends, nothing is sent.
        self._halt = threading.Event()
        self._deadline = time.monotonic() + policy.run_deadline_seconds
        self.breaker = Breaker(policy.breaker_failures, policy.breaker_seconds, time.monotonic)
        # By default a wait ends early when the run is halted, so that shutting the workers
        # down never waits out a backoff or a reset.
        self._sleep_fn = sleep or self._default_sleep
        self._clock = clock
        self.pacer = Pacer(clock, self._sleep_counted)

    # ------------------------------------------------------------------ state

    def halted(self) -> str | None:
        """Why nothing more is sent (breaker open, deadline passed, aborted), or None."""
        if self.breaker.reason is not None:
            return self.breaker.reason
        if time.monotonic() >= self._deadline:
            self._halt.set()
            return (
                "run deadline reached: api.run_deadline_seconds="
                f"{self.policy.run_deadline_seconds:g} passed before this cluster could be read"
            )
        if self.aborted.is_set():
            return "the run was aborted"
        return None

    def _default_sleep(self, seconds: float) -> None:
        # Not past the deadline; the halt event ends the wait early.
        seconds = min(seconds, max(0.0, self._deadline - time.monotonic()))
        if seconds > 0:
            self._halt.wait(seconds)

    def _sleep_counted(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.add(waited_seconds=seconds)
            self._sleep_fn(seconds)

    def _failed_request(self, what: str) -> None:
        if self.breaker.failure(what):
            _log.warning("%s", self.breaker.reason)
            self._halt.set()

    # ------------------------------------------------------------------ one request

    def _send(self, request: httpx.Request) -> httpx.Response:
        """One request: pace, send, read at most max_response_bytes, classify the status."""
        policy = self.policy
        halted = self.halted()
        if halted is not None:
            raise Halted(halted)
        self.pacer.acquire(
            min(policy.retry_max_seconds, max(0.0, self._deadline - time.monotonic()))
        )
        self.stats.add(requests=1)
        sent_at = self._clock()
        started = time.monotonic()
        limit = policy.max_response_bytes
        try:
            resp = self._inner.handle_request(request)
            try:
                self.pacer.update(resp.headers, sent_at)
                declared = resp.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise Final(
                        f"response of {declared} bytes exceeds max_response_bytes={limit}",
                        status=resp.status_code,
                    )
                chunks, size = [], 0
                # Without a Content-Encoding the stream's bytes are the body: no decoder (the
                # response's own iterators cost more than a small body's parsing).
                raw = resp.stream
                assert isinstance(raw, httpx.SyncByteStream)
                coded = "content-encoding" in resp.headers
                for chunk in resp.iter_bytes() if coded else raw:
                    size += len(chunk)
                    if size > limit:
                        raise Final(
                            f"response exceeds max_response_bytes={limit}",
                            status=resp.status_code,
                        )
                    if time.monotonic() - started > policy.timeout:
                        self._failed_request("a body too slow")
                        raise Transient(f"timed out after {policy.timeout:g} s reading the body")
                    chunks.append(chunk)
            finally:
                resp.close()
        except httpx.TimeoutException as exc:
            self._failed_request("a timeout")
            raise Transient(f"timeout ({type(exc).__name__})") from None
        except httpx.RemoteProtocolError as exc:
            # Also a body shorter than its Content-Length: truncated in transit.
            self._failed_request("a broken connection")
            raise Transient(f"connection broken: {exc}") from None
        except httpx.TransportError as exc:
            self._failed_request("a connection error")
            raise Transient(f"connection error ({type(exc).__name__}): {exc}") from None
        status = resp.status_code
        if status >= 500:
            self._failed_request(f"HTTP {status}")
        elif status != 429:
            self.breaker.success()
        body = b"".join(chunks)
        if status in TRANSIENT_STATUSES:
            retry_after = None
            if status == 429:
                self.stats.add(throttled=1)
                retry_after = retry_after_seconds(resp.headers, self._clock())
                if retry_after is None:
                    retry_after = _retry_after_from_body(body)
                if retry_after is not None:
                    self.pacer.hold(retry_after)
            raise Transient(
                f"HTTP {status} {error_summary(body)}".rstrip(),
                status=status,
                retry_after=retry_after,
                body=body,
            )
        # Plain (fast) parse by the worker that fetched it; the hook says what is malformed.
        extensions = {DOCUMENT: self._parse(body, request)} if status == 200 else {}
        headers = resp.headers
        if "content-encoding" in headers or "transfer-encoding" in headers:
            # The body handed on is decoded and whole: its length is what was read.
            headers = httpx.Headers(
                [(k, v) for k, v in headers.raw if k.lower() not in _TRANSFER_HEADERS]
            )
            headers["content-length"] = str(len(body))
        return httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(body),
            request=request,
            extensions=extensions,
        )

    # ------------------------------------------------------------------ retries

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Transient) and exc.retry_after is not None:
            return exc.retry_after  # exactly what the provider asked for
        return float(_BACKOFF(state))

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        if self.halted() is not None:
            return True
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Transient) and exc.malformed:
            return state.attempt_number > MALFORMED_RETRIES
        return state.idle_for + (state.upcoming_sleep or 0.0) > self.policy.retry_max_seconds

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """`_send` with retries: the last response with `extensions[ATTEMPTS]`, or raises the
        last failure (a `RequestFailed`) with its `attempts` set."""
        cluster_id = request.extensions.get(CLUSTER_ID)
        attempts = 0

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            reason = exc.reason if isinstance(exc, Transient) else repr(exc)
            self.stats.add(retries=1)
            _log.debug(
                "retrying %s after %s (attempt %d), waiting %.1f s",
                cluster_id or request.url.path,
                reason,
                state.attempt_number,
                state.upcoming_sleep,
            )
            if cluster_id is not None and self._on_retry is not None:
                self._on_retry(cluster_id)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Transient),
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
                    response = self._send(request)
        except RequestFailed as exc:
            exc.attempts = attempts
            raise
        response.extensions[ATTEMPTS] = attempts
        return response

    def close(self) -> None:
        """Close the wrapped transport (its connections)."""
        self._inner.close()
