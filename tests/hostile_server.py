"""A hostile provider of the test suite's own, separate from the simulator: real HTTP on loopback.

It serves whatever its `route(path, query)` returns, starting from the contract's own examples
(`cluster_detail.json`, `cluster_list.json`), so that a test can make the provider lie in one
precise way (echo the key in a 401 message or in a description, send a broken body, sign URLs)
without teaching the simulator to misbehave.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.shared import api_example

Route = Callable[[str, dict[str, list[str]], str], tuple[int, bytes | dict[str, Any] | list[Any]]]
"""`route(path, query, authorization) -> (status, body)`; a dict or list is sent as JSON."""


def example_detail(cluster_id: str, **changes: Any) -> dict[str, Any]:
    """The contract's example detail (wrapped) for `cluster_id`, with top-level `changes`."""
    doc = json.loads(api_example("cluster_detail.json").read_text(encoding="utf-8"))
    data = copy.deepcopy(doc["data"])
    data["id"] = cluster_id
    data.update(changes)
    return {"success": True, "data": data}


def example_list(ids: list[str]) -> dict[str, Any]:
    """One page listing `ids`, each summary the contract's example with that id."""
    doc = json.loads(api_example("cluster_list.json").read_text(encoding="utf-8"))
    summary = doc["data"]["clusters"][0]
    clusters = [{**summary, "id": cid, "name": f"name-{cid}"} for cid in ids]
    pagination = {"page": 1, "limit": 100, "total": len(ids), "total_pages": 1, "has_next": False}
    return {"success": True, "data": {"clusters": clusters, "pagination": pagination}}


@contextmanager
def serve(route: Route) -> Iterator[str]:
    """Run the hostile provider on a free loopback port; yield its base URL (`.../v1`)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server protocol
            parts = urlsplit(self.path)
            path = parts.path.removeprefix("/v1")
            status, body = route(path, parse_qs(parts.query), self.headers.get("Authorization", ""))
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
