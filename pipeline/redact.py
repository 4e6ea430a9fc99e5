"""Secrets out of a provider response before anything is written, logged or normalized.

Two entry points:

- `redact_document(doc)` on parsed JSON (any contract variant: wrapped or bare, snake_case or
  camelCase). Structural rules by key: every value of `environment.variables`, and the value of
  any key naming a secret (`password`, `private_key`/`privateKey`, `token`, `secret`, `api_key`,
  ...). Then every remaining string, and every key that carries a secret itself
  (`{"GITHUB_TOKEN=ghp_...": 1}`), goes through the text rules below.
- `redact_text(text)` on raw bodies that do not parse and on log lines: credentials inside URLs
  and connection strings (`https://user:pass@host`, `postgres://u:p@h`, `password=...`,
  `password X`), signed-URL parameters (`sig=`, `X-Amz-Signature=`, `X-Goog-Credential=`,
  `key=`, `code=`, `session=`, `token=`, ...), the token families secret scanners know
  (gitleaks, trufflehog, detect-secrets: AWS, GitHub, GitLab, Slack, Stripe, Google, SendGrid,
  Twilio, npm, PyPI, Hugging Face, OpenAI, JWTs, PEM blocks, bearer and basic credentials), and
  any word carrying the simulator's canary `CANARY-7f3a9c`. For a body that is JSON but broken,
  every value inside a `"variables": {...}` object, or inside an object or list under a key
  naming a secret, is redacted too, however deeply nested.

Known secrets: `register_secret(value)` adds a value that must never be written or printed
whatever its shape (the configured API key: `config.read_api_key` registers it as soon as it is
read). Both entry points, the log formatter and the CLI's error output replace it.

Every rule is linear in its input (no nested or overlapping quantifiers, no unbounded lazy scan
started at every position); `bench/redaction.py` measures the throughput on adversarial input.
Everything secret becomes `"[REDACTED]"`. Over-redaction is the accepted failure mode: a report
missing a harmless word costs less than a leaked key.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from decimal import Decimal
from itertools import chain, compress, repeat
from operator import is_, itemgetter
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
CANARY_MARK = "CANARY-7f3a9c"
MIN_SECRET_LENGTH = 8
"""A registered secret shorter than this is ignored: replacing every `k` of every text would
destroy the data and protect nothing (no real API key is that short)."""

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

# In text (a broken body, a log line) a few more names are taken as secret: over-redaction is
# cheap there, and the name is all the text says about its value.
_TEXT_SECRET_SUFFIXES = (
    *_SECRET_SUFFIXES,
    "pwd",
    "credential",
    "auth",
    "authorization",
    "accountkey",
    "signature",
    "sessionid",
)

# A cheap test that a string could need any text rule; most strings in a detail (timestamps,
# statuses, GPU ids) fail it, which keeps redaction of a 200 KB document fast. Every rule below
# needs one of these substrings to match (a test checks it on every planted family).
_SUSPECT_BASE = (
    r"://|bearer|basic\s|hf_|sk-|sk_|rk_|whsec_|-----begin|canary|gh[pousr]_|github_pat|xox|xapp-"
    r"|eyj|pass|pwd|token|secret|private|api.?key|access.?key|account.?key|credential|auth|sig"
    r"|session|code=|key=|gl[a-z]{2,4}-|aiza|ya29\.|npm_|pypi-|sg\.|shp|do[opr]_v1|age-secret"
    r"|akia|asia|a3t|abia|acca|agpa|aida|aipa|anpa|anva|aroa|apka|sk[0-9a-f]{32}|variables"
)
_SUSPECT = re.compile(_SUSPECT_BASE, re.IGNORECASE)

# -- text rules ----------------------------------------------------------------------------
# Linear by construction: each pattern starts at a literal (a word, `://`, `?`/`&`, a token
# prefix), its quantifiers range over classes that cannot overlap what follows them, and an
# unclosed quote is taken to the end rather than retried (`"[^"]*"?`).

# Names of secrets, not a secret:
_SECRET_WORDS = "|".join(
    (
        "password|passwd|passphrase|pwd|token|secret|api[_-]?key|access[_-]?key",
        "private[_-]?key|account[_-]?key|credentials?|authorization|auth",
    )
)
_SIGNED_PARAMS = (
    r"sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature"
    r"|x-goog-credential|x-goog-security-token|key|apikey|api_key|code|session|session_token"
    r"|sessionid|token|access_token|refresh_token|id_token|client_secret|password|pwd|secret"
    r"|auth|credential"
)

# Where a word starts: after a non-word character, or after a JSON escape (`\n`, `\t`) in a raw
# body, where `\b` would see the escape's letter glued to the secret.
_START = r"(?:(?<![A-Za-z0-9_])|(?<=\\[nrtbf]))"

# Each case-insensitive rule starts with a lookahead on its first letters: without it the engine
# tries the whole alternation at every position (4x slower on plain text).
_RULES: list[tuple[re.Pattern[str], str]] = [
    # Credentials inside a URL or connection string: the whole userinfo part goes. Anchored at
    # `://` (not at the scheme, whose characters `a.a.a` would give a start at every letter).
    (re.compile(r"://[^\s/@\"'<>]+@"), rf"://{REDACTED}@"),
    # ... and a `user:password` that a truncated body cut before its `@` (not a `host:port`: a
    # port is at most five digits).
    (re.compile(r"://[^\s/@\"'<>:]+:(?![0-9]{1,5}\Z)[^\s/@\"'<>]+\Z"), rf"://{REDACTED}"),
    # Authorization schemes in log lines and headers.
    (
        re.compile(rf"(?i)(?=[bB]){_START}(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{{6,}}"),
        rf"\1\2{REDACTED}",
    ),
    # Signed-URL and OAuth parameters: `?sig=...`, `&X-Amz-Signature=...`, `?code=...`.
    (
        re.compile(rf"(?i)([?&;](?:{_SIGNED_PARAMS})=)(?!\[REDACTED\])[^&;\s\"'<>#]+"),
        rf"\1{REDACTED}",
    ),
    # key=value and key: value pairs (log lines, DSNs like `password=...;`): the name must end
    # in a secret word right before the `=` or `:`, which is all that is matched of it.
    (
        re.compile(
            rf"(?i)(?=[ptsacPTSAC])((?:{_SECRET_WORDS})\s*[=:]\s*(?:(?:bearer|basic|token|digest)\s+)?+)"
            rf"(?!\[REDACTED\])(\"[^\"]*\"?|'[^']*'?|[^\s&;,\"']+)"
        ),
        rf"\1{REDACTED}",
    ),
    # `password X`, `--password X`, `passphrase X` in a sentence or a command line.
    (
        re.compile(r"(?i)(?=[pP])((?:password|passwd|passphrase)\s+)(?!\[REDACTED\])[^\s\"'<>]+"),
        rf"\1{REDACTED}",
    ),
    (re.compile(rf"(?i)(?=[sS]){_START}(sshpass\s+-p\s*)\S+"), rf"\1{REDACTED}"),
    (re.compile(r"hooks\.slack\.com/services/[A-Za-z0-9/_-]+"), f"hooks.slack.com/{REDACTED}"),
]

# Well-known token shapes (the gitleaks / trufflehog / detect-secrets families), matched as
# one alternation: one scan of the text instead of one per family.
TOKEN_FAMILIES: dict[str, str] = {
    "huggingface": r"hf_[A-Za-z0-9_-]{6,}",
    "openai": r"sk-[A-Za-z0-9_-]{8,}",
    "github": r"gh[pousr]_[A-Za-z0-9]{16,}",
    "github_pat": r"github_pat_[A-Za-z0-9_]{20,}",
    "slack": r"xox[abposre]-[A-Za-z0-9-]{8,}",
    "slack_app": r"xapp-[0-9]-[A-Za-z0-9-]{8,}",
    "stripe": r"[sr]k_(?:live|test)_[A-Za-z0-9]{10,}",
    "stripe_webhook": r"whsec_[A-Za-z0-9]{16,}",
    "gitlab": r"gl(?:pat|ptt|dt|rt|soat|cbt|oas)-[A-Za-z0-9_-]{16,}",
    "aws_access_key": (
        r"(?:AKIA|ASIA|A3T[A-Z0-9]|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA)[A-Z0-9]{16}\b"
    ),
    "google_api_key": r"AIza[0-9A-Za-z_-]{30,}",
    "google_oauth": r"ya29\.[0-9A-Za-z_-]{20,}",
    "npm": r"npm_[A-Za-z0-9]{30,}",
    "pypi": r"pypi-[A-Za-z0-9_-]{40,}",
    "sendgrid": r"SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}",
    "twilio": r"SK[0-9a-fA-F]{32}\b",
    "shopify": r"shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}",
    "digitalocean": r"do[opr]_v1_[a-f0-9]{64}",
    "age": r"AGE-SECRET-KEY-1[0-9A-Z]{50,}",
    "jwt": r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
}
# The first letters of every family, checked first: a lookahead charset lets the regex engine
# skip most positions in C (measured 4x faster on plain text than the bare alternation).
_FAMILY_FIRST_LETTERS = "(?=[hsgxrwAynpSde])"
_FAMILIES_ALTERNATION = "|".join(f"(?:{p})" for p in TOKEN_FAMILIES.values())
_TOKENS = re.compile(f"{_FAMILY_FIRST_LETTERS}{_START}(?:{_FAMILIES_ALTERNATION})")

# `"name": value` in a body that does not parse; the callback decides by the name. A name is
# matched from its opening quote up to the next quote only, so starts never overlap.
_JSON_PAIR = re.compile(r"\"([^\"\\\n]{1,200})\"(\s*:\s*)(\"(?:[^\"\\]|\\.)*\"?|[^\s,{}\[\]\"]+)")
# An object or list under `"variables"` or a secret name: everything inside goes.
_JSON_BLOCK = re.compile(r"\"([^\"\\\n]{1,200})\"\s*:\s*[{\[]")
# Inside such a block: runs without brackets (strings skipped whole), and its scalars (a string
# followed by `:` is a key and stays). Possessive quantifiers: nothing is ever retried.
_SKIP_TO_BRACKET = re.compile(r"(?:[^\"{}\[\]]++|\"(?:[^\"\\]++|\\.)*+\"?+)*+", re.DOTALL)
_BLOCK_SCALAR = re.compile(
    r"(?P<key>\"(?:[^\"\\]++|\\.)*+\"(?=\s*:))|\"(?:[^\"\\]++|\\.)*+\"?+|[^\s,:{}\[\]\"]++",
    re.DOTALL,
)
_PEM_BEGIN = re.compile(r"-----BEGIN[A-Z0-9 ]{0,64}-----")
_PEM_END = re.compile(r"-----END[A-Z0-9 ]{0,64}-----")
_WORD = re.compile(r"[^\s\"'<>]+")


# -- known secrets (the configured API key) ------------------------------------------------

_known_lock = threading.Lock()
_KNOWN: set[str] = set()
_KNOWN_RE: re.Pattern[str] | None = None
# Bumped by each registration, under `_known_lock` (see `_string_is_clean`).
_generation = 0


def register_secret(value: str | None) -> None:
    """Add `value` to the secrets that are replaced wherever they appear, in any text.

    Also its JSON-escaped and URL-encoded forms (an echo inside a raw body or a URL). Values
    shorter than `MIN_SECRET_LENGTH` are ignored. Process-wide and thread-safe: the CLI reads the
    key once, every stage after that is covered.
    """
    global _KNOWN_RE, _SUSPECT, _generation
    if not value or len(value.strip()) < MIN_SECRET_LENGTH:
        return
    value = value.strip()
    forms = {value, json.dumps(value)[1:-1], quote(value, safe=""), quote_plus(value)}
    with _known_lock:
        if forms <= _KNOWN:
            return
        _KNOWN.update(forms)
        alternation = "|".join(re.escape(s) for s in sorted(_KNOWN, key=len, reverse=True))
        _KNOWN_RE = re.compile(alternation, re.IGNORECASE)
        _SUSPECT = re.compile(f"{_SUSPECT_BASE}|{alternation}", re.IGNORECASE)
        # What was seen clean before may hold the new secret; a check under way with the
        # former rule must not remember its string either.
        _generation += 1
        _CLEAN.clear()
        _KEY_KIND.clear()


def forget_secrets() -> None:
    """Drop every registered secret (tests that register throwaway keys call this)."""
    global _KNOWN_RE, _SUSPECT
    with _known_lock:
        _KNOWN.clear()
        _KNOWN_RE = None
        _SUSPECT = re.compile(_SUSPECT_BASE, re.IGNORECASE)


def known_secrets() -> frozenset[str]:
    """The registered secrets and their encoded forms."""
    with _known_lock:
        return frozenset(_KNOWN)


# -- text ----------------------------------------------------------------------------------


def _is_text_secret_name(name: str) -> bool:
    norm = name.lower().replace("_", "").replace("-", "").replace(".", "").replace(" ", "")
    return norm in _SECRET_KEYS or norm.endswith(_TEXT_SECRET_SUFFIXES)


def _redact_pem(text: str) -> str:
    """PEM blocks, also cut off (a truncated body): up to the END line, else to the end of the
    JSON string (`"`) or of the text. One forward scan: once no END line follows a BEGIN, none
    follows any later BEGIN either, so no search is repeated."""
    if "-----BEGIN" not in text:
        return text
    out: list[str] = []
    pos = 0
    no_end = False
    while (begin := _PEM_BEGIN.search(text, pos)) is not None:
        out.append(text[pos : begin.start()])
        out.append(REDACTED)
        end = None if no_end else _PEM_END.search(text, begin.end())
        if end is not None:
            pos = end.end()
            continue
        no_end = True
        quote_at = text.find('"', begin.end())
        pos = len(text) if quote_at < 0 else quote_at
    out.append(text[pos:])
    return "".join(out)


def _redact_json_pair(match: re.Match[str]) -> str:
    if not _is_text_secret_name(match.group(1)):
        return match.group(0)
    return f'"{match.group(1)}"{match.group(2)}"{REDACTED}"'


def _block_end(text: str, pos: int) -> int:
    """Where the object or list opened just before `pos` closes (or the end of a cut-off text):
    strings and plain runs are skipped by one possessive regex in C, only brackets reach
    Python."""
    depth = 1
    end = len(text)
    while depth and pos < end:
        pos = _SKIP_TO_BRACKET.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= end:
            break
        depth += 1 if text[pos] in "{[" else -1
        pos += 1
    return pos


def _redact_block_value(match: re.Match[str]) -> str:
    return match.group(0) if match.group("key") else f'"{REDACTED}"'


def _redact_json_blocks(text: str) -> str:
    """Every value inside `"variables": {...}` or `"<secret name>": {...}` / `[...]`, however
    deep, in a body that may be cut off anywhere. Keys stay (they are names)."""
    if '"' not in text:
        return text
    out: list[str] = []
    pos = 0
    while (block := _JSON_BLOCK.search(text, pos)) is not None:
        name = block.group(1)
        out.append(text[pos : block.end()])
        pos = block.end()
        if name.lower() != "variables" and not _is_text_secret_name(name):
            continue
        end = _block_end(text, pos)
        out.append(_BLOCK_SCALAR.sub(_redact_block_value, text[pos:end]))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _redact_canary_words(text: str) -> str:
    # The simulator's canary marks planted secrets: the whole word carrying it goes.
    if CANARY_MARK not in text:
        return text
    return _WORD.sub(lambda m: REDACTED if CANARY_MARK in m.group(0) else m.group(0), text)


def redact_text(text: str) -> str:
    """Return `text` with every secret the text rules know replaced by `[REDACTED]`.

    For raw bodies that do not parse as JSON, for log lines and error messages; it also clears
    the values of `"variables": {...}` and of objects under secret names, since a broken body
    can still carry environment variables. Linear in the length of `text`.
    """
    text = _redact_json_blocks(text)
    text = _redact_pem(text)
    if '"' in text:
        text = _JSON_PAIR.sub(_redact_json_pair, text)
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    text = _TOKENS.sub(REDACTED, text)
    known = _KNOWN_RE
    if known is not None:
        text = known.sub(REDACTED, text)
    return _redact_canary_words(text)


def redact_bytes(body: bytes | None) -> bytes | None:
    """`redact_text` on a body read as UTF-8 (undecodable bytes replaced)."""
    if body is None:
        return None
    return redact_text(body.decode("utf-8", "replace")).encode()


def _redact_string(value: str) -> str:
    if not _SUSPECT.search(value):
        return value
    return redact_text(value)


# -- documents -----------------------------------------------------------------------------

_KEY_CACHE: dict[str, str] = {}


def _norm_key(key: str) -> str:
    # Called for every key of every document: memoized (the key vocabulary is small).
    norm = _KEY_CACHE.get(key)
    if norm is None:
        norm = key.lower().replace("_", "").replace("-", "")
        if len(_KEY_CACHE) < 10_000:
            _KEY_CACHE[key] = norm
    return norm


def _redact_all(value: Any) -> Any:
    """A value that is a secret as a whole: scalars become the marker, containers keep shape
    (in place, without recursion: a hostile document may nest deeper than Python's stack)."""
    if value is None:
        return None
    if not isinstance(value, dict | list):
        return REDACTED
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        pairs = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, item in pairs:
            if isinstance(item, dict | list):
                stack.append(item)
            elif item is not None:
                node[key] = REDACTED
    return value


# Kinds of keys; `_TAINTED` is a flag: the key's own text carries a secret.
_PLAIN, _SECRET, _ENVIRONMENT, _TAINTED = 0, 1, 2, 4
_KEY_KIND: dict[str, int] = {}


def _key_kind(key: str) -> int:
    kind = _KEY_KIND.get(key)
    if kind is None:
        norm = _norm_key(key)
        if norm in _SECRET_KEYS or norm.endswith(_SECRET_SUFFIXES):
            kind = _SECRET
        else:
            kind = _ENVIRONMENT if norm == "environment" else _PLAIN
        if _SUSPECT.search(key) and redact_text(key) != key:
            kind |= _TAINTED
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
_STR_ONLY = {str}
# Deeper than this, containers are handed back to `redact_document`'s own loop instead of
# recursed into, so that any depth is redacted without RecursionError.
_MAX_RECURSION = 200


def _string_is_clean(value: str) -> bool:
    if len(value) <= 2 or value in _CLEAN:
        return True
    # Read before the rule: a secret registered while this string is checked (with the rule of
    # before) bumps the generation, and the string is then not remembered as clean.
    generation = _generation
    if _SUSPECT.search(value):
        return False
    with _known_lock:
        if generation == _generation:
            if len(_CLEAN) >= _CLEAN_MAX:
                _CLEAN.clear()
            _CLEAN.add(value)
    return True


def _of_type(values: list[Any], kind: type) -> Iterator[Any]:
    # The values of one type, picked by C loops (no Python-level loop over the values).
    return compress(values, map(is_, map(type, values), repeat(kind)))


def _column_clean(column: list[Any], depth: int) -> bool:
    """True when `_walk` would change nothing in these values (one key's values across records
    whose keys are all plain): scalars, strings matching no rule, lists of such records."""
    types = set(map(type, column))
    if _SCALARS.issuperset(types):
        return True
    if not _CONTAINED.issuperset(types):
        return False
    strings = set(column) if types == _STR_ONLY else set(_of_type(column, str))
    if str in types and not all(map(_string_is_clean, strings)):
        return False
    if list in types:
        nested = list(chain.from_iterable(_of_type(column, list)))
        if nested and not _records_clean(nested, depth + 1):
            return False
    return True


def _uniform_records_clean(items: list[dict[Any, Any]], depth: int) -> bool | None:
    """`_records_clean` for records that all have the same keys (a metrics window's points and
    their GPU entries), column by column; None when the keys differ (the caller then checks the
    list as a whole). All records have the first one's keys when they have as many and each of
    them (`itemgetter` raises KeyError for a record without one). A numeric column is proved
    plain by one `sum` in C: it raises TypeError on a string, a list, an object or None, so a
    column it adds up holds only numbers, which no rule touches."""
    first = items[0]
    if len(set(map(len, items))) != 1:
        return None
    for key in first:
        if type(key) is not str or _key_kind(key) != _PLAIN:
            return False
    for key in first:
        get = itemgetter(key)
        try:
            sum(map(get, items), 0.0)
        except KeyError:
            return None
        except Exception:  # noqa: BLE001 - not only numbers: the column is looked at by type
            try:
                column = list(map(get, items))
            except KeyError:
                return None
            if not _column_clean(column, depth):
                return False
    return True


def _records_clean(items: list[Any], depth: int = 0) -> bool:
    """True when `_walk` would change nothing in `items`, a list of dicts: every key plain,
    every string matching no rule, nested lists again such records. The whole list is checked
    at once with C loops (its keys, the types of its values, its distinct strings), not value
    by value in Python; anything else (a nested object, a secret-looking key, a suspect
    string) answers False and the list is walked as usual."""
    if depth > 3 or set(map(type, items)) != {dict}:
        return False
    uniform = _uniform_records_clean(items, depth)
    if uniform is not None:
        return uniform
    for key in set(chain.from_iterable(items)):
        if type(key) is not str or _key_kind(key) != _PLAIN:
            return False
    return _column_clean(list(chain.from_iterable(map(dict.values, items))), depth)


def _rename_tainted_keys(node: dict[Any, Any], tainted: list[Any]) -> None:
    """Replace keys that carry a secret by their redacted text, keeping the order."""
    bad = set(tainted)
    items = list(node.items())
    node.clear()
    for key, value in items:
        new = redact_text(key) if key in bad else key
        while new in node:  # two keys that redact alike stay two entries
            new += "'"
        node[new] = value


def _walk(node: Any, later: list[Any], depth: int = 0) -> Any:
    # The hot loop of redaction (a 7-day detail holds thousands of numbers): type checks by
    # identity, one cached lookup per key, the regex only on strings not yet seen clean
    # (statuses, health words and timestamps repeat in every detail of a fleet).
    if depth > _MAX_RECURSION:
        later.append(node)
        return node
    if type(node) is dict:
        tainted: list[Any] | None = None
        for key, value in node.items():
            t = type(value)
            kind = _KEY_KIND.get(key)
            if kind is None:
                kind = _key_kind(key) if type(key) is str else _PLAIN
            if kind & _TAINTED:
                tainted = [*(tainted or ()), key]
                kind &= ~_TAINTED
            if kind == _SECRET:
                node[key] = _redact_all(value)
            elif kind == _ENVIRONMENT and t is dict:
                for env_key, env_value in value.items():
                    if type(env_key) is str and _norm_key(env_key) == "variables":
                        value[env_key] = _redact_all(env_value)
                _walk(value, later, depth + 1)  # the rest of `environment` by the ordinary rules
            elif t is str:
                if len(value) > 2 and value not in _CLEAN and not _string_is_clean(value):
                    node[key] = redact_text(value)
            elif t is dict or t is list:
                _walk(value, later, depth + 1)
        if tainted:
            _rename_tainted_keys(node, tainted)
        return node
    if type(node) is list:
        if len(node) >= _RECORDS_MIN and _records_clean(node):
            return node
        for i, value in enumerate(node):
            t = type(value)
            if t is dict or t is list:
                _walk(value, later, depth + 1)
            elif t is str and not _string_is_clean(value):
                node[i] = redact_text(value)
        return node
    if type(node) is str:
        return _redact_string(node)
    return node


def redact_document(doc: Any) -> Any:
    """Redact parsed JSON in place and return it (any contract variant, wrapped or bare).

    Every value of `environment.variables` (keys kept: they are names), the values of keys
    naming a secret anywhere (`password`, `private_key`, `token`, ...), keys that carry a secret
    themselves, and secrets inside any other string (see `redact_text`) become `"[REDACTED]"`.
    Any depth of nesting is handled (no recursion limit).
    """
    later: list[Any] = []
    doc = _walk(doc, later)
    while later:
        _walk(later.pop(), later)
    return doc
