"""The Slack channel: an incoming-webhook message in Block Kit, short enough for a phone.

One message per `MAX_EVENTS` events: a header, then per event a section (bold title, amount,
evidence) and a context line, separated by dividers. Text is Slack mrkdwn with `&`, `<` and
`>` escaped, so no value from the marts can form a link or a mention.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.channels import Batch, post_json
from pipeline.channels.text import summarize
from pipeline.config import ChannelSettings

if TYPE_CHECKING:
    from pipeline.notify import Pending

# Slack allows 50 blocks per message: a header plus 3 per event
MAX_EVENTS = 15


def escape(text: str) -> str:
    """Slack's mrkdwn escaping (its docs: only &, < and > need it)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The Block Kit message for `events`."""
    count = len(events)
    title = f"gpucost: {count} new finding{'s' if count != 1 else ''}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title}}
    ]
    for i, event in enumerate(events):
        s = summarize(event)
        text = f"*{escape(s.title)}*\n{escape(s.amount)}"
        if s.details and s.details[0] and event["type"] == "recommendation_opened":
            text += f"\n_{escape(s.details[0])}_"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}})
        context = s.details[-1] if s.details else ""
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": escape(context) or " "}]}
        )
        if i + 1 < count:
            blocks.append({"type": "divider"})
    return {"text": title, "blocks": blocks}


def slack_batches(channel: ChannelSettings, pending: Sequence[Pending]) -> Iterator[Batch]:
    """One message per `MAX_EVENTS` pending events."""
    assert channel.url is not None
    url = channel.url
    for start in range(0, len(pending), MAX_EVENTS):
        items = pending[start : start + MAX_EVENTS]
        body = json.dumps(slack_message([p.payload for p in items])).encode("utf-8")

        def send(body: bytes = body) -> None:
            post_json(url, body, {}, channel.timeout_seconds)

        yield Batch(items, send)
