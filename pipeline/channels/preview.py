"""A preview of a Slack Block Kit message as plain HTML (for docs/notify.md's screenshot).

Slack renders Block Kit itself; here the blocks are drawn as simple HTML (header, sections with
*bold* and _italic_ mrkdwn, context lines, dividers), every text escaped, to be photographed with
Playwright and Debian's chromium (`tests/notify_examples.py`).
"""

from __future__ import annotations

import html
import re
from typing import Any

import jinja2

_PAGE = jinja2.Environment(autoescape=False).from_string(  # noqa: S701 - parts escaped below
    "<!doctype html><html><head><meta charset='utf-8'><style>"
    "body{margin:0;background:#f4f4f5;font:15px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,"
    "sans-serif;color:#1d1c1d}"
    ".msg{width:380px;margin:12px;background:#fff;border-radius:8px;padding:14px 16px;"
    "box-shadow:0 1px 3px rgba(0,0,0,.15)}"
    ".app{font-weight:700;margin-bottom:6px}.app small{font-weight:400;color:#616061}"
    "h1{font-size:18px;margin:4px 0 10px}.sec{margin:6px 0}"
    ".ctx{color:#616061;font-size:12px;margin:2px 0 8px}hr{border:0;border-top:1px solid #ddd}"
    "</style></head><body><div class='msg'><div class='app'>gpucost <small>APP</small></div>"
    "{{ body }}</div></body></html>"
)


def _mrkdwn(text: str) -> str:
    """Slack mrkdwn (already &-escaped, as Slack wants it) to HTML: *bold*, _italic_, `code`."""
    safe = html.escape(html.unescape(text), quote=False)
    safe = re.sub(r"\*([^*\n]+)\*", r"<b>\1</b>", safe)
    safe = re.sub(r"(?<![\w])_([^_\n]+)_(?![\w])", r"<i>\1</i>", safe)
    safe = re.sub(r"`([^`\n]+)`", r"<code>\1</code>", safe)
    return safe.replace("\n", "<br>")


def blocks_to_html(message: dict[str, Any]) -> str:
    """The message's blocks as one HTML page (every text escaped)."""
    parts = []
    for block in message.get("blocks", []):
        kind = block.get("type")
        if kind == "header":
            parts.append(f"<h1>{html.escape(block['text']['text'])}</h1>")
        elif kind == "section":
            parts.append(f"<div class='sec'>{_mrkdwn(block['text']['text'])}</div>")
        elif kind == "context":
            text = " ".join(_mrkdwn(e.get("text", "")) for e in block.get("elements", []))
            parts.append(f"<div class='ctx'>{text}</div>")
        elif kind == "divider":
            parts.append("<hr>")
    return _PAGE.render(body="\n".join(parts))
