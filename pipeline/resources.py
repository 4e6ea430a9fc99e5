"""Where the SQL models and report templates live, in a checkout or in an installed wheel.

The wheel carries `sql/` and `reports/templates/` as `pipeline/_resources/...` (pyproject's
force-include); a checkout or an editable install reads them from the repository root.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_INSTALLED = _PACKAGE_DIR / "_resources"
_CHECKOUT = _PACKAGE_DIR.parent


def sql_dir() -> Path:
    """The folder of SQL models (`staging/`, `intermediate/`, `marts/`, `tests/`)."""
    installed = _INSTALLED / "sql"
    return installed if installed.is_dir() else _CHECKOUT / "sql"


def templates_dir() -> Path:
    """The folder of Jinja templates for the HTML and CSV reports."""
    installed = _INSTALLED / "templates"
    return installed if installed.is_dir() else _CHECKOUT / "reports" / "templates"
