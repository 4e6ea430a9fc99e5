"""Make focus-validator 2.2.1 run on Python 3.11: rewrite its one 3.12-only f-string.

`config_objects/focus_to_duckdb_converter.py` quotes ignored keys with
f"'{k.replace('\\"', '\\"\\"')}'" (a backslash inside an f-string expression, PEP 701, 3.12+).
The rewrite is the same expression without the f-string. Idempotent; run with the validator's
own interpreter (`.venv-focus/bin/python tests/focus_validator/patch.py`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import focus_validator

# the text as it stands in the file (one backslash before each quote), and its replacement
OLD = "f\"'{k.replace('\\\"', '\\\"\\\"')}'\""
NEW = '"\'" + k.replace(\'"\', \'""\') + "\'"'


def main() -> int:
    """Patch the installed converter in place; exit 1 if the expected text is not found."""
    path = Path(focus_validator.__file__).parent / "config_objects" / "focus_to_duckdb_converter.py"
    text = path.read_text(encoding="utf-8")
    if NEW in text and OLD not in text:
        return 0
    if OLD not in text:
        print(f"{path}: the 3.12-only f-string was not found; another version?", file=sys.stderr)
        return 1
    path.write_text(text.replace(OLD, NEW), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
