"""The docs' notification examples, from real deliveries: `python -m tests.notify_examples docs`
runs eight simulated nights of the demo fleet, notifies a webhook, a Slack receiver and an SMTP
server on loopback, and writes what they received: notify-webhook.json, notify-slack.json,
notify-slack.png (the Block Kit message drawn by `pipeline.channels.preview` and photographed
with Playwright and /usr/bin/chromium), notify-email.txt and notify-email.html.
"""

from __future__ import annotations

from typing import Any

from pipeline.channels.preview import blocks_to_html


def write_examples(out: Any, *, nights: int = 8, clusters: int = 40) -> list[Any]:
    """Run the demo fleet for `nights`, notify real receivers on loopback, write what they got."""
    import dataclasses
    import json
    import os
    import tempfile
    from datetime import timedelta
    from pathlib import Path

    from pipeline.config import ChannelSettings, Config, NotifySettings, StoreSettings
    from pipeline.demo import DEMO_START
    from pipeline.models import build_models
    from pipeline.notify import notify_on_connection
    from pipeline.simulator import Fleet, FleetSpec, Simulator
    from pipeline.snapshot import run_snapshot
    from pipeline.store import Store
    from tests.notify_helpers import http_receiver, smtp_server

    out = Path(out)
    key = "preview-key"
    os.environ["GPUCOST_API_KEY"] = key
    fleet = Fleet(FleetSpec(seed=7, clusters=clusters, start=DEMO_START))
    with tempfile.TemporaryDirectory() as tmp, http_receiver() as hook, http_receiver() as slack:
        db = Path(tmp) / "preview.duckdb"
        with Simulator(fleet, api_key=key).run_in_thread(port=0) as url, smtp_server() as box:
            config = Config(store=StoreSettings(db=str(db)))
            config = dataclasses.replace(config, api=dataclasses.replace(config.api, url=url))
            for night in range(nights):
                fleet.set_clock(DEMO_START + timedelta(days=night))
                run_snapshot(config)
                build_models(config)
            with Store.open(db) as store:
                # an owner for each project, as marts.projects will hold them
                store.con.execute(
                    "create or replace table marts.projects as select distinct project_id, "
                    "project_name, owner_id, lower(replace(project_name, ' ', '.')) || "
                    "'-lead@example.com' as owner_email, null as cost_center "
                    "from snap.cluster_snapshots"
                )
                channels = (
                    ChannelSettings(name="finops", kind="webhook", url=hook.url),
                    ChannelSettings(name="slack", kind="slack", url=slack.url),
                    ChannelSettings(
                        name="owners",
                        kind="email",
                        smtp_host=box.host,
                        smtp_port=box.port,
                        starttls=False,
                        from_addr="gpucost@example.com",
                    ),
                )
                notify_on_connection(
                    store.con,
                    dataclasses.replace(config, notify=NotifySettings(channels=channels)),
                )
            mails = list(box.messages)
    written = []
    webhook = hook.received[0].json()
    webhook["events"] = webhook["events"][:3]
    written.append(out / "notify-webhook.json")
    written[-1].write_text(json.dumps(webhook, indent=2, ensure_ascii=False) + "\n")
    message = slack.received[0].json()
    message["blocks"] = message["blocks"][:1] + message["blocks"][1:12]
    written.append(out / "notify-slack.json")
    written[-1].write_text(json.dumps(message, indent=2, ensure_ascii=False) + "\n")
    page = out / "notify-slack.html"
    page.write_text(blocks_to_html(message), encoding="utf-8")
    written.append(out / "notify-slack.png")
    _screenshot(page, written[-1])
    page.unlink()
    _sender, _rcpts, mail = max(mails, key=lambda m: len(str(m[2])))
    written.append(out / "notify-email.txt")
    headers = "".join(f"{k}: {mail[k]}\n" for k in ("From", "To", "Subject"))
    text = mail.get_body(preferencelist=("plain",)).get_content()
    written[-1].write_text(headers + "\n" + text, encoding="utf-8")
    written.append(out / "notify-email.html")
    written[-1].write_text(mail.get_body(preferencelist=("html",)).get_content(), "utf-8")
    return written


def _screenshot(page: Any, png: Any) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        tab = browser.new_page(viewport={"width": 420, "height": 400}, device_scale_factor=2)
        tab.goto(page.resolve().as_uri())
        tab.locator(".msg").screenshot(path=str(png))
        browser.close()


if __name__ == "__main__":
    import sys

    for path in write_examples(sys.argv[1] if len(sys.argv) > 1 else "docs"):
        print(path)
