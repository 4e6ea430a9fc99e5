"""`[notify]`, `[[notify.channels]]`, `[[suppress]]` and `lookback_days`: read as the issue
writes them, and every mistake is exit 2 naming the key."""

from __future__ import annotations

from datetime import date

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config import EVENT_TYPES, load_config
from pipeline.errors import EXIT_USAGE, ConfigError

ISSUE_EXAMPLE = """
[notify]
min_monthly_savings = 100.0

[[notify.channels]]
name = "finops"
kind = "webhook"                  # webhook | slack | email
url = "https://hooks.example.com/gpucost"
secret_file = "/srv/gpucost/hook.secret"   # optional: signs each body

[[notify.channels]]
name = "owners"
kind = "email"
smtp_host = "smtp.example.com"
smtp_port = 587
starttls = true                   # username / password_file when the server wants them
from = "gpucost@example.com"
to = "owner"                      # each project's owner e-mail from the provider, or a list

[[suppress]]
cluster = "gpu-bench-01"
reason = "benchmark reference box"
until = 2027-01-31
"""


def _load(tmp_path, text):
    path = tmp_path / "gpucost.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env={})


def test_the_issues_example_reads_as_written(tmp_path):
    config = _load(tmp_path, ISSUE_EXAMPLE)
    finops, owners = config.notify.channels
    assert config.notify.min_monthly_savings == 100.0
    assert (finops.kind, finops.url, finops.events) == (
        "webhook",
        "https://hooks.example.com/gpucost",
        EVENT_TYPES,
    )
    assert (owners.smtp_host, owners.smtp_port, owners.starttls) == ("smtp.example.com", 587, True)
    assert (owners.from_addr, owners.to_owner) == ("gpucost@example.com", True)
    (entry,) = config.suppress
    assert (entry.cluster, entry.until) == ("gpu-bench-01", date(2027, 1, 31))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[notify]\nmin_monthly_savings = 'lots'\n", r"notify\.min_monthly_savings must be a"),
        ("[notify]\nmin_savings = 1\n", r"unknown configuration key notify\.min_savings"),
        ('[[notify.channels]]\nname = "a"\nkind = "pager"\n', r"notify\.channels\[0\]\.kind"),
        ('[[notify.channels]]\nkind = "slack"\n', r"notify\.channels\[0\]\.name is required"),
        ('[[notify.channels]]\nname = "a"\nkind = "webhook"\n', r"channels\[0\]\.url is required"),
        (
            '[[notify.channels]]\nname = "a"\nkind = "webhook"\nurl = "http://hooks.example.com"\n',
            r"channels\[0\]\.url is plain http to a remote host",
        ),
        (
            '[[notify.channels]]\nname = "a"\nkind = "slack"\nurl = "https://x.example"\n'
            'events = ["recommendation_open"]\n',
            r"channels\[0\]\.events: unknown event 'recommendation_open'",
        ),
        (
            '[[notify.channels]]\nname = "a"\nkind = "email"\nsmtp_host = "h"\n',
            r"channels\[0\]\.from is required",
        ),
        (
            '[[notify.channels]]\nname = "a"\nkind = "email"\nsmtp_host = "h"\nfrom = "a@b"\n'
            'username = "u"\n',
            r"channels\[0\]\.username and password_file go together",
        ),
        (
            '[[notify.channels]]\nname = "a"\nkind = "email"\nsmtp_host = "h"\nfrom = "a@b"\n'
            'to = ["finops"]\n',
            r"channels\[0\]\.to must hold e-mail addresses",
        ),
        (
            '[[notify.channels]]\nname = "a"\nkind = "slack"\nurl = "https://x.example"\n'
            "smtp_port = 25\n",
            r"channels\[0\]\.smtp_port is for email channels",
        ),
        (
            '[[notify.channels]]\nname = "a"\nkind = "slack"\nurl = "https://x.example"\n'
            '[[notify.channels]]\nname = "a"\nkind = "slack"\nurl = "https://y.example"\n',
            r"channels\[1\]\.name 'a' is used by another channel",
        ),
        ('[[suppress]]\nreason = "x"\n', r"suppress\[0\] must name a cluster, a project or a kind"),
        ('[[suppress]]\nkind = "downsize"\n', r"suppress\[0\]\.reason is required"),
        ('[[suppress]]\nkind = "shrink"\nreason = "x"\n', r"suppress\[0\]\.kind must be one of"),
        (
            '[[suppress]]\nkind = "downsize"\nreason = "x"\nuntil = "soon"\n',
            r"suppress\[0\]\.until must be a date",
        ),
        (
            "[thresholds]\nlookback_days = 10\n",
            r"thresholds\.lookback_days must be one of 7, 14, 30",
        ),
    ],
)
def test_a_mistake_is_a_config_error_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as info:
        _load(tmp_path, text)
    assert info.value.exit_code == EXIT_USAGE


def test_notify_exits_2_naming_the_key_and_without_channels(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[notify.channels]]\nname = "a"\nkind = "pager"\n')
    result = CliRunner().invoke(cli, ["notify", "--config", str(bad), "--db", str(tmp_path / "x")])
    assert result.exit_code == 2 and "notify.channels[0].kind" in result.output
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    result = CliRunner().invoke(
        cli, ["notify", "--config", str(empty), "--db", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "no notification channels" in result.output


def test_a_missing_secret_file_is_exit_2_before_anything_is_sent(tmp_path):
    config = tmp_path / "gpucost.toml"
    config.write_text(
        '[[notify.channels]]\nname = "a"\nkind = "webhook"\nurl = "https://x.example"\n'
        f'secret_file = "{tmp_path / "missing.secret"}"\n'
    )
    result = CliRunner().invoke(
        cli, ["notify", "--config", str(config), "--db", str(tmp_path / "x")]
    )
    assert result.exit_code == 2
    assert "notify channel 'a' secret_file" in result.output
