"""The simulated provider over real HTTP: contract endpoints, auth, rate limit, faults, variants.

    sim = Simulator(fleet, api_key="k", rate_limit=RateLimit(100, 3600),
                    faults=FaultSpec(rates={"error_500": 0.1}), variants=VariantSpec(camel=True))
    with sim.run_in_thread(port=0) as base_url:      # "http://127.0.0.1:PORT/v1"
        httpx.get(f"{base_url}/clusters", headers={"Authorization": "Bearer k"})

Endpoints (CONTRACT.md): `GET /v1/clusters` and `GET /v1/clusters/{id}`; for tests and the CLI
also `GET|POST /_sim/clock` (virtual time: `{"now": ISO}` or `{"advance_hours": n}`),
`GET /_sim/stats` (request counts by path template and status, faults injected by kind and by
cluster, requests per cluster (`detail_attempts`) and per list query, simulator bugs
(`unhandled_errors`, answered 500)) and `POST /_sim/reset` (zero the counters and attempt
numbers). The admin endpoints need the same bearer key and are not rate limited.

Order of checks for an API request: authentication (401/403), rate limit (429, wall-clock fixed
window), a running 429 storm, validation (400), injected faults, then the fleet (404 when the
cluster does not exist at the virtual `now`). `X-RateLimit-Limit/Remaining/Reset/Window` are sent
on every response, as the contract says: an unlimited simulator says so with a limit of
`UNLIMITED_REQUESTS` per hour, which no run reaches. Error bodies follow the contract:
`error, message, code, details, request_id, timestamp` (timestamp in the fleet's virtual time).

HTTP/1.1 with keep-alive on the stdlib threading server: each response is written with one
`send` and TCP_NODELAY, so no Nagle/delayed-ACK stalls; see bench/simulator_throughput.py.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import socket
import socketserver
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.simulator.faults import FaultSpec
from pipeline.simulator.variants import VariantSpec, apply_detail, apply_list

API_PREFIX = "/v1"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
STATUSES = ("pending", "starting", "running", "stopping", "stopped", "error")
SORT_FIELDS = ("created_at", "name", "status", "gpu_count", "cost")
WINDOWS = ("1h", "6h", "24h", "7d")

_ERROR_NAMES = {
    400: ("VALIDATION_ERROR", "Invalid request"),
    401: ("UNAUTHORIZED", "Missing or invalid API key"),
    403: ("FORBIDDEN", "This API key has no read permission"),
    404: ("RESOURCE_NOT_FOUND", "Cluster not found"),
    405: ("METHOD_NOT_ALLOWED", "Method not allowed"),
    429: ("RATE_LIMIT_EXCEEDED", "Too many requests"),
    500: ("INTERNAL_ERROR", "Internal server error"),
    503: ("SERVICE_UNAVAILABLE", "Service temporarily unavailable"),
}
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
# Compact, no circular check (documents are trees): the fastest stdlib encoding.
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
_BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


UNLIMITED_REQUESTS = 1_000_000_000
"""The limit an unlimited simulator announces in `X-RateLimit-Limit` (per hour): never reached."""


@dataclass(frozen=True)
class RateLimit:
    """A real limit in wall-clock time: `requests` per fixed window of `window_seconds`."""

    requests: int
    window_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.requests < 1 or self.window_seconds <= 0:
            raise ValueError("a rate limit needs requests >= 1 and window_seconds > 0")


class _RateLimiter:
    """Fixed window starting at the first request after the previous window ended."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start: float | None = None
        self._used = 0

    def _roll(self, now: float) -> None:
        if self._window_start is None or now >= self._window_start + self.limit.window_seconds:
            self._window_start = now
            self._used = 0

    def take(self) -> tuple[bool, dict[str, str], int]:
        """Consume one request; (allowed, headers, retry_after_seconds)."""
        with self._lock:
            now = self._clock()
            self._roll(now)
            allowed = self._used < self.limit.requests
            if allowed:
                self._used += 1
            return allowed, self._headers(now), self._retry_after(now)

    def peek(self) -> dict[str, str]:
        """The headers without consuming a request."""
        with self._lock:
            now = self._clock()
            if self._window_start is not None:
                self._roll(now)
            return self._headers(now)

    def _reset_at(self, now: float) -> float:
        start = self._window_start if self._window_start is not None else now
        return start + self.limit.window_seconds

    def _retry_after(self, now: float) -> int:
        return max(1, math.ceil(self._reset_at(now) - now))

    def _headers(self, now: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit.requests),
            "X-RateLimit-Remaining": str(max(0, self.limit.requests - self._used)),
            "X-RateLimit-Reset": str(math.ceil(self._reset_at(now))),
            "X-RateLimit-Window": str(
                int(self.limit.window_seconds)
                if float(self.limit.window_seconds).is_integer()
                else self.limit.window_seconds
            ),
        }


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    action: str = "send"  # send | drop | timeout
    delay: float = 0.0


class _ClientError(Exception):
    """A 4xx answer raised from deep inside request handling."""

    def __init__(
        self, status: int, message: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or {}


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _parse_bool(name: str, values: dict[str, list[str]], default: bool) -> bool:
    if name not in values:
        return default
    text = values[name][-1].strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise _ClientError(
        400, f"{name} must be true or false", {"field": name, "value": values[name][-1]}
    )


def _parse_int(
    name: str, values: dict[str, list[str]], default: int, low: int, high: int | None
) -> int:
    if name not in values:
        return default
    raw = values[name][-1]
    try:
        number = int(raw)
    except ValueError:
        raise _ClientError(
            400, f"{name} must be an integer", {"field": name, "value": raw}
        ) from None
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _ClientError(400, f"{name} must be {bound}", {"field": name, "value": raw})
    return number


def _parse_choice(
    name: str, values: dict[str, list[str]], choices: Iterable[str], default: str | None
) -> str | None:
    if name not in values:
        return default
    raw = values[name][-1]
    choices = tuple(choices)
    if raw not in choices:
        raise _ClientError(
            400,
            f"{name} must be one of {', '.join(choices)}",
            {"field": name, "value": raw, "allowed": list(choices)},
        )
    return raw


def _sort_key(field_name: str) -> Callable[[dict[str, Any]], tuple[Any, str]]:
    def key(item: dict[str, Any]) -> tuple[Any, str]:
        value: Any = item.get("hourly_rate" if field_name == "cost" else field_name)
        if field_name == "cost":
            try:
                value = Decimal(str(value))
            except InvalidOperation:
                value = Decimal(0)
        elif field_name == "gpu_count":
            value = int(value or 0)
        else:
            value = "" if value is None else str(value)
        return value, str(item.get("id", ""))

    return key


class Simulator:
    """The provider API served from a `Fleet` (see the module docstring)."""

    def __init__(
        self,
        fleet: Any,
        *,
        api_key: str,
        forbidden_keys: Iterable[str] = (),
        rate_limit: RateLimit | None = None,
        faults: FaultSpec | None = None,
        variants: VariantSpec | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("the simulator needs a non-empty api_key")
        self.fleet = fleet
        self.faults = faults or FaultSpec()
        self.variants = variants or VariantSpec()
        self.rate_limit = rate_limit
        self._api_key = api_key.encode()
        self._forbidden = [k.encode() for k in forbidden_keys]
        # Every response carries the contract's X-RateLimit-* headers, even when unlimited.
        self._limiter = _RateLimiter(rate_limit or RateLimit(UNLIMITED_REQUESTS, 3600.0))
        self._fleet_lock = threading.RLock()
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._sequence = 0
        self._storm_until = 0.0
        self._requests: dict[str, Counter[str]] = defaultdict(Counter)
        self._faults: Counter[str] = Counter()
        self._attempts: Counter[str] = Counter()
        self._list_attempts: Counter[str] = Counter()
        self._fault_attempts: Counter[tuple[datetime, bool, str]] = Counter()
        self._faulted: dict[str, Counter[str]] = defaultdict(Counter)
        self._unhandled = 0
        self._storms = 0

    # -- virtual time and counters -------------------------------------------------------

    def set_clock(self, now: datetime) -> None:
        """Set the fleet's virtual clock (safe while serving)."""
        with self._fleet_lock:
            self.fleet.set_clock(now)

    def advance(self, delta: timedelta) -> None:
        """Advance the fleet's virtual clock (safe while serving)."""
        with self._fleet_lock:
            self.fleet.advance(delta)

    def stats(self) -> dict[str, Any]:
        """Counters: requests by path template and status, faults by kind, detail attempts."""
        with self._stats_lock:
            return {
                "requests": {path: dict(counts) for path, counts in self._requests.items()},
                "requests_total": sum(sum(c.values()) for c in self._requests.values()),
                "faults": dict(self._faults),
                "storms": self._storms,
                "detail_attempts": dict(self._attempts),
                "list_attempts": dict(self._list_attempts),
                "faulted_clusters": {cid: dict(kinds) for cid, kinds in self._faulted.items()},
                "unhandled_errors": self._unhandled,
                "now": _iso(self.fleet.now),
            }

    def reset_stats(self) -> None:
        """Zero every counter and every attempt number (transient faults fire again)."""
        with self._stats_lock:
            self._requests.clear()
            self._faults.clear()
            self._attempts.clear()
            self._list_attempts.clear()
            self._fault_attempts.clear()
            self._faulted.clear()
            self._unhandled = 0
            self._storms = 0
            self._storm_until = 0.0

    def _count(self, path: str, status: int | str) -> None:
        with self._stats_lock:
            self._requests[path][str(status)] += 1

    def _count_fault(self, kind: str, cluster_id: str | None = None) -> None:
        with self._stats_lock:
            self._faults[kind] += 1
            if cluster_id is not None:
                self._faulted[cluster_id][kind] += 1

    def _next_attempt(self, key: str, *, details: bool) -> int:
        counter = self._attempts if details else self._list_attempts
        with self._stats_lock:
            counter[key] += 1
            return counter[key]

    def _next_sequence(self) -> int:
        with self._stats_lock:
            self._sequence += 1
            return self._sequence

    # -- responses -----------------------------------------------------------------------

    def _error(
        self,
        status: int,
        seq: int,
        message: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> _Response:
        name, default_message = _ERROR_NAMES.get(status, ("ERROR", "Error"))
        body = {
            "error": name,
            "message": message or default_message,
            "code": status,
            "details": details or {},
            "request_id": f"req_{seq:016x}",
            "timestamp": _iso(self.fleet.now),
        }
        return _Response(status, json.dumps(body).encode())

    def _json(self, document: Any) -> _Response:
        return _Response(200, _ENCODER.encode(document).encode())

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> _Response:
        """Answer one request (transport-free; the HTTP handler writes what this returns)."""
        seq = self._next_sequence()
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query, keep_blank_values=True)
        template = self._template(path)
        try:
            response = self._dispatch(method, path, template, query, headers, body, seq)
        except Exception:
            # A bug in the fleet or here: answer 500 (not a simulated fault) and say so.
            traceback.print_exc()
            with self._stats_lock:
                self._unhandled += 1
            response = self._error(500, seq, "simulator bug (see its stderr)", {"unhandled": True})
        response.headers.setdefault("X-Request-Id", f"req_{seq:016x}")
        for name, value in self._limiter.peek().items():
            response.headers.setdefault(name, value)
        self._count(
            template,
            response.status
            if response.action == "send"
            else "timeout"
            if response.action == "timeout"
            else "dropped",
        )
        return response

    @staticmethod
    def _template(path: str) -> str:
        if path == f"{API_PREFIX}/clusters":
            return path
        if path.startswith(f"{API_PREFIX}/clusters/") and path.count("/") == 3:
            return f"{API_PREFIX}/clusters/{{id}}"
        if path.startswith("/_sim/"):
            return path
        return "other"

    def _authorized(self, headers: dict[str, str], seq: int) -> _Response | None:
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        presented = token.strip().encode()
        if scheme.lower() == "bearer" and presented:
            if any(hmac.compare_digest(presented, k) for k in self._forbidden):
                return self._error(403, seq)
            if hmac.compare_digest(presented, self._api_key):
                return None
        return self._error(401, seq)

    def _dispatch(
        self,
        method: str,
        path: str,
        template: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        seq: int,
    ) -> _Response:
        denied = self._authorized(headers, seq)
        if denied is not None:
            if template == "other":
                denied = self._error(404, seq, "No such endpoint", {"path": path})
            return denied
        if template.startswith("/_sim/"):
            return self._admin(method, path, body, seq)
        if template == "other":
            return self._error(404, seq, "No such endpoint", {"resource": "route", "path": path})
        if method != "GET":
            return self._error(405, seq, details={"method": method})
        limited = self._rate_limit(seq)
        if limited is not None:
            return limited
        try:
            if template == f"{API_PREFIX}/clusters":
                return self._list(query, seq)
            cluster_id = unquote(path.rsplit("/", 1)[1])
            return self._detail(cluster_id, query, seq)
        except _ClientError as exc:
            return self._error(exc.status, seq, exc.message, exc.details)

    def _rate_limit(self, seq: int) -> _Response | None:
        allowed, limit_headers, retry_after = self._limiter.take()
        if not allowed:
            return self._too_many(seq, retry_after, limit_headers)
        if self.faults.rate("storm_429") > 0:
            now = time.monotonic()
            with self._stats_lock:
                in_storm = now < self._storm_until
                if not in_storm and self.faults.starts_storm(seq):
                    self._storm_until = now + self.faults.storm_seconds
                    self._storms += 1
                    in_storm = True
                remaining = self._storm_until - now
            if in_storm:
                self._count_fault("storm_429")
                return self._too_many(seq, max(1, math.ceil(remaining)), self._limiter.peek())
        return None

    def _too_many(self, seq: int, retry_after: int, limit_headers: dict[str, str]) -> _Response:
        reset = datetime.now(UTC) + timedelta(seconds=retry_after)
        limit = self.rate_limit.requests if self.rate_limit else None
        response = self._error(
            429,
            seq,
            details={
                "limit": limit,
                "remaining": 0,
                "reset_at": _iso(reset),
                "retry_after": retry_after,
            },
        )
        response.headers.update(limit_headers)
        response.headers["Retry-After"] = str(retry_after)
        return response

    def _fault(
        self, key: str, *, details: bool, seq: int, cluster_id: str | None = None
    ) -> tuple[str | None, _Response | None]:
        """The injected fault for this request: (kind, response to send instead or None)."""
        self._next_attempt(key, details=details)
        if not self.faults.active:
            return None, None
        # Faults are armed per simulated night: a transient fault hits its clusters' first
        # attempt again after the virtual clock moves, as a flaky provider does every night.
        with self._stats_lock:
            armed = (self.fleet.now, details, key)
            self._fault_attempts[armed] += 1
            attempt = self._fault_attempts[armed]
        kind = self.faults.request_fault(key, attempt, details=details)
        if kind is None:
            return None, None
        self._count_fault(kind, cluster_id)
        if kind == "deleted":
            return kind, self._error(404, seq, details={"resource": "cluster", "id": cluster_id})
        if kind == "error_500":
            return kind, self._error(500, seq)
        if kind == "error_502":
            return kind, _Response(502, _BAD_GATEWAY_HTML, content_type="text/html")
        if kind == "error_503":
            response = self._error(503, seq)
            response.headers["Retry-After"] = "1"
            return kind, response
        if kind == "timeout":
            return kind, _Response(0, action="timeout", delay=self.faults.timeout_seconds)
        if kind == "drop":
            return kind, _Response(0, action="drop")
        return kind, None  # truncated, invalid_json, slow: alter the normal response

    @staticmethod
    def _corrupt(response: _Response, kind: str | None, slow_seconds: float) -> _Response:
        if kind == "truncated":
            response.body = response.body[: max(1, len(response.body) // 2)]
        elif kind == "invalid_json":
            response.body = response.body.replace(b'"', b"'", 3)
        elif kind == "slow":
            response.delay = slow_seconds
        return response

    def _list(self, query: dict[str, list[str]], seq: int) -> _Response:
        page = _parse_int("page", query, 1, 1, None)
        limit = _parse_int("limit", query, DEFAULT_LIMIT, 1, MAX_LIMIT)
        status = _parse_choice("status", query, STATUSES, None)
        sort_by = _parse_choice("sort_by", query, SORT_FIELDS, "created_at") or "created_at"
        sort_order = _parse_choice("sort_order", query, ("asc", "desc"), "asc") or "asc"
        list_key = f"status={status or ''}&sort_by={sort_by}&sort_order={sort_order}&limit={limit}"
        kind, replacement = self._fault(f"{list_key}&page={page}", details=False, seq=seq)
        if replacement is not None:
            return replacement
        with self._fleet_lock:
            items = self.fleet.list_summaries()
        if status is not None:
            items = [item for item in items if item.get("status") == status]
        items.sort(key=_sort_key(sort_by), reverse=sort_order == "desc")
        total = len(items)
        shift = self.faults.page_shift(list_key, page)
        if shift and shift > self.faults.page_shift(list_key, page - 1):
            self._count_fault("duplicate")
        start = max(0, (page - 1) * limit - shift)
        page_items = items[start : start + limit]
        last_page = page
        while last_page * limit - self.faults.page_shift(list_key, last_page) < total:
            last_page += 1
        pagination = {
            "page": page,
            "limit": limit,
            "total": total + shift,
            "total_pages": max(1, last_page) if total else 0,
            "has_next": page * limit - shift < total,
        }
        page_key = f"{list_key}&page={page}"
        response = self._json(apply_list(page_items, pagination, self.variants, page_key))
        return self._corrupt(response, kind, self.faults.slow_seconds)

    def _detail(self, cluster_id: str, query: dict[str, list[str]], seq: int) -> _Response:
        include_metrics = _parse_bool("include_metrics", query, True)
        include_logs = _parse_bool("include_logs", query, False)
        include_breakdown = _parse_bool("include_cost_breakdown", query, True)
        window = _parse_choice("metrics_window", query, WINDOWS, "1h") or "1h"
        kind, replacement = self._fault(cluster_id, details=True, seq=seq, cluster_id=cluster_id)
        if replacement is not None:
            return replacement
        with self._fleet_lock:
            detail = self.fleet.detail(
                cluster_id,
                window=window,
                include_metrics=include_metrics,
                include_cost_breakdown=include_breakdown,
                include_logs=include_logs,
            )
        if detail is None:
            return self._error(404, seq, details={"resource": "cluster", "id": cluster_id})
        response = self._json(apply_detail(detail, self.variants))
        return self._corrupt(response, kind, self.faults.slow_seconds)

    def _admin(self, method: str, path: str, body: bytes, seq: int) -> _Response:
        if path == "/_sim/stats" and method == "GET":
            return self._json(self.stats())
        if path == "/_sim/reset" and method == "POST":
            self.reset_stats()
            return self._json({"reset": True})
        if path == "/_sim/clock" and method == "GET":
            return self._json({"now": _iso(self.fleet.now)})
        if path == "/_sim/clock" and method == "POST":
            try:
                payload = json.loads(body or b"{}")
                if not isinstance(payload, dict):
                    raise ValueError("the body must be a JSON object")
                if "now" in payload:
                    now = datetime.fromisoformat(str(payload["now"]).replace("Z", "+00:00"))
                    if now.tzinfo is None:
                        raise ValueError("now must carry a time zone (e.g. Z)")
                    self.set_clock(now.astimezone(UTC))
                elif "advance_hours" in payload:
                    self.advance(timedelta(hours=float(payload["advance_hours"])))
                else:
                    raise ValueError('give {"now": ISO} or {"advance_hours": n}')
            except (ValueError, TypeError) as exc:
                return self._error(400, seq, str(exc), {"resource": "clock"})
            return self._json({"now": _iso(self.fleet.now)})
        if path in ("/_sim/stats", "/_sim/reset", "/_sim/clock"):
            return self._error(405, seq, details={"method": method})
        return self._error(404, seq, "No such endpoint", {"resource": "route", "path": path})

    # -- serving -------------------------------------------------------------------------

    def _make_server(self, host: str, port: int) -> _Server:
        self._stop.clear()
        return _Server((host, port), _handler_for(self))

    @contextlib.contextmanager
    def run_in_thread(self, port: int = 0, host: str = "127.0.0.1") -> Iterator[str]:
        """Serve in a background thread; yields the base URL (ending in `/v1`)."""
        server = self._make_server(host, port)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="gpucost-simulator",
            daemon=True,
        )
        thread.start()
        try:
            yield server.base_url
        finally:
            self._stop.set()
            server.shutdown()
            server.close_connections()
            server.server_close()
            thread.join(timeout=5)

    def serve_forever(
        self, host: str = "127.0.0.1", port: int = 0, ready: Callable[[str], None] | None = None
    ) -> None:
        """Serve in this thread until interrupted; `ready(base_url)` is called once bound."""
        server = self._make_server(host, port)
        try:
            if ready is not None:
                ready(server.base_url)
            server.serve_forever(poll_interval=0.2)
        finally:
            self._stop.set()
            server.close_connections()
            server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which can stall for
        # seconds without DNS; loopback needs no name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}{API_PREFIX}"

    def track(self, sock: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            if alive:
                self._connections.add(sock)
            else:
                self._connections.discard(sock)

    def close_connections(self) -> None:
        """Close kept-alive connections so no request is answered after shutdown."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _handler_for(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "gpucost-simulator"
        sys_version = ""
        timeout = 120  # idle keep-alive connections end eventually

        def setup(self) -> None:
            super().setup()
            with contextlib.suppress(OSError):
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.server.track(self.connection, True)  # type: ignore[attr-defined]

        def finish(self) -> None:
            self.server.track(self.connection, False)  # type: ignore[attr-defined]
            with contextlib.suppress(OSError):
                super().finish()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # the stats endpoint counts requests; access logs would only slow tests

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            response = sim.handle(method, self.path, headers, body)
            if response.action == "drop":
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if response.action == "timeout":
                sim._stop.wait(response.delay)
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if response.delay:
                sim._stop.wait(response.delay)
            self._write(response)

        def _write(self, response: _Response) -> None:
            reason = _REASONS.get(response.status, "")
            lines = [
                f"HTTP/1.1 {response.status} {reason}",
                f"Content-Type: {response.content_type}; charset=utf-8"
                if response.content_type.startswith("text/")
                else f"Content-Type: {response.content_type}",
                f"Content-Length: {len(response.body)}",
                f"Date: {self.date_time_string()}",
                f"Server: {self.server_version}",
            ]
            lines += [f"{name}: {value}" for name, value in response.headers.items()]
            if self.close_connection:
                lines.append("Connection: close")
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            try:
                self.wfile.write(head + response.body)
            except OSError:
                self.close_connection = True

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._serve("PUT")

        def do_DELETE(self) -> None:  # noqa: N802
            self._serve("DELETE")

    return Handler
