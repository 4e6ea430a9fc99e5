"""Every command turns an error into one line on stderr and its exit code, in one place."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pipeline import cli as cli_module
from pipeline.cli import cli

# What each command needs besides the common options to get as far as reading its config.
_ARGS = {
    "query": ["select 1"],
    "recs show": ["1a2b3c4d5e6f7a8b"],
    "recs dismiss": ["1a2b3c4d5e6f7a8b", "--reason", "r"],
    "recs snooze": ["1a2b3c4d5e6f7a8b", "--until", "2026-12-15"],
    "recs reopen": ["1a2b3c4d5e6f7a8b"],
    "close": ["--month", "2026-11"],
    "lake export": ["--lake", "lake"],
}


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    names = []
    for name, command in group.commands.items():
        if name == "simulate":  # the simulator's own CLI: no database, no gpucost.toml
            continue
        if isinstance(command, click.Group):
            names += _commands(command, f"{prefix}{name} ")
        else:
            names.append(f"{prefix}{name}")
    return names


@pytest.mark.parametrize("command", _commands(cli))
def test_a_bad_configuration_is_one_line_and_exit_2_for_every_command(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bad.toml"
    config.write_text("[store\n")  # not TOML
    args = [*command.split(), "--db", str(tmp_path / "x.duckdb"), "--config", str(config)]
    result = CliRunner().invoke(cli, [*args, *_ARGS.get(command, [])])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("gpucost: ") and "bad.toml" in line


def test_errors_become_exit_codes_in_one_place() -> None:
    source = Path(cli_module.__file__).read_text()
    # `common_options` maps what a command raises; only `run` (it notifies after a failure)
    # and `_notify_after_run` (notify's trouble is exit 3, not the error's code) call _fail.
    assert len(re.findall(r"_fail\(exc, ", source)) == 3
    assert source.count("except Exception") == 3
