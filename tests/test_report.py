"""The report stage against a hand-computed database (tests/report_fixtures.py).

Every total is the arithmetic written in the fixture's docstring; the CSVs are read back with
polars and with Python's csv module, the HTML is searched as text for what a reader must see and
for what must never be in it.
"""

from __future__ import annotations

import csv
import re
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest

from pipeline.config import Config, StoreSettings
from pipeline.contracts import load_contracts
from pipeline.errors import EXIT_USAGE, GpucostError
from pipeline.report import (
    CLUSTER_SECTIONS,
    OUT_MARKER,
    MartsMissingError,
    ReportResult,
    format_money,
    format_number,
    format_pct,
    neutralize_formulas,
    render_report,
)
from tests.report_fixtures import (
    FLEET_DAILY,
    HOSTILE_FORMULA,
    HOSTILE_IMG,
    HOSTILE_SCRIPT,
    IDLE_WASTE_DAILY,
    SNAPSHOT_MARTS,
    create_fixture_db,
)

D = Decimal
CSV_FILES = (
    "idle_waste_daily.csv",
    "recommendations.csv",
    "projection_drift.csv",
    "fleet_daily.csv",
    "focus.csv",
)
# the columns each CSV export carries: its mart's declaration (sql/marts/<name>.toml)
CONTRACT_COLUMNS = {
    mart: load_contracts()[mart].names
    for mart in ("idle_waste_daily", "projection_drift", "recommendations", "fleet_daily")
}


def _render(
    tmp: Path, sections: int = CLUSTER_SECTIONS, **fixture: object
) -> tuple[ReportResult, Path]:
    db = create_fixture_db(tmp / "gpucost.duckdb", **fixture)  # type: ignore[arg-type]
    out = tmp / "out"
    config = Config(store=StoreSettings(db=str(db)))
    return render_report(config, out, cluster_sections=sections), out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportResult, Path, str]:
    result, out = _render(tmp_path_factory.mktemp("report"))
    return result, out, (out / "index.html").read_text(encoding="utf-8")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_render_writes_the_html_and_every_csv(rendered):
    result, out, _html = rendered
    assert result.index_html == out / "index.html"
    assert sorted(p.name for p in result.files) == sorted(("index.html", *CSV_FILES))
    assert all(p.is_file() and p.stat().st_size > 0 for p in result.files)
    assert result.clusters == 4
    left = [p for p in out.glob(".*") if p.name != OUT_MARKER]
    assert not left, "temporary files left behind"


def test_outputs_are_readable_by_their_owner_only(rendered):
    _result, out, _html = rendered
    for name in ("index.html", *CSV_FILES):
        assert (out / name).stat().st_mode & 0o077 == 0, name


@pytest.mark.parametrize("mart", sorted(CONTRACT_COLUMNS))
def test_mart_csv_has_exactly_the_contract_columns(rendered, mart):
    _result, out, _html = rendered
    frame = pl.read_csv(out / f"{mart}.csv", infer_schema_length=0)
    assert frame.columns == CONTRACT_COLUMNS[mart]


def test_fleet_daily_csv_totals_equal_the_marts(rendered):
    _result, out, _html = rendered
    # Python csv: every money cell parses as an exact Decimal.
    totals: dict[str, Decimal] = {}
    for row in _csv_rows(out / "fleet_daily.csv"):
        totals[row["currency"]] = totals.get(row["currency"], D(0)) + D(row["cost"])
    expected: dict[str, Decimal] = {}
    for _day, currency, cost, *_ in FLEET_DAILY:
        expected[currency] = expected.get(currency, D(0)) + cost
    # 224.40 x 2 = 448.80 USD; 129.60 + 4.80 = 134.40 EUR
    assert totals == expected == {"USD": D("448.80"), "EUR": D("134.40")}
    # polars reads the same file with numeric columns.
    frame = pl.read_csv(out / "fleet_daily.csv", try_parse_dates=True)
    assert frame["gpu_hours"].sum() == 96 + 96 + 96 + 0
    assert frame.schema["day"] == pl.Date


def test_idle_waste_csv_totals_equal_the_marts(rendered):
    _result, out, _html = rendered
    rows = _csv_rows(out / "idle_waste_daily.csv")
    assert len(rows) == len(IDLE_WASTE_DAILY)
    assert sum(D(r["idle_cost"]) for r in rows if r["currency"] == "USD") == D("264.00")
    assert sum(D(r["unused_capacity_cost"]) for r in rows if r["currency"] == "EUR") == D("57.60")
    assert sum(D(r["idle_gpu_hours"]) for r in rows) == 24 * 3 * 2 + 24
    assert {r["per_gpu"] for r in rows} == {"true", "false"}
    stopped = next(r for r in rows if r["cluster_id"] == "cls_c" and r["day"] == "2026-11-19")
    assert stopped["avg_gpu_utilization"] == ""  # null stays an empty cell, not 0


def test_csv_money_is_plain_decimal_and_instants_are_iso_utc(rendered):
    _result, out, _html = rendered
    for row in _csv_rows(out / "recommendations.csv"):
        assert re.fullmatch(r"\d+\.\d{1,6}", row["monthly_savings"]), row
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["first_seen_at"]), row
    drift = _csv_rows(out / "projection_drift.csv")
    stopped = next(r for r in drift if r["cluster_id"] == "cls_c")
    # (4.80 - 129.60) / 129.60 x 100 = -96.296296..., written without binary-float noise
    assert stopped["drift_pct"] == "-96.296296"
    assert stopped["projected_at"] == "2026-11-19T00:00:00Z"
    for name in CSV_FILES:
        text = (out / name).read_text(encoding="utf-8")
        assert not re.search(r"\d[eE][-+]?\d", text), f"exponent in {name}"


def test_formula_cells_are_neutralized_and_numbers_untouched():
    frame = pl.DataFrame(
        {
            "name": [
                '=HYPERLINK("http://evil.example","x")',
                "+1+1",
                "-2+3",
                "@SUM(A1)",
                "\tx",
                "\rx",
                "plain",
                None,
            ],
            "amount": [D("-5.50"), D("1"), D("2"), D("3"), D("4"), D("5"), D("6"), D("7")],
            "delta": [-1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        }
    )
    out = neutralize_formulas(frame)
    assert out["name"].to_list() == [
        '\'=HYPERLINK("http://evil.example","x")',
        "'+1+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "plain",
        None,
    ]
    assert out["amount"].to_list() == frame["amount"].to_list()
    assert out["delta"].to_list() == frame["delta"].to_list()


def test_hostile_cluster_name_is_neutralized_in_the_focus_csv(rendered):
    _result, out, _html = rendered
    names = {r["ResourceId"]: r["ResourceName"] for r in _csv_rows(out / "focus.csv")}
    assert names["cls_c"] == "'" + HOSTILE_FORMULA
    assert names["cls_b"] == HOSTILE_SCRIPT  # not a formula: left as is in a CSV


def test_html_shows_hostile_names_as_escaped_text(rendered):
    _result, _out, html = rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert HOSTILE_SCRIPT not in html and "<script>alert" not in html
    assert HOSTILE_IMG not in html and "<img" not in html
    assert "onerror=alert(1)>" not in html
    # our one sort script is the only script on the page
    assert html.count("<script") == 1
    # the failure reason "<b>bold</b>" from meta.run_failures is text too
    assert "&lt;b&gt;bold&lt;/b&gt;" in html


def test_html_is_self_contained(rendered):
    _result, _out, html = rendered
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html
    assert not re.search(r"url\((?!#)", html)  # only references inside the page
    assert html.count("<svg") >= 6  # spend x2, idle x2, projection x2, heatmaps x4


def test_html_summary_shows_hand_computed_totals_per_currency(rendered):
    _result, _out, html = rendered
    for text in (
        "$448.80",  # USD spend: 224.40 x 2
        "€134.40",  # EUR spend: 129.60 + 4.80
        "$264.00",  # USD idle: 132.00 x 2
        "€28.80",  # EUR idle
        "$276.48",  # USD unused: (79.20 + 47.04 + 12.00) x 2
        "$4,176.00",  # open savings: 2160 + 1584 + 432
        "€3,744.00",  # realized: (5.40 - 0.20) x 720
        "58.8 %",  # USD idle share: 264.00 / 448.80
        # daily projections: cls_a 156.00 + cls_b 54.00, billed exactly that
        "actual $210.00 against $210.00 projected, 2 projections",
        # cls_c: 4.80 billed against 129.60 projected -> -96.3 %
        "actual €4.80 against €129.60 projected, 1 projection<",
    ):
        assert text in html, text
    # currencies never summed: 448.80 + 134.40 = 583.20 must not appear
    assert "583.20" not in html


def test_html_notes_the_partial_run_and_the_clusters_it_missed(rendered):
    result, _out, html = rendered
    assert "Incomplete data" in html
    assert "is partial: 1 failed, 1 skipped" in html
    assert "cls_broken" in html and "cls_later" in html
    assert any("partial" in n for n in result.notes)


def test_complete_run_shows_no_incomplete_data_note(tmp_path):
    db = create_fixture_db(tmp_path / "gpucost.duckdb", latest_run_status="complete")
    con = duckdb.connect(str(db))
    # a second open recommendation for cls_d: stop it ((0.60 - 0.05) x 720 = 396.00) or
    # investigate its error (432.00) are alternatives, the total counts the larger one only
    con.execute(
        "insert into marts.recommendations values ('rec_d_stop', 'cls_d', 'stop_idle',"
        " 'open', 396.00, 'USD', 'idle', '2026-11-19', '2026-11-20', null)"
    )
    con.close()
    result = render_report(Config(store=StoreSettings(db=str(db))), tmp_path / "out")
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "Incomplete data" not in html
    # the run still recorded clusters it did not read: said, but not as a warning
    assert "recorded 2 clusters it did not read" in html
    assert result.notes
    assert "$4,176.00" in html and "$4,572.00" not in html  # 2160 + 1584 + max(432, 396)
    assert "4 open recommendations" in html


def test_report_without_marts_asks_for_a_build(tmp_path):
    db = create_fixture_db(tmp_path / "gpucost.duckdb", with_marts=False)
    with pytest.raises(MartsMissingError, match="run gpucost build first") as info:
        render_report(Config(store=StoreSettings(db=str(db))), tmp_path / "out")
    assert isinstance(info.value, GpucostError)
    assert info.value.exit_code == EXIT_USAGE
    assert not (tmp_path / "out" / "index.html").exists()


def test_report_on_a_missing_database_fails_clearly(tmp_path):
    with pytest.raises(MartsMissingError, match="does not exist"):
        render_report(
            Config(store=StoreSettings(db=str(tmp_path / "nope.duckdb"))), tmp_path / "out"
        )
    assert not (tmp_path / "nope.duckdb").exists()  # read-only: never creates a database


def test_drift_accuracy_mart_is_used_when_present(tmp_path):
    db = create_fixture_db(tmp_path / "gpucost.duckdb")
    con = duckdb.connect(str(db))
    con.execute(
        "create table marts.cluster_drift_accuracy (cluster_id varchar,"
        " scored_days integer, mape_pct double, bias_pct double)"
    )
    con.execute("insert into marts.cluster_drift_accuracy values ('cls_c', 14, 61.25, -58.5)")
    con.close()
    render_report(Config(store=StoreSettings(db=str(db))), tmp_path / "out")
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "marts.cluster_drift_accuracy" in html
    assert "61.2 %" in html and "-58.5 %" in html


def test_drift_accuracy_falls_back_to_projection_drift(rendered):
    _result, _out, html = rendered
    # cls_c's only daily projection: |-96.296...| -> MAPE 96.3 %, bias -96.3 %
    assert "last 14 daily projections" in html
    assert "96.3 %" in html and "-96.3 %" in html


def test_large_fleet_gets_sections_for_the_top_clusters_and_a_table_for_the_rest(tmp_path):
    # 4 + 8 fillers; sections for the top 3 by spend in the period:
    # cls_a 312.00 USD, cls_c 134.40 EUR, cls_b 108.00 USD; then cls_d 28.80 and the
    # fillers 39.36 (0.82 x 48) go to the compact table.
    result, out = _render(tmp_path, sections=3, extra_clusters=8)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert result.clusters == 12
    assert html.count('<article class="cluster"') == 3
    assert "The other 9 clusters" in html
    sections = re.findall(r'<article class="cluster" id="([^"]+)"', html)
    assert [a.rsplit("-", 1)[0] for a in sections] == [
        "cluster-cls_a",
        "cluster-cls_c",
        "cluster-cls_b",
    ]
    assert "filler-0007" in html
    assert not [n for n in result.notes if "FOCUS" in n]  # still reconciles with fleet_daily


@pytest.mark.parametrize(
    ("value", "currency", "text"),
    [
        (D("1234.5"), "USD", "$1,234.50"),
        (D("1234567.891"), "EUR", "€1,234,567.89"),
        (D("-5"), "USD", "-$5.00"),
        (D("0.005"), "GBP", "GBP 0.01"),
        (None, "USD", "–"),
    ],
)
def test_money_is_formatted_for_people(value, currency, text):
    assert format_money(value, currency) == text


def test_numbers_and_percentages_are_formatted_for_people():
    assert format_number(12345.6) == "12,346"
    assert format_number(D("1234.5"), 1) == "1,234.5"
    assert format_pct(58.82352) == "58.8 %"
    assert format_pct(None) == "–"


def test_empty_database_renders_a_report_that_says_so(tmp_path):
    db = create_fixture_db(tmp_path / "gpucost.duckdb")
    con = duckdb.connect(str(db))
    for table in (
        "marts.fleet_daily",
        "marts.idle_waste_daily",
        "marts.projection_drift",
        "marts.recommendations",
        "marts.clusters",
        # cluster_cost_daily is a view over the costs kept night by night
        *(m for m in SNAPSHOT_MARTS if m != "marts.cluster_cost_daily"),
        "intermediate.cluster_component_costs",
        "snap.metric_points",
        "snap.gpu_metric_points",
        "snap.cost_components",
        "snap.alerts",
        "snap.cluster_snapshots",
        "meta.run_failures",
        "meta.runs",
    ):
        con.execute(f"delete from {table}")
    con.close()
    result = render_report(Config(store=StoreSettings(db=str(db))), tmp_path / "out")
    html = result.index_html.read_text(encoding="utf-8")
    assert "No cost data in this period." in html
    assert "No snapshot run is recorded" in html
    assert result.focus_rows == 0 and result.clusters == 0
    assert _csv_rows(tmp_path / "out" / "focus.csv") == []


def test_a_run_that_never_finished_is_called_out(tmp_path):
    from pipeline.focus import build_focus
    from pipeline.report import _notes

    db = create_fixture_db(tmp_path / "gpucost.duckdb", latest_run_status="running")
    con = duckdb.connect(str(db), read_only=True)
    build_focus(con)
    notes = _notes(con, {"fleet_daily"})
    assert [n["level"] for n in notes] == ["warn"]
    assert "has not finished: it is still running or it crashed" in notes[0]["text"]
