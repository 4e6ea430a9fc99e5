"""The CLI documents itself: every command has help with an example, and docs/cli.md is current;
docs/marts.md shows every mart's declared columns (sql/marts/<name>.toml) as they are declared,
docs/store.md every snapshot table's (pipeline/tables.py)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline import __version__
from pipeline.cli import cli
from pipeline.contracts import load_contracts
from pipeline.docgen import (
    DOC,
    MARTS_DOC,
    STORE_DOC,
    columns_in_doc,
    help_text,
    iter_commands,
    render,
    render_marts,
    render_store,
)
from pipeline.tables import TABLES

COMMANDS = iter_commands()


def test_the_design_cards_commands_exist():
    names = {" ".join(path) for path in COMMANDS}
    for expected in [
        "snapshot",
        "build",
        "report",
        "run",
        "demo",
        "simulate serve",
        "simulate truth",
    ]:
        assert expected in names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p))
def test_every_command_has_help_with_an_example(path):
    text = help_text(path)
    assert "Usage: gpucost" in text
    if path != ("simulate",):
        assert "Example" in text, f"gpucost {' '.join(path)} --help shows no example"


def test_version_is_printed():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_cli_reference_is_generated_from_help():
    assert DOC.read_text(encoding="utf-8") == render(), "docs/cli.md is stale: run `make docs`"


def test_marts_reference_tables_are_generated_from_the_declarations():
    text = MARTS_DOC.read_text(encoding="utf-8")
    assert text == render_marts(text), "docs/marts.md is stale: run `make docs`"


def test_marts_reference_shows_every_declared_mart_once():
    shown = columns_in_doc(MARTS_DOC.read_text(encoding="utf-8"))
    assert sorted(shown) == sorted(load_contracts())


def test_store_reference_tables_are_generated_from_the_declarations():
    text = STORE_DOC.read_text(encoding="utf-8")
    assert text == render_store(text), "docs/store.md is stale: run `make docs`"


def test_store_reference_shows_every_declared_snapshot_table_once():
    shown = columns_in_doc(STORE_DOC.read_text(encoding="utf-8"))
    assert sorted(shown) == sorted(f"snap.{t}" for t in TABLES)


def test_bad_config_exits_with_usage_code_and_names_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[api]\nconcurrency = "many"\n', encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["build", "--config", str(config), "--db", str(tmp_path / "x.duckdb")]
    )
    assert result.exit_code == 2
    assert "api.concurrency" in result.output


def test_unknown_option_is_a_usage_error():
    result = CliRunner().invoke(cli, ["snapshot", "--no-such-option"])
    assert result.exit_code == 2


def test_no_command_takes_the_api_key_as_an_option_value():
    # A key on the command line would show in `ps`: only GPUCOST_API_KEY or --api-key-file.
    for path in COMMANDS:
        text = help_text(path)
        assert "--api-key " not in text and "--api-key=" not in text, path
