"""The notify stage against hand-made marts and real receivers on loopback (HTTP, SMTP).

Fixture (tests/models_fixtures.py): cluster c1, 2 GPUs, rate 6.90/h, idle all week -> stop_idle
(6.90 - 0.14) x 720 = 4867.20 and downsize 1 x 3.10 x 720 = 2232.00 per month.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from datetime import date, datetime
from decimal import Decimal

import pytest

from pipeline.config import ChannelSettings, Config, NotifySettings, Suppression
from pipeline.notify import notify_on_connection
from pipeline.recs import decide, list_recommendations
from tests.models_fixtures import DAY, HOUR, T0, D, FixtureDB, hours
from tests.notify_helpers import http_receiver, smtp_server

NOW = datetime(2026, 11, 13, 4, 0)


def _idle_cluster(db: FixtureDB, cid: str, at: datetime, *, project: str = "p-ml", **kw) -> None:
    db.snapshot(cid, at, **kw)
    db.buckets(cid, hours(at - 168 * HOUR, 168), gpus=[(1.0, 8.0)] * 2, cost=D("6.90"))
    db._flush()
    db.con.execute(
        "update snap.cluster_snapshots set project_id = ?, owner_id = ? where cluster_id = ?",
        [project, f"user_{project}", cid],
    )


def _config(*channels: ChannelSettings, min_savings: float = 100.0, **kw) -> Config:
    return Config(notify=NotifySettings(min_monthly_savings=min_savings, channels=channels), **kw)


def _hook(url: str, **kw) -> ChannelSettings:
    return ChannelSettings(name=kw.pop("name", "finops"), kind="webhook", url=url, **kw)


def _rec_id(db: FixtureDB, cid: str, kind: str) -> str:
    return db.one(
        "select rec_id from marts.recommendations where cluster_id = ? and kind = ?", [cid, kind]
    )["rec_id"]


def test_opened_recommendations_go_out_once_as_signed_versioned_json(tmp_path):
    db = FixtureDB()
    _idle_cluster(db, "c1", T0)
    db.build()
    secret = tmp_path / "hook.secret"
    secret.write_text("topsecret\n")
    with http_receiver() as rx:
        config = _config(_hook(rx.url, secret_file=str(secret)))
        first = notify_on_connection(db.con, config, now=NOW)
        again = notify_on_connection(db.con, config, now=NOW + DAY)
    assert (first.new_events, first.sent, first.failed, first.exit_code) == (2, 2, 0, 0)
    assert (again.new_events, again.sent) == (0, 0)
    assert len(rx.received) == 1
    post = rx.received[0]
    expected = "sha256=" + hmac.new(b"topsecret", post.body, hashlib.sha256).hexdigest()
    assert post.headers["X-Gpucost-Signature"] == expected
    doc = post.json()
    assert (doc["version"], doc["source"]) == (1, "gpucost")
    by_kind = {e["kind"]: e for e in doc["events"]}
    stop = by_kind["stop_idle"]
    assert stop["type"] == "recommendation_opened"
    assert stop["id"].startswith("recommendation_opened:")
    assert stop["rec_id"] == _rec_id(db, "c1", "stop_idle")
    assert (stop["cluster_id"], stop["cluster_name"], stop["currency"]) == ("c1", "c1", "USD")
    assert Decimal(stop["monthly_savings"]) == Decimal("4867.20")
    assert Decimal(by_kind["downsize"]["monthly_savings"]) == Decimal("2232.00")
    assert (stop["project_id"], stop["owner_id"]) == ("p-ml", "user_p-ml")
    assert "168 of 168 billed hours" in stop["reason"]
    assert "topsecret" not in post.body.decode()


def test_min_monthly_savings_keeps_small_recommendations_quiet():
    db = FixtureDB()
    _idle_cluster(db, "c1", T0)
    db.build()
    with http_receiver() as rx:
        notify_on_connection(db.con, _config(_hook(rx.url), min_savings=3000), now=NOW)
    assert [e["kind"] for e in rx.events()] == ["stop_idle"]


def test_a_failed_delivery_stays_pending_and_goes_out_next_time_without_the_body():
    db = FixtureDB()
    _idle_cluster(db, "c1", T0)
    db.build()
    with http_receiver() as rx:
        rx.fail_next = 1
        config = _config(_hook(rx.url))
        failed = notify_on_connection(db.con, config, now=NOW)
        ledger = db.rows("select * from meta.notify_deliveries")
        recovered = notify_on_connection(db.con, config, now=NOW + HOUR)
    assert (failed.failed, failed.sent, failed.exit_code) == (2, 0, 3)
    assert {r["status"] for r in ledger} == {"pending"}
    assert all(r["last_error"] == "finops: the receiver answered HTTP 503" for r in ledger)
    assert "hunter2" not in failed.summary_line()
    assert (recovered.new_events, recovered.sent, recovered.exit_code) == (0, 2, 0)
    assert sorted(e["kind"] for e in rx.events()) == ["downsize", "stop_idle"]
    done = db.rows("select status, attempts from meta.notify_deliveries")
    assert {(r["status"], r["attempts"]) for r in done} == {("sent", 2)}


def test_a_receiver_that_never_answers_in_time_is_a_failed_delivery():
    import socket

    db = FixtureDB()
    _idle_cluster(db, "c1", T0)
    db.build()
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        result = notify_on_connection(db.con, _config(_hook(url, timeout_seconds=0.5)), now=NOW)
    assert (result.failed, result.exit_code) == (2, 3)
    assert "no answer within 0.5 s" in result.summary_line()


def test_dismissed_snoozed_and_suppressed_recommendations_are_not_announced():
    db = FixtureDB()
    _idle_cluster(db, "c1", T0)
    _idle_cluster(db, "c2", T0)
    _idle_cluster(db, "c3", T0, project="p-bench")
    db.build()
    decide(db.con, _rec_id(db, "c1", "stop_idle"), "dismiss", reason="on purpose", who="ann")
    decide(db.con, _rec_id(db, "c1", "downsize"), "snooze", until=date(2026, 12, 1), who="ann")
    config = _config(
        suppress=(Suppression(reason="benchmarks", project="p-bench"),),
    )
    with http_receiver() as rx:
        config = dataclasses.replace(
            config, notify=dataclasses.replace(config.notify, channels=(_hook(rx.url),))
        )
        notify_on_connection(db.con, config, now=NOW)
    assert sorted((e["cluster_id"], e["kind"]) for e in rx.events()) == [
        ("c2", "downsize"),
        ("c2", "stop_idle"),
    ]
    states = {(r["cluster_id"], r["kind"]): r["state"] for r in list_recommendations(db.con)}
    assert states[("c1", "stop_idle")] == "dismissed"
    assert states[("c1", "downsize")] == "snoozed"
    assert states[("c3", "stop_idle")] == "suppressed"


def test_a_dismissed_recommendation_is_announced_again_when_its_savings_grow_by_half():
    db = FixtureDB()
    _idle_cluster(db, "c1", T0)
    db.build()
    with http_receiver() as rx:
        config = _config(_hook(rx.url, events=("recommendation_opened",)), min_savings=3000)
        notify_on_connection(db.con, config, now=NOW)
        decide(db.con, _rec_id(db, "c1", "stop_idle"), "dismiss", reason="later", who="ann")
        # next night the rate doubles: (13.80 - 0.14) x 720 = 9835.20 >= 1.5 x 4867.20 = 7300.80
        comps = {
            "gpu": D("12.40"),
            "cpu": D("0.64"),
            "memory": D("0.24"),
            "storage": D("0.14"),
            "network": D("0.38"),
        }
        _idle_cluster(db, "c1", T0 + DAY, components=comps)
        db.build()
        notify_on_connection(db.con, config, now=NOW + DAY)
    first, second = [e for e in rx.events() if e["kind"] == "stop_idle"]
    assert first["rec_id"] == second["rec_id"] and first["id"] != second["id"]
    assert Decimal(second["monthly_savings"]) == Decimal("9835.20")
    assert second["resurfaced_after_dismissal"] is True


def test_resolved_recommendation_carries_its_realized_savings():
    db = FixtureDB()
    _idle_cluster(db, "c1", T0)
    db.build()
    with http_receiver() as rx:
        config = _config(_hook(rx.url))
        notify_on_connection(db.con, config, now=NOW)
        db.snapshot("c1", T0 + DAY, status="stopped")
        db.build()
        result = notify_on_connection(db.con, config, now=NOW + DAY)
    resolved = [e for e in rx.events() if e["type"] == "recommendation_resolved"]
    assert result.new_events == 2
    by_kind = {e["kind"]: e for e in resolved}
    # stopped: rate 6.90 -> 0.14 storage, (6.90 - 0.14) x 720 = 4867.20 realized
    assert Decimal(by_kind["stop_idle"]["realized_monthly_savings"]) == Decimal("4867.20")
    assert by_kind["stop_idle"]["id"].startswith("recommendation_resolved:")


def _budget_table(db: FixtureDB, pct: str, forecast: str) -> None:
    db.con.execute("create schema if not exists marts")
    db.con.execute(
        "create or replace table marts.budget_status (budget_name varchar, scope varchar, "
        "scope_id varchar, month date, currency varchar, amount decimal(18, 6), "
        "actual_to_date decimal(18, 6), forecast_month_end decimal(18, 6), "
        "pct_of_budget decimal(9, 2), forecast_pct decimal(9, 2), status varchar)"
    )
    amount = Decimal(1000)
    db.con.execute(
        "insert into marts.budget_status values ('ml', 'project', 'p-ml', '2026-11-01', 'USD', "
        "?, ?, ?, ?, ?, 'at_risk')",
        [amount, amount * Decimal(pct) / 100, amount * Decimal(forecast) / 100, pct, forecast],
    )


def test_a_budget_crossing_several_levels_is_announced_once_at_the_highest():
    db = FixtureDB()
    with http_receiver() as rx:
        config = _config(_hook(rx.url))
        _budget_table(db, pct="85", forecast="104")
        first = notify_on_connection(db.con, config, now=NOW)
        quiet = notify_on_connection(db.con, config, now=NOW + HOUR)
        _budget_table(db, pct="101", forecast="110")
        third = notify_on_connection(db.con, config, now=NOW + DAY)
    assert (first.new_events, quiet.new_events, third.new_events) == (2, 0, 1)
    crossed = [(e["basis"], e["threshold_pct"]) for e in rx.events()]
    assert crossed == [("actual", 80), ("forecast", 100), ("actual", 100)]
    event = rx.events()[0]
    assert (event["budget_name"], event["scope_id"], event["month"]) == ("ml", "p-ml", "2026-11-01")
    assert Decimal(event["pct_of_budget"]) == Decimal("85")
    assert event["project_id"] == "p-ml"


def _anomalies_and_data_until(last_data_day: str) -> FixtureDB:
    db = FixtureDB()
    db.con.execute("create schema if not exists marts")
    db.con.execute(
        "create table marts.spend_anomalies (day date, scope varchar, scope_id varchar, "
        "currency varchar, cost decimal(18, 6), baseline decimal(18, 6), "
        "deviation_pct decimal(9, 2), cause varchar)"
    )
    db.con.execute(
        "insert into marts.spend_anomalies values "
        "('2026-11-01', 'project', 'p-ml', 'USD', 900, 300, 200, 'new_cluster'), "
        "('2026-11-12', 'project', 'p-ml', 'USD', 1200, 400, 200, 'resize')"
    )
    db.con.execute(
        "create or replace table marts.fleet_daily as select cast(d as date) as day "
        "from generate_series(date '2026-11-01', cast(? as date), interval 1 day) as t(d)",
        [last_data_day],
    )
    return db


def test_spend_anomalies_of_the_last_week_are_announced_once():
    db = _anomalies_and_data_until("2026-11-14")
    with http_receiver() as rx:
        config = _config(_hook(rx.url))
        notify_on_connection(db.con, config, now=NOW)
        notify_on_connection(db.con, config, now=NOW + HOUR)
    (event,) = rx.events()
    assert (event["type"], event["day"], event["cause"]) == (
        "spend_anomaly",
        "2026-11-12",
        "resize",
    )
    assert (Decimal(event["cost"]), Decimal(event["baseline"])) == (1200, 400)


def test_an_anomaly_older_than_the_last_week_of_data_is_not_news():
    # the newest anomaly is 18 days before the newest data: nothing to announce
    db = _anomalies_and_data_until("2026-11-30")
    with http_receiver() as rx:
        notify_on_connection(db.con, _config(_hook(rx.url)), now=NOW)
    assert rx.events() == []


def test_run_health_is_announced_on_change_only():
    db = FixtureDB()
    _idle_cluster(db, "c1", T0)
    db.build()
    with http_receiver() as rx:
        config = _config(_hook(rx.url, events=("run_health",)))
        for i, status in enumerate(["complete", "partial", "partial", "failed", "complete"]):
            db.run(f"run-z{i}", status)
            notify_on_connection(db.con, config, now=NOW + i * HOUR)
    statuses = [(e["previous_status"], e["status"], e["recovered"]) for e in rx.events()]
    assert statuses == [
        ("complete", "partial", False),
        ("partial", "failed", False),
        ("failed", "complete", True),
    ]


def test_routing_by_event_type_and_project():
    db = FixtureDB()
    _idle_cluster(db, "c1", T0, project="p-ml")
    _idle_cluster(db, "c2", T0, project="p-web")
    db.build()
    with http_receiver() as ml, http_receiver() as everything:
        config = _config(
            _hook(ml.url, name="ml", projects=("p-ml",), events=("recommendation_opened",)),
            _hook(everything.url, name="all"),
        )
        notify_on_connection(db.con, config, now=NOW)
    assert {e["cluster_id"] for e in ml.events()} == {"c1"}
    assert {e["cluster_id"] for e in everything.events()} == {"c1", "c2"}


def test_slack_message_is_block_kit_with_values_escaped():
    db = FixtureDB()
    _idle_cluster(db, "c1", T0, name="<!channel> gpu & <b>")
    db.build()
    with http_receiver() as rx:
        slack = ChannelSettings(name="slack", kind="slack", url=rx.url)
        notify_on_connection(db.con, _config(slack), now=NOW)
    message = rx.received[0].json()
    assert message["text"] == "gpucost: 2 new findings"
    types = [b["type"] for b in message["blocks"]]
    assert types == ["header", "section", "context", "divider", "section", "context"]
    text = json.dumps(message)
    assert "<!channel>" not in text and "&lt;!channel&gt; gpu &amp; &lt;b&gt;" in text
    assert "$4,867.20 / month" in message["blocks"][1]["text"]["text"]


def _projects_table(db: FixtureDB, rows: list[tuple[str, str, str]]) -> None:
    db.con.execute(
        "create or replace table marts.projects (project_id varchar, project_name varchar, "
        "owner_id varchar, owner_email varchar, cost_center varchar)"
    )
    for project, email_, cc in rows:
        db.con.execute(
            "insert into marts.projects values (?, ?, ?, ?, ?)",
            [project, project.upper(), f"user_{project}", email_, cc],
        )


def test_owner_email_one_message_per_owner_with_their_clusters_only(tmp_path):
    db = FixtureDB()
    _idle_cluster(db, "c1", T0, project="p-ml", name="<script>alert(1)</script>")
    _idle_cluster(db, "c2", T0, project="p-web")
    _idle_cluster(db, "c3", T0, project="p-orphan")
    db.build()
    _projects_table(db, [("p-ml", "ml-lead@example.com", "R&D"), ("p-web", "web@example.com", "W")])
    password = tmp_path / "smtp.password"
    password.write_text("s3cret\n")
    with smtp_server(require_login=True) as box:
        channel = ChannelSettings(
            name="owners",
            kind="email",
            smtp_host=box.host,
            smtp_port=box.port,
            starttls=False,
            username="gpucost",
            password_file=str(password),
            from_addr="gpucost@example.com",
        )
        result = notify_on_connection(db.con, _config(channel), now=NOW)
        again = notify_on_connection(db.con, _config(channel), now=NOW + HOUR)
    assert (result.sent, result.skipped, result.failed) == (4, 2, 0)
    assert (again.sent, len(box.messages)) == (0, 2)
    assert box.logins == [("gpucost", "s3cret")] * 2
    by_rcpt = {tuple(rcpts): msg for _sender, rcpts, msg in box.messages}
    assert set(by_rcpt) == {("ml-lead@example.com",), ("web@example.com",)}
    ml = by_rcpt[("ml-lead@example.com",)]
    text = ml.get_body(preferencelist=("plain",)).get_content()
    html = ml.get_body(preferencelist=("html",)).get_content()
    assert ml["Subject"] == "gpucost: 2 new findings for your clusters"
    assert "$4,867.20 / month" in text and "$2,232.00 / month" in text
    assert "c2" not in text and "p-web" not in text
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    skipped = db.rows(
        "select d.status, d.last_error from meta.notify_deliveries d join meta.notify_events e "
        "using (event_id) where e.project_id = 'p-orphan'"
    )
    assert {(r["status"], r["last_error"]) for r in skipped} == {
        ("skipped", "no owner e-mail known for the project")
    }


def test_email_to_a_fixed_list_gets_every_routed_event_in_one_message():
    db = FixtureDB()
    _idle_cluster(db, "c1", T0, project="p-ml")
    _idle_cluster(db, "c2", T0, project="p-web")
    db.build()
    with smtp_server() as box:
        channel = ChannelSettings(
            name="finops",
            kind="email",
            smtp_host=box.host,
            smtp_port=box.port,
            starttls=False,
            from_addr="gpucost@example.com",
            to=("finops@example.com", "cfo@example.com"),
        )
        result = notify_on_connection(db.con, _config(channel), now=NOW)
    assert result.sent == 4
    ((_sender, rcpts, msg),) = box.messages
    assert sorted(rcpts) == ["cfo@example.com", "finops@example.com"]
    assert msg["Subject"] == "gpucost: 4 new findings"


def test_an_smtp_server_that_is_down_leaves_the_mail_pending():
    import socket

    db = FixtureDB()
    _idle_cluster(db, "c1", T0)
    db.build()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    channel = ChannelSettings(
        name="ops",
        kind="email",
        smtp_host="127.0.0.1",
        smtp_port=port,
        starttls=False,
        from_addr="gpucost@example.com",
        to=("ops@example.com",),
        timeout_seconds=2,
    )
    result = notify_on_connection(db.con, _config(channel), now=NOW)
    assert (result.failed, result.exit_code) == (2, 3)
    assert "SMTP delivery failed (ConnectionRefusedError)" in result.summary_line()


@pytest.mark.parametrize("kind", ["slack", "webhook"])
def test_nothing_new_sends_nothing(kind):
    db = FixtureDB()
    db.snapshot("c1", T0)
    db.build()
    with http_receiver() as rx:
        channel = ChannelSettings(name="x", kind=kind, url=rx.url)
        result = notify_on_connection(db.con, _config(channel), now=NOW)
    assert (result.new_events, rx.attempts) == (0, 0)


def test_the_slack_preview_escapes_what_it_draws():
    from pipeline.channels.preview import blocks_to_html
    from pipeline.channels.slack import slack_message

    event = {
        "type": "recommendation_opened",
        "kind": "stop_idle",
        "cluster_id": "c1",
        "cluster_name": "<img src=x onerror=alert(1)>",
        "monthly_savings": "10.00",
        "currency": "USD",
        "reason": "idle *all* week",
        "rec_id": "r1",
        "project_name": "ML",
    }
    page = blocks_to_html(slack_message([event]))
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<b>Stop idle cluster: &lt;img" in page


def test_email_over_verified_starttls_with_login(tmp_path):
    from tests.notify_helpers import self_signed_certificate

    db = FixtureDB()
    _idle_cluster(db, "c1", T0)
    db.build()
    cert, key = self_signed_certificate(tmp_path)
    password = tmp_path / "smtp.password"
    password.write_text("s3cret\n")
    with smtp_server(require_login=True, tls=(cert, key)) as box:
        channel = ChannelSettings(
            name="ops",
            kind="email",
            smtp_host=box.host,
            smtp_port=box.port,
            starttls=True,
            username="gpucost",
            password_file=str(password),
            from_addr="gpucost@example.com",
            to=("ops@example.com",),
        )
        untrusted = notify_on_connection(db.con, _config(channel), now=NOW)
        trusted = dataclasses.replace(channel, ca_file=str(cert))
        sent = notify_on_connection(db.con, _config(trusted), now=NOW + HOUR)
    # the certificate is checked: unknown CA, no delivery; with the channel's ca_file, sent
    assert (untrusted.failed, untrusted.sent) == (2, 0)
    assert "SMTP delivery failed (SSLCertVerificationError)" in untrusted.summary_line()
    assert (sent.sent, sent.failed, len(box.messages)) == (2, 0, 1)
    assert box.logins == [("gpucost", "s3cret")]
