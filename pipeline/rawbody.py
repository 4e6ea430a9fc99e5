"""A response body's stored form: gzip, made once, where the body is processed.

The client keeps an accepted detail's redacted body in this form from the moment it is processed
(in a worker process when the fetch has one), so a body waiting for its batch holds ~20 KB
rather than ~135 KB (7-day details of 8 GPUs), and a worker sends back that much less.
`raw.responses` stores these bytes as they are (`pipeline/rawstore.py`). No DuckDB here: worker
processes import this module.
"""

from __future__ import annotations

import gzip
import importlib
from types import ModuleType
from typing import Final

RAW_ENCODING: Final = "gzip"
# Level 1 compresses these JSON bodies about 6x at a fraction of level 6's CPU time.
RAW_COMPRESSLEVEL: Final = 1
# ISA-L's gzip (the `isal` package), when installed, writes the same format with about a third of
# zlib's CPU time and a slightly better ratio (measured on 7-day 8-GPU details, ~135 KB: zlib
# level 1 0.55-0.60 ms and 6.2x, ISA-L level 2 0.14-0.17 ms and 6.7x): any gzip reader, the
# stdlib's included, opens either. Without it, the stdlib's zlib.
RAW_ISAL_LEVEL: Final = 2
_igzip: ModuleType | None
try:
    _igzip = importlib.import_module("isal.igzip")
except ImportError:  # pragma: no cover - isal is a dependency; a platform without its wheel
    _igzip = None


def compress(body: bytes) -> bytes:
    """A response body as stored: gzip (ISA-L's when installed, else zlib's level 1), no
    timestamp (the same body, the same bytes)."""
    if _igzip is not None:
        return _igzip.compress(body, compresslevel=RAW_ISAL_LEVEL, mtime=0)
    return gzip.compress(body, compresslevel=RAW_COMPRESSLEVEL, mtime=0)


def decompress(stored: bytes) -> bytes:
    """The body `compress` stored."""
    if _igzip is not None:
        return _igzip.decompress(stored)
    return gzip.decompress(stored)
