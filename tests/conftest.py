"""Fixtures shared by every test module."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

# The gate is repeatable: property tests draw the same examples on every run (a random draw
# could fail CI on a find no change caused). Explore with GPUCOST_HYPOTHESIS_EXPLORE=1, or
# `pytest --hypothesis-seed=N`, and turn every find into a regression test.
settings.register_profile("gate", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("GPUCOST_HYPOTHESIS_EXPLORE") == "1" else "gate")


@pytest.fixture(autouse=True, scope="session")
def _work_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run every test in a temporary working directory.

    gpucost's defaults are relative (./gpucost.duckdb, reports/out): a test that forgets to pass
    a path writes into this folder, never into the checkout a user ran `make test` from.
    """
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(before)
