"""The contract's examples kept in docs/api/examples equal the shared ones, where those exist."""

from __future__ import annotations

import pytest

from tests.shared import ROOT, shared_dir


def test_api_example_copies_equal_the_shared_examples():
    shared = shared_dir()
    if shared is None:
        pytest.skip("the shared folder is not beside this checkout")
    originals = sorted((shared / "api" / "examples").glob("*.json"))
    assert originals
    for original in originals:
        copy = ROOT / "docs" / "api" / "examples" / original.name
        assert copy.read_bytes() == original.read_bytes(), copy
