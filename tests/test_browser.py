"""The HTML report in a real browser: headless Debian Chromium through Playwright.

Opens index.html from disk with every network request blocked and recorded: no console errors,
no dialog (a hostile cluster name must never run `alert`), charts drawn, tables that sort on
click. Chromium missing is a failure, not a skip, unless GPUCOST_SKIP_BROWSER=1.

The README's picture: `GPUCOST_SCREENSHOT_DB=demo.duckdb pytest -m browser tests/test_browser.py`
renders that database (e.g. from `gpucost demo`) and saves docs/report.png.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import Config, StoreSettings
from pipeline.report import render_report
from tests.report_fixtures import (
    HOSTILE_FORMULA,
    HOSTILE_IMG,
    HOSTILE_SCRIPT,
    add_finance_marts,
    create_fixture_db,
)

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "report.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if os.environ.get("GPUCOST_SKIP_BROWSER") == "1":
        pytest.skip("GPUCOST_SKIP_BROWSER=1")
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install -y chromium (or set GPUCOST_SKIP_BROWSER=1)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _open(browser, html: Path, events: dict[str, list[str]]):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.on("console", lambda m: events["console"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: events["pageerror"].append(str(e)))

    def on_dialog(dialog) -> None:
        events["dialog"].append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)

    def on_request(route) -> None:
        url = route.request.url
        if url.startswith("file://") or url.startswith("data:"):
            route.continue_()
        else:
            events["network"].append(url)
            route.abort()

    page.route("**/*", on_request)
    page.goto(html.as_uri(), wait_until="load")
    return page


def _column(page, section: str, index: int) -> list[str]:
    cells = page.locator(f"#{section} table.sortable >> nth=0").locator(
        f"tbody tr td:nth-child({index})"
    )
    return [t.strip() for t in cells.all_inner_texts()]


def test_report_in_chromium_runs_nothing_hostile_draws_charts_and_sorts(browser, tmp_path):
    db = create_fixture_db(tmp_path / "gpucost.duckdb")
    out = tmp_path / "out"
    render_report(Config(store=StoreSettings(db=str(db))), out)
    events: dict[str, list[str]] = {"console": [], "pageerror": [], "dialog": [], "network": []}
    page = _open(browser, out / "index.html", events)

    assert page.title().startswith("GPU cost report")
    assert page.locator("svg.chart").count() >= 6
    assert page.locator("svg.chart").first.bounding_box()["width"] > 300
    # hostile names are on the page as text, and none of them ran
    for name in (HOSTILE_SCRIPT, HOSTILE_IMG, HOSTILE_FORMULA):
        assert page.get_by_text(name, exact=True).count() >= 1, name
    assert page.locator("img").count() == 0
    assert page.evaluate("document.scripts.length") == 1

    # recommendations, column 1 (savings): ranked high to low, then sorted by clicks
    assert _column(page, "recommendations", 1) == ["$2,160.00", "$1,584.00", "$432.00"]
    header = page.locator("#recommendations table.sortable >> nth=0").locator("thead th").first
    header.click()
    assert _column(page, "recommendations", 1) == ["$432.00", "$1,584.00", "$2,160.00"]
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert _column(page, "recommendations", 1) == ["$2,160.00", "$1,584.00", "$432.00"]
    # a text column sorts alphabetically
    page.locator("#recommendations table.sortable >> nth=0").locator("thead th").nth(1).click()
    actions = _column(page, "recommendations", 2)
    assert actions == sorted(actions) == ["downsize", "investigate_error", "stop_idle"]

    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert events == {"console": [], "pageerror": [], "dialog": [], "network": []}
    page.close()


def test_finance_section_shows_projects_budgets_and_anomalies_and_sorts(browser, tmp_path):
    db = create_fixture_db(tmp_path / "gpucost.duckdb")
    add_finance_marts(db)
    out = tmp_path / "out"
    render_report(Config(store=StoreSettings(db=str(db))), out)
    events: dict[str, list[str]] = {"console": [], "pageerror": [], "dialog": [], "network": []}
    page = _open(browser, out / "index.html", events)

    finance = page.locator("#finance")
    assert finance.is_visible()
    assert page.locator('nav a[href="#finance"]').count() == 1
    # spend by project: the chart, then the table (largest spend first), idle share beside it
    chart = finance.locator("svg.chart").first
    assert chart.get_attribute("aria-label") == "Spend by project, November 2026 (USD)"
    assert chart.bounding_box()["width"] > 300
    projects = finance.locator("#project-spend tbody tr")
    assert projects.count() == 2
    first = projects.first.locator("td")
    assert first.nth(0).inner_text().startswith("ML Research")
    assert first.nth(3).inner_text() == "$900.00"
    assert first.nth(6).inner_text() == "20.0 %"  # idle 180 of 900
    # the hostile project name is text; the unmapped project says so; the adjustment shows
    second = projects.nth(1).locator("td")
    assert second.nth(0).inner_text().startswith(HOSTILE_SCRIPT)
    assert second.nth(1).inner_text() == "unmapped"
    assert second.nth(8).inner_text() in ("-$1.50", "−$1.50", "$-1.50")
    # budgets: amount, actual, forecast and status; sorting by forecast % reorders them
    budgets = finance.locator("#budgets")
    assert [t.strip() for t in budgets.locator("tbody td:nth-child(8)").all_inner_texts()] == [
        "ok",
        "at_risk",
        "over",
    ]
    budgets.locator("thead th").nth(6).click()
    assert [t.strip() for t in budgets.locator("tbody td:nth-child(1)").all_inner_texts()] == [
        "fleet",
        "ml",
        "x",
    ]
    budgets.locator("thead th").nth(6).click()
    assert [t.strip() for t in budgets.locator("tbody td:nth-child(1)").all_inner_texts()] == [
        "x",
        "ml",
        "fleet",
    ]
    # anomalies: the day, the deviation, the cause and the clusters behind it
    anomaly = finance.locator("#anomalies tbody tr").first.locator("td")
    assert anomaly.nth(0).inner_text() == "Thu 19 Nov 2026"
    assert anomaly.nth(4).inner_text() == "100.0 %"
    assert anomaly.nth(5).inner_text() == "started"
    assert anomaly.nth(6).inner_text() == "cls_a, cls_b"
    assert events == {"console": [], "pageerror": [], "dialog": [], "network": []}
    page.close()


def test_readme_screenshot_from_a_real_database(browser, tmp_path):
    """Saves docs/report.png from GPUCOST_SCREENSHOT_DB (the README's picture)."""
    source = os.environ.get("GPUCOST_SCREENSHOT_DB")
    if not source:
        pytest.skip("set GPUCOST_SCREENSHOT_DB to a built database to refresh docs/report.png")
    render_report(Config(store=StoreSettings(db=source)), tmp_path / "out")
    events: dict[str, list[str]] = {"console": [], "pageerror": [], "dialog": [], "network": []}
    page = _open(browser, tmp_path / "out" / "index.html", events)
    page.set_viewport_size({"width": 1280, "height": 1700})
    page.screenshot(path=str(DOCS_SCREENSHOT), full_page=False)
    assert events == {"console": [], "pageerror": [], "dialog": [], "network": []}
    assert DOCS_SCREENSHOT.stat().st_size > 10_000
    page.close()
