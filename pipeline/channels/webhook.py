"""The webhook channel: a POST of versioned JSON, signed with HMAC-SHA256 when configured.

Body: `{"version": 1, "source": "gpucost", "events": [...]}` (at most `MAX_EVENTS` events per
POST). With `secret_file`, the header `X-Gpucost-Signature: sha256=<hex HMAC-SHA256 of the raw
body>`; receivers verify it over the bytes received, then dedupe by each event's `id`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from pipeline.channels import Batch, post_json, read_secret
from pipeline.config import ChannelSettings

if TYPE_CHECKING:
    from pipeline.notify import Pending

PAYLOAD_VERSION = 1
MAX_EVENTS = 100
SIGNATURE_HEADER = "X-Gpucost-Signature"


def webhook_body(events: Sequence[dict]) -> bytes:
    """The versioned JSON body for `events` (compact, UTF-8)."""
    document = {"version": PAYLOAD_VERSION, "source": "gpucost", "events": list(events)}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(body: bytes, secret: str) -> str:
    """The signature header value: `sha256=<hex HMAC-SHA256 of body>`."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def webhook_batches(channel: ChannelSettings, pending: Sequence[Pending]) -> Iterator[Batch]:
    """One POST per `MAX_EVENTS` pending events."""
    assert channel.url is not None
    url = channel.url
    for start in range(0, len(pending), MAX_EVENTS):
        items = pending[start : start + MAX_EVENTS]
        body = webhook_body([p.payload for p in items])
        headers = {}
        if channel.secret_file:
            secret = read_secret(channel.secret_file, "secret_file")
            headers[SIGNATURE_HEADER] = sign(body, secret)

        def send(body: bytes = body, headers: dict[str, str] = headers) -> None:
            post_json(url, body, headers, channel.timeout_seconds)

        yield Batch(items, send)
