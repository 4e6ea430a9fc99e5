"""A hostile provider of the test suite's own: a small threaded HTTP router on 127.0.0.1.

It shares nothing with `pipeline.simulator` (a provider that lies is not a model of the
provider): each test hands it crafted documents per path and reads back which paths were
requested. Documents are built here with the standard library only.

    provider = HostileProvider({"/v1/clusters": Reply(body=listing(["c1"]))})
    provider.routes["/v1/clusters/c1"] = Reply(body=detail_doc("c1", at))
    with provider.serve() as url:           # http://127.0.0.1:PORT/v1
        ...
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

NOW = object()  # Reply.date: the real current time


@dataclass
class Reply:
    """One HTTP answer: a status, a body (bytes, text, or a JSON-ready value) and headers.
    `date` is the `Date` header: NOW (the default), a datetime, a raw string, or None."""

    body: Any = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    date: Any = NOW

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


Route = Reply | Callable[[dict[str, str]], Reply]


class HostileProvider:
    """Serves `routes` (path without query -> Reply, or a function of the query); anything
    else is a contract 404. Every requested path (with its query) is kept in `requests`."""

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[str] = []
        self._lock = threading.Lock()

    def paths(self) -> list[str]:
        """The requested paths without their queries, in order."""
        with self._lock:
            return [urlsplit(p).path for p in self.requests]

    def _answer(self, raw_path: str) -> Reply:
        with self._lock:
            self.requests.append(raw_path)
        parts = urlsplit(raw_path)
        route = self.routes.get(parts.path)
        if route is None:
            return Reply(
                status=404,
                body={"error": "RESOURCE_NOT_FOUND", "message": "not found", "code": 404},
            )
        if callable(route):
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            return route(query)
        return route

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Run on an ephemeral loopback port in a thread; yields the base URL (`.../v1`)."""
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
                reply = provider._answer(self.path)
                body = reply.encoded()
                self.send_response_only(reply.status)
                if reply.date is NOW:
                    self.send_header("Date", http_date(datetime.now(UTC)))
                elif isinstance(reply.date, datetime):
                    self.send_header("Date", http_date(reply.date))
                elif isinstance(reply.date, str):
                    self.send_header("Date", reply.date)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.daemon = True
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/v1"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


# --------------------------------------------------------------------------- documents


def http_date(dt: datetime) -> str:
    """An HTTP `Date` header value."""
    return format_datetime(dt.astimezone(UTC), usegmt=True)


def iso(dt: datetime) -> str:
    """ISO 8601 with Z, as the contract sends timestamps."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def recent_hour(days_ago: int = 2) -> datetime:
    """A whole hour some days before the real clock: data time that any machine's clock
    (the reference of last resort) accepts."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return now - timedelta(days=days_ago)


def detail_doc(
    cluster_id: str,
    at: datetime,
    *,
    hours: int = 24,
    util: float = 45.0,
    bucket_cost: str | None = "6.90",
    currency: Any = "USD",
    rate: Any = "4.00",
    bucket_from: datetime | None = None,
    gpus: int = 0,
) -> dict[str, Any]:
    """A contract ClusterDetail (wrapped) whose snapshot instant is `at` and whose `hours`
    hourly buckets end at `bucket_from` (default: the hour before `at`)."""
    last = bucket_from or at - timedelta(hours=1)
    points = []
    for k in range(hours):
        t = last - timedelta(hours=hours - 1 - k)
        point: dict[str, Any] = {
            "timestamp": iso(t),
            "status": "running",
            "gpu_utilization": util,
            "gpu_memory_utilization": 30.0,
            "cpu_utilization": 10.0,
            "memory_utilization": 20.0,
        }
        if bucket_cost is not None:
            point["cost"] = bucket_cost
        if gpus:
            point["gpus"] = [
                {
                    "gpu_id": f"gpu-{g}",
                    "utilization": util,
                    "memory_used_gb": 2.0,
                    "power_draw_w": 200.0,
                }
                for g in range(gpus)
            ]
        points.append(point)
    cost: dict[str, Any] = {
        "current_hourly_rate": rate,
        "cost_breakdown": {
            "gpu_cost_per_hour": "3.00",
            "cpu_cost_per_hour": "0.50",
            "storage_cost_per_hour": "0.50",
            "total_cost_to_date": "1000.00",
            "window_cost": "165.60",
        },
        "cost_projections": {"daily": "96.00", "weekly": "672.00", "monthly": "2880.00"},
    }
    if currency is not None:
        cost["currency"] = currency
    return {
        "success": True,
        "data": {
            "id": cluster_id,
            "name": f"cluster {cluster_id}",
            "status": "running",
            "created_at": iso(at - timedelta(days=30)),
            "updated_at": iso(at),
            "configuration": {"gpu_type": "H100", "gpu_count": max(gpus, 1), "region": "eu-1"},
            "metrics": {
                "window": "7d",
                "interval_seconds": 3600,
                "current": {
                    "timestamp": iso(at),
                    "gpu_utilization": util,
                    "gpu_memory_utilization": 30.0,
                    "cpu_utilization": 10.0,
                    "memory_utilization": 20.0,
                },
                "historical": {"data_points": points},
            },
            "cost": cost,
        },
    }


def listing(
    ids: list[str],
    *,
    page: int = 1,
    limit: int = 100,
    total: int | None = None,
    total_pages: int | None = None,
    has_next: bool | None = False,
) -> dict[str, Any]:
    """A contract list page of bare summaries for `ids`."""
    pagination: dict[str, Any] = {"page": page, "limit": limit}
    if total is not None:
        pagination["total"] = total
    if total_pages is not None:
        pagination["total_pages"] = total_pages
    if has_next is not None:
        pagination["has_next"] = has_next
    clusters = [{"id": cid, "name": cid, "status": "running"} for cid in ids]
    return {"success": True, "data": {"clusters": clusters, "pagination": pagination}}


def fleet(provider: HostileProvider, docs: dict[str, dict[str, Any]], **date: Any) -> None:
    """Serve `docs` (id -> detail document) and a one-page list of them."""
    provider.routes["/v1/clusters"] = Reply(body=listing(list(docs), total=len(docs)), **date)
    for cid, doc in docs.items():
        provider.routes[f"/v1/clusters/{cid}"] = Reply(body=doc, **date)
