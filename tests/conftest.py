"""Fixtures shared by every test module."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


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
