"""The one way gpucost opens a DuckDB database: `connect(path, read_only=...)`.

Every connection is opened with DuckDB's extension auto-install and auto-load turned off: a
`--db` that names a SQLite file (or anything DuckDB recognises by its header) would otherwise
make DuckDB download and load an extension from the internet, inside a nightly finance job. A
file that is not a DuckDB database is refused before DuckDB reads it, with a `ConfigError`
(exit 2) naming it; a database another process holds is a `LockedError` (exit 5).
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from pipeline.errors import ConfigError, LockedError

# DuckDB's main header: a checksum (8 bytes), then the magic bytes.
_MAGIC_OFFSET = 8
_MAGIC = b"DUCK"

SAFE_CONFIG: dict[str, str | bool] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
"""Settings of every connection gpucost opens (`connect`)."""


def check_database_file(path: Path) -> None:
    """Raise `ConfigError` when `path` exists and is not a DuckDB database (a missing file is
    fine: DuckDB creates it; an empty one passes here, and DuckDB itself refuses it)."""
    try:
        with path.open("rb") as file:
            head = file.read(16)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise ConfigError(f"database {path} is a directory, not a DuckDB file") from None
    except OSError as exc:
        raise ConfigError(f"database {path} cannot be read: {exc.strerror}") from None
    if head and head[_MAGIC_OFFSET : _MAGIC_OFFSET + len(_MAGIC)] != _MAGIC:
        kind = "a SQLite file" if head.startswith(b"SQLite format") else "not a DuckDB database"
        raise ConfigError(
            f"database {path} is {kind}: point --db (or GPUCOST_DB) at a gpucost DuckDB file"
        )


def connect(path: str | os.PathLike[str], *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB database at `path` with extensions never installed or loaded on their own.

    Raises `ConfigError` for a file that is not a DuckDB database and `LockedError` when another
    process holds it; any other failure to open is DuckDB's own error.
    """
    db = Path(path)
    check_database_file(db)
    try:
        return duckdb.connect(str(db), read_only=read_only, config=dict(SAFE_CONFIG))
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise LockedError(
                f"database {db} is in use by another gpucost run (or another process); "
                "try again later"
            ) from None
        if "not a valid DuckDB database" in text or "extension" in text.lower():
            raise ConfigError(f"database {db} is not a DuckDB database: {text}") from None
        raise
