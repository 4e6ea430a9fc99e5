"""Generate docs/cli.md from the commands' own --help, the column tables of docs/marts.md
from the marts' declarations (`sql/marts/<name>.toml`) and those of docs/store.md from the
snapshot tables' declarations (`pipeline/tables.py`), so no reference can drift.

Run `make docs` (python -m pipeline.docgen); tests/test_docs.py fails when a file is stale.
In docs/marts.md and docs/store.md, the lines between `<!-- columns: <name> -->` and
`<!-- end columns -->` are generated; the prose around them is written by hand.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.contracts import Contract, load_contracts
from pipeline.tables import TABLES, Table

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
MARTS_DOC = DOC.with_name("marts.md")
STORE_DOC = DOC.with_name("store.md")
_COLUMNS_BLOCK = re.compile(
    r"(<!-- columns: (?P<mart>[\w.]+) -->\n)(?P<body>.*?)(<!-- end columns -->)", re.DOTALL
)


def iter_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the CLI, groups included, in help order (`("simulate", "serve")`)."""
    paths: list[tuple[str, ...]] = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths.extend(iter_commands(command, (*prefix, name)))
    return paths


def help_text(path: tuple[str, ...]) -> str:
    """The --help output of one command path, at a fixed terminal width."""
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=100, prog_name="gpucost")
    if result.exit_code != 0:
        raise RuntimeError(f"gpucost {' '.join(path)} --help failed: {result.output}")
    return result.output


def render() -> str:
    """The whole CLI reference as Markdown."""
    parts = [
        "# CLI reference\n",
        "Generated from `--help` by `make docs` (`python -m pipeline.docgen`); do not edit.\n",
        "Exit codes: 0 success; 1 unexpected error; 2 usage or configuration error; 3 partial "
        "(some clusters failed, the rest kept); 4 authentication or permission refused; 5 "
        "another run holds the lock.\n",
        "## gpucost\n",
        "```\n" + help_text(()) + "```\n",
    ]
    for path in iter_commands():
        parts.append(f"## gpucost {' '.join(path)}\n")
        parts.append("```\n" + help_text(path) + "```\n")
    return "\n".join(parts)


def _cell(text: str) -> str:
    # a `|` inside a cell would end it
    return text.replace("|", "\\|")


def columns_table(contract: Contract) -> str:
    """One mart's declared columns as a Markdown table (name, DuckDB type, unit, definition)."""
    lines = ["| column | type | unit | definition |", "|---|---|---|---|"]
    for c in contract.columns:
        lines.append(f"| {c.name} | {c.type} | {_cell(c.unit)} | {_cell(c.description)} |")
    return "\n".join(lines) + "\n"


def columns_in_doc(text: str) -> list[str]:
    """The marts whose column table a document holds, in order of appearance."""
    return [m.group("mart") for m in _COLUMNS_BLOCK.finditer(text)]


def render_marts(text: str, contracts: dict[str, Contract] | None = None) -> str:
    """docs/marts.md with every `<!-- columns: <mart> -->` block filled from its declaration."""
    contracts = load_contracts() if contracts is None else contracts

    def fill(match: re.Match[str]) -> str:
        mart = match.group("mart")
        if mart not in contracts:
            raise RuntimeError(
                f"docs/marts.md shows the columns of {mart}, which has no declaration"
            )
        return match.group(1) + columns_table(contracts[mart]) + match.group(4)

    return _COLUMNS_BLOCK.sub(fill, text)


def store_columns_table(table: Table) -> str:
    """One snapshot table's declared columns as a Markdown table (name, DuckDB type, where it
    comes from in the provider's document, meaning)."""
    lines = ["| column | type | source | meaning |", "|---|---|---|---|"]
    for c in table.columns:
        kind = c.type + (", not null" if c.not_null and not c.key else "")
        kind += ", key" if c.key else ""
        source = c.source if c.source.startswith("(") else f"`{c.source}`"
        lines.append(f"| {c.name} | {kind} | {_cell(source)} | {_cell(c.description)} |")
    return "\n".join(lines) + "\n"


def render_store(text: str, tables: dict[str, Table] | None = None) -> str:
    """docs/store.md with every `<!-- columns: snap.<table> -->` block filled from
    `pipeline.tables`."""
    tables = TABLES if tables is None else tables

    def fill(match: re.Match[str]) -> str:
        name = match.group("mart").removeprefix("snap.")
        if name not in tables:
            raise RuntimeError(f"docs/store.md shows the columns of {name}, which is not declared")
        return match.group(1) + store_columns_table(tables[name]) + match.group(4)

    return _COLUMNS_BLOCK.sub(fill, text)


def main() -> None:
    """Write docs/cli.md, and the column tables of docs/marts.md and docs/store.md."""
    DOC.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"{DOC}\n")
    MARTS_DOC.write_text(render_marts(MARTS_DOC.read_text(encoding="utf-8")), encoding="utf-8")
    sys.stdout.write(f"{MARTS_DOC}\n")
    STORE_DOC.write_text(render_store(STORE_DOC.read_text(encoding="utf-8")), encoding="utf-8")
    sys.stdout.write(f"{STORE_DOC}\n")


if __name__ == "__main__":
    main()
