"""Generate docs/cli.md from the commands' own --help, so the reference cannot drift.

Run `make docs` (python -m pipeline.docgen); tests/test_docs.py fails when the file is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

from pipeline.cli import cli

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


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


def main() -> None:
    """Write docs/cli.md."""
    DOC.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"{DOC}\n")


if __name__ == "__main__":
    main()
