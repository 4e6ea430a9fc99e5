"""Notification channels: how pending deliveries become messages and are sent.

`send_batches(channel, pending, owners)` cuts a channel's pending deliveries into messages (a
`Batch`: its deliveries and a `send()` that raises `DeliveryError` on failure). Every message is
built from the recorded events (themselves built from the marts), and every send has the
channel's timeout. Modules: `webhook` (signed JSON), `slack` (Block Kit), `email` (SMTP).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import ChannelSettings
from pipeline.errors import ConfigError, GpucostError

if TYPE_CHECKING:
    from pipeline.notify import Pending


class DeliveryError(GpucostError):
    """A channel did not accept a message; the message says why in our own words."""


@dataclass
class Batch:
    """One message: the deliveries it carries, and how to send it (None: skipped, why)."""

    items: Sequence[Pending]
    send: Callable[[], None]
    skip_reason: str | None = None


def read_secret(path: str, what: str) -> str:
    """The first line of a secret file; `ConfigError` (exit 2) naming the key if unusable."""
    try:
        lines = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"{what} {path} is empty")
    return lines[0].strip()


def check_channel_files(channel: ChannelSettings) -> None:
    """Read the channel's secret files once up front, so a missing one is exit 2, not a
    failed delivery."""
    if channel.secret_file:
        read_secret(channel.secret_file, f"notify channel {channel.name!r} secret_file")
    if channel.password_file:
        read_secret(channel.password_file, f"notify channel {channel.name!r} password_file")
    if channel.ca_file and not Path(channel.ca_file).is_file():
        raise ConfigError(f"notify channel {channel.name!r} ca_file {channel.ca_file} is missing")


def send_batches(
    channel: ChannelSettings, pending: Sequence[Pending], owners: Mapping[str, str]
) -> Iterator[Batch]:
    """The messages that carry `pending` on `channel` (owners: project -> e-mail)."""
    if channel.kind == "webhook":
        from pipeline.channels.webhook import webhook_batches

        yield from webhook_batches(channel, pending)
    elif channel.kind == "slack":
        from pipeline.channels.slack import slack_batches

        yield from slack_batches(channel, pending)
    else:
        from pipeline.channels.email import email_batches

        yield from email_batches(channel, pending, owners)


def post_json(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> None:
    """POST `body`; anything but a 2xx answer in time is a `DeliveryError` (status only)."""
    import httpx

    from pipeline import __version__

    try:
        response = httpx.post(
            url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"gpucost/{__version__}",
                **headers,
            },
            timeout=timeout,
            follow_redirects=False,
        )
    except httpx.TimeoutException:
        raise DeliveryError(f"no answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise DeliveryError(f"cannot reach the receiver ({type(exc).__name__})") from None
    if not 200 <= response.status_code < 300:
        # the status only: a response body may echo what it was sent, or the receiver's secrets
        raise DeliveryError(f"the receiver answered HTTP {response.status_code}")
