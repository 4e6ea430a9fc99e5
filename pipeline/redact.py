"""Secrets out of a provider response before anything is written, logged or normalized.

Two entry points:

- `redact_document(doc)` on parsed JSON (any contract variant: wrapped or bare, snake_case or
  camelCase). Structural rules by key: every value of `environment.variables`, and the value of
  any key naming a secret (`password`, `private_key`/`privateKey`, `token`, `secret`, `api_key`,
  ...). Then every remaining string goes through the text rules below.
- `redact_text(text)` on raw bodies that do not parse and on log lines: credentials inside URLs
  and connection strings (`https://user:pass@host`, `postgres://u:p@h`, `password=...`), tokens
  (`token=`, `Bearer ...`, `api_key=`, `hf_...`, `sk-...`, GitHub and Slack tokens, AWS access
  keys, JWTs), PEM blocks, and any word carrying the simulator's canary `CANARY-7f3a9c`. For a
  body that is JSON but broken, the values inside a `"variables": {...}` object are redacted too.

Everything secret becomes `"[REDACTED]"`. Over-redaction is the accepted failure mode: a report
missing a harmless word costs less than a leaked key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from itertools import chain, compress, repeat
from operator import is_
from typing import Any

REDACTED = "[REDACTED]"
CANARY_MARK = "CANARY-7f3a9c"

# Keys whose value is a secret, compared after lower-casing and dropping `_` and `-` so that
# `private_key`, `privateKey` and `PRIVATE-KEY` are one key.
_SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "privatekey",
        "secret",
        "secretkey",
        "clientsecret",
        "token",
        "accesstoken",
        "authtoken",
        "refreshtoken",
        "apikey",
        "accesskey",
        "secretaccesskey",
        "authorization",
        "credentials",
    }
)

# ... and keys ending like one (`db_password`, `jupyter_token`, `client_secret`, `ssh_key`).
_SECRET_SUFFIXES = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "privatekey",
    "apikey",
    "accesskey",
    "sshkey",
    "credentials",
)

# A cheap test that a string could need any text rule; most strings in a detail (timestamps,
# statuses, GPU ids) fail it, which keeps redaction of a 200 KB document fast.
_SUSPECT = re.compile(
    r"://|bearer|basic\s|hf_|sk-|akia|asia|-----begin|canary|gh[pousr]_|xox|eyj|pass|pwd"
    r"|token|secret|private|api.?key|access.?key|credential|auth|glpat|aiza|npm_|[sr]k_(?:live|test)",
    re.IGNORECASE,
)

_RISKY_NAME = (
    r"(?:[A-Za-z0-9_.-]*?(?:password|passwd|passphrase|pwd|token|secret|api[_-]?key"
    r"|access[_-]?key|private[_-]?key|credentials?|auth))"
)

_RULES: list[tuple[re.Pattern[str], str]] = [
    # PEM blocks, also cut off (a truncated body): everything up to the END line or the string.
    (
        re.compile(r"-----BEGIN[A-Z0-9 ]*-----(?:.*?-----END[A-Z0-9 ]*-----|[^\"]*)", re.DOTALL),
        REDACTED,
    ),
    # Credentials inside a URL or connection string: the whole userinfo part goes.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@\"'<>]+@"), rf"\g<1>{REDACTED}@"),
    # Authorization schemes in log lines and headers.
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}"), rf"\1\2{REDACTED}"),
    # JSON-ish `"some_password": "value"` inside a body that does not parse.
    (
        re.compile(rf"(?i)(\"{_RISKY_NAME}\"\s*:\s*)\"(?:[^\"\\]|\\.)*\"?"),
        rf'\1"{REDACTED}"',
    ),
    # key=value and key: value pairs (log lines, DSNs like `password=...;`).
    (
        re.compile(
            rf"(?i)\b({_RISKY_NAME}\s*[=:]\s*)(?!\[REDACTED\])(\"[^\"]*\"|'[^']*'|[^\s&;,\"']+)"
        ),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(?i)\b(sshpass\s+-p\s*)\S+"), rf"\1{REDACTED}"),
    # Well-known token shapes.
    (re.compile(r"\bhf_[A-Za-z0-9_-]{6,}"), REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), REDACTED),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{16,}"), REDACTED),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{8,}"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), REDACTED),
    (re.compile(r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{10,}"), REDACTED),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{16,}"), REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"), REDACTED),
    (re.compile(r"\bnpm_[A-Za-z0-9]{30,}"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), REDACTED),
    # The simulator's canary marks planted secrets: the whole word carrying it goes.
    (re.compile(r"[^\s\"'<>]*CANARY-7f3a9c[^\s\"'<>]*"), REDACTED),
]

# `"variables": {...}` in a body that does not parse: every string value inside goes.
_VARIABLES_BLOCK = re.compile(r"(?i)(\"variables\"\s*:\s*\{)([^{}]*)")
_JSON_STRING_VALUE = re.compile(r"(:\s*)\"(?:[^\"\\]|\\.)*\"?")


_KEY_CACHE: dict[str, str] = {}


def _norm_key(key: str) -> str:
    # Called for every key of every document: memoized (the key vocabulary is small).
    norm = _KEY_CACHE.get(key)
    if norm is None:
        norm = key.lower().replace("_", "").replace("-", "")
        if len(_KEY_CACHE) < 10_000:
            _KEY_CACHE[key] = norm
    return norm


def _redact_string(value: str) -> str:
    if not _SUSPECT.search(value):
        return value
    for pattern, replacement in _RULES:
        value = pattern.sub(replacement, value)
    return value


def redact_text(text: str) -> str:
    """Return `text` with every secret the text rules know replaced by `[REDACTED]`.

    For raw bodies that do not parse as JSON and for log lines; it also clears the values of a
    `"variables": {...}` object, since a broken body can still carry environment variables.
    """
    text = _VARIABLES_BLOCK.sub(
        lambda m: m.group(1) + _JSON_STRING_VALUE.sub(rf'\1"{REDACTED}"', m.group(2)), text
    )
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def _redact_all(value: Any) -> Any:
    """A value that is a secret as a whole: scalars become the marker, containers keep shape."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: _redact_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_all(v) for v in value]
    return REDACTED


_PLAIN, _SECRET, _ENVIRONMENT = 0, 1, 2
_KEY_KIND: dict[str, int] = {}


def _key_kind(key: str) -> int:
    kind = _KEY_KIND.get(key)
    if kind is None:
        norm = _norm_key(key)
        if norm in _SECRET_KEYS or norm.endswith(_SECRET_SUFFIXES):
            kind = _SECRET
        else:
            kind = _ENVIRONMENT if norm == "environment" else _PLAIN
        if len(_KEY_KIND) < 10_000:
            _KEY_KIND[key] = kind
    return kind


# Strings seen not to need any rule (timestamps, statuses, amounts repeat across a fleet): a
# set lookup instead of the regex. Only strings that matched nothing are kept, so no secret.
_CLEAN: set[str] = set()
_CLEAN_MAX = 50_000
# A list this long of records (the data points of a metrics window) is first checked as a
# whole, column by column, before it is walked record by record.
_RECORDS_MIN = 16
_SCALARS = frozenset({float, int, bool, type(None), Decimal})
_CONTAINED = _SCALARS | {str, list}


def _string_is_clean(value: str) -> bool:
    if len(value) <= 2 or value in _CLEAN:
        return True
    if _SUSPECT.search(value):
        return False
    if len(_CLEAN) >= _CLEAN_MAX:
        _CLEAN.clear()
    _CLEAN.add(value)
    return True


def _of_type(values: list[Any], kind: type) -> Iterator[Any]:
    # The values of one type, picked by C loops (no Python-level loop over the values).
    return compress(values, map(is_, map(type, values), repeat(kind)))


def _records_clean(items: list[Any], depth: int = 0) -> bool:
    """True when `_walk` would change nothing in `items`, a list of dicts: every key plain,
    every string matching no rule, nested lists again such records. The whole list is checked
    at once with C loops (its keys, the types of its values, its distinct strings), not value
    by value in Python; anything else (a nested object, a secret-looking key, a suspect
    string) answers False and the list is walked as usual."""
    if depth > 3 or set(map(type, items)) != {dict}:
        return False
    for key in set(chain.from_iterable(items)):
        if type(key) is not str or _key_kind(key) != _PLAIN:
            return False
    values = list(chain.from_iterable(map(dict.values, items)))
    types = set(map(type, values))
    if _SCALARS.issuperset(types):
        return True
    if not _CONTAINED.issuperset(types):
        return False
    if str in types and not all(map(_string_is_clean, set(_of_type(values, str)))):
        return False
    if list in types:
        nested = list(chain.from_iterable(_of_type(values, list)))
        if nested and not _records_clean(nested, depth + 1):
            return False
    return True


def _walk(node: Any) -> Any:
    # The hot loop of redaction (a 7-day detail holds thousands of numbers): type checks by
    # identity, one cached lookup per key, the regex only on strings that could hold a secret.
    suspect = _SUSPECT.search
    if type(node) is dict:
        for key, value in node.items():
            t = type(value)
            kind = _KEY_KIND.get(key)
            if kind is None:
                kind = _key_kind(key) if type(key) is str else _PLAIN
            if kind == _SECRET:
                node[key] = _redact_all(value)
            elif kind == _ENVIRONMENT and t is dict:
                for env_key, env_value in value.items():
                    if _norm_key(env_key) == "variables":
                        value[env_key] = _redact_all(env_value)
                _walk(value)  # the rest of `environment` by the ordinary rules
            elif t is str:
                if len(value) > 2 and value not in _CLEAN and suspect(value):
                    node[key] = _redact_string(value)
            elif t is dict or t is list:
                _walk(value)
        return node
    if type(node) is list:
        if len(node) >= _RECORDS_MIN and _records_clean(node):
            return node
        for i, value in enumerate(node):
            t = type(value)
            if t is dict or t is list:
                _walk(value)
            elif t is str and len(value) > 2 and suspect(value):
                node[i] = _redact_string(value)
        return node
    if type(node) is str:
        return _redact_string(node)
    return node


def redact_document(doc: Any) -> Any:
    """Redact parsed JSON in place and return it (any contract variant, wrapped or bare).

    Every value of `environment.variables` (keys kept: they are names), the values of keys
    naming a secret anywhere (`password`, `private_key`, `token`, ...), and secrets inside any
    other string (see `redact_text`) become `"[REDACTED]"`.
    """
    return _walk(doc)
