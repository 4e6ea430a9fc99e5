"""The e-mail channel: one message per recipient per notify, text and HTML, over SMTP.

With `to = "owner"` each event goes to its project's owner (`pipeline.notify.project_owners`),
so an owner reads about their own clusters only; an event whose project has no known owner
e-mail is marked skipped for this channel. With a list of addresses, every routed event goes to
that list in one message. SMTP: `smtp_host`/`smtp_port`, `starttls` (default true) or `ssl`,
`username` + `password_file` when the server wants a login, `ca_file` for a private CA; TLS is
always verified; every step has the channel's timeout.
"""

from __future__ import annotations

import smtplib
import ssl
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, Any

import jinja2

from pipeline.channels import Batch, DeliveryError, read_secret
from pipeline.channels.text import summarize
from pipeline.config import ChannelSettings

if TYPE_CHECKING:
    from pipeline.notify import Pending

_HTML = jinja2.Environment(autoescape=True).from_string(
    "<!doctype html>\n"
    '<html><body style="font-family: Helvetica, Arial, sans-serif; color: #1f2933; '
    'max-width: 640px">\n'
    '<h2 style="font-size: 18px">{{ title }}</h2>\n'
    "<p>Hello{% if recipient %} {{ recipient }}{% endif %}, gpucost found {{ items|length }} "
    'new finding{{ "s" if items|length != 1 }} last night'
    "{% if owner %} about the clusters of your projects{% endif %}.</p>\n"
    '<table style="border-collapse: collapse; width: 100%">\n'
    "{% for s in items %}"
    '<tr><td style="padding: 8px 0; border-top: 1px solid #e4e7eb">'
    "<strong>{{ s.title }}</strong><br>"
    '<span style="font-size: 16px">{{ s.amount }}</span>'
    "{% for line in s.details if line %}<br>"
    '<span style="color: #52606d; font-size: 13px">{{ line }}</span>{% endfor %}'
    "</td></tr>\n{% endfor %}</table>\n"
    '<p style="color: #7b8794; font-size: 12px">Not this one? '
    '<code>gpucost recs dismiss REC_ID --reason "..."</code> or '
    "<code>gpucost recs snooze REC_ID --until YYYY-MM-DD</code>.</p>\n"
    "</body></html>\n"
)


def owner_message(
    events: Sequence[dict[str, Any]], *, sender: str, recipients: Sequence[str], owner: bool
) -> EmailMessage:
    """The message for `events`: a plain-text part and an HTML part (values escaped)."""
    summaries = [summarize(e) for e in events]
    count = len(events)
    title = f"gpucost: {count} new finding{'s' if count != 1 else ''}"
    msg = EmailMessage()
    msg["Subject"] = title + (" for your clusters" if owner else "")
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
    lines = [f"gpucost found {count} new finding{'s' if count != 1 else ''} last night.", ""]
    for s in summaries:
        lines.append(f"* {s.title}")
        lines.append(f"  {s.amount}")
        lines += [f"  {d}" for d in s.details if d]
        lines.append("")
    lines.append(
        'Not this one? gpucost recs dismiss REC_ID --reason "..." '
        "or gpucost recs snooze REC_ID --until YYYY-MM-DD"
    )
    msg.set_content("\n".join(lines))
    recipient = recipients[0] if owner else None
    msg.add_alternative(
        _HTML.render(title=title, items=summaries, recipient=recipient, owner=owner),
        subtype="html",
    )
    return msg


def _send(channel: ChannelSettings, msg: EmailMessage) -> None:
    assert channel.smtp_host is not None
    timeout = channel.timeout_seconds
    # TLS is verified, against the system's CAs or the channel's own `ca_file`
    context = ssl.create_default_context(cafile=channel.ca_file)
    try:
        smtp: smtplib.SMTP
        if channel.ssl:
            smtp = smtplib.SMTP_SSL(
                channel.smtp_host,
                channel.smtp_port,
                timeout=timeout,
                context=context,
            )
        else:
            smtp = smtplib.SMTP(channel.smtp_host, channel.smtp_port, timeout=timeout)
        with smtp:
            if channel.starttls and not channel.ssl:
                smtp.starttls(context=context)
            if channel.username and channel.password_file:
                password = read_secret(channel.password_file, "password_file")
                smtp.login(channel.username, password)
            smtp.send_message(msg)
    except smtplib.SMTPResponseException as exc:
        # the code only: the server's text may quote what it was sent
        raise DeliveryError(f"the SMTP server refused ({exc.smtp_code})") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP delivery failed ({type(exc).__name__})") from None


def email_batches(
    channel: ChannelSettings, pending: Sequence[Pending], owners: Mapping[str, str]
) -> Iterator[Batch]:
    """One message per recipient (per owner with `to = "owner"`); unknown owners skipped."""
    assert channel.from_addr is not None
    sender = channel.from_addr
    if not channel.to_owner:
        recipients = list(channel.to)
        msg = owner_message(
            [p.payload for p in pending], sender=sender, recipients=recipients, owner=False
        )
        yield Batch(pending, lambda: _send(channel, msg))
        return
    by_owner: dict[str, list[Pending]] = defaultdict(list)
    unknown: list[Pending] = []
    for p in pending:
        name = p.payload.get("project_name")
        address = owners.get(p.project_id or "") or owners.get(name or "")
        if address:
            by_owner[address].append(p)
        else:
            unknown.append(p)
    for address, items in sorted(by_owner.items()):
        msg = owner_message(
            [p.payload for p in items], sender=sender, recipients=[address], owner=True
        )
        yield Batch(items, lambda msg=msg: _send(channel, msg))  # type: ignore[misc]
    if unknown:
        yield Batch(unknown, lambda: None, skip_reason="no owner e-mail known for the project")
