"""Where the shared truth beside the project is: the API examples, FOCUS spec and real data.

Looked up in this order: env GPUCOST_SHARED, `../shared` beside the checkout, `/work/shared`.
The API examples are also kept in `docs/api/examples/` (the contract's examples, so a clone
alone can run the tests); the real data is never copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path | None:
    """The shared folder, or None when this machine does not have it."""
    candidates = [os.environ.get("GPUCOST_SHARED"), ROOT.parent / "shared", "/work/shared"]
    for candidate in candidates:
        if candidate and Path(candidate, "DESIGN.md").is_file():
            return Path(candidate)
    return None


def api_examples_dir() -> Path:
    """The provider's response examples: the shared ones, else the copy in docs/api/examples."""
    shared = shared_dir()
    if shared is not None and (shared / "api" / "examples").is_dir():
        return shared / "api" / "examples"
    return ROOT / "docs" / "api" / "examples"


def api_example(name: str) -> Path:
    """One example file by name, e.g. `cluster_detail.json`."""
    return api_examples_dir() / name


def real_data_dir(name: str) -> Path | None:
    """A real data set under shared/data, or None when it is not on this machine."""
    shared = shared_dir()
    if shared is None or not (shared / "data" / name).is_dir():
        return None
    return shared / "data" / name
