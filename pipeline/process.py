"""A detail's 200 body made usable: parsed, redacted, normalized and validated. No HTTP here.

The client runs `process_document` in its fetching threads; a worker process
(`pipeline/workers.py`) runs `process_body` and imports only this module and what it needs
(not httpx, not the transport: ~0.25 s less CPU for each worker started, measured on
2026-12-02).

- `parse_body`: orjson, numbers as floats; the stdlib parser for what orjson refuses; a
  document nested deeper than `normalize.MAX_NESTING` is refused. A body that cannot be used
  raises `UnusableBody`, which says whether fetching it again may help (invalid JSON: once) or
  not (nested too deep); the client raises it again as the transport's `Transient` / `Final`.
- `process_document`: the redacted document normalized (money sent as JSON numbers is parsed
  again from the body, exactly) and validated, with the redacted raw body compressed as it is
  stored (`Processed`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from pipeline.normalize import (
    MAX_NESTING,
    InexactMoneyError,
    NormalizedDetail,
    NormalizeError,
    check_nesting,
    dump_json,
    normalize_detail,
    parse_json,
)
from pipeline.rawbody import compress
from pipeline.redact import redact_document
from pipeline.validate import ContractError, validate_detail

__all__ = [
    "Processed",
    "UnusableBody",
    "fast_dumps",
    "fast_loads",
    "parse_body",
    "process_body",
    "process_document",
]


class UnusableBody(Exception):
    """A 200 body that cannot be parsed: `reason`, and whether a new fetch may help (`retry`)."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


def fast_loads(body: bytes) -> Any:
    """Parse a 200 body quickly: orjson, numbers as floats (money is checked afterwards).

    orjson refuses a few things the JSON grammar or the stdlib allow (NaN, lone surrogates,
    numbers beyond a double): those bodies go through the stdlib parser, so both accept the
    same documents; ValueError when neither can parse it. A document nested deeper than
    `normalize.MAX_NESTING` raises `NormalizeError` (orjson stops at 1024 levels, the stdlib
    parser at the recursion limit: neither may abort the run).
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            doc = json.loads(body)
        except RecursionError:
            raise NormalizeError(f"nested deeper than {MAX_NESTING} levels") from None
    check_nesting(doc)
    return doc


def fast_dumps(doc: Any) -> bytes:
    """Compact JSON of a parsed body; what orjson cannot write (an integer beyond 64 bits from
    the stdlib fallback) goes through `dump_json`."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        return dump_json(doc)


def parse_body(body: bytes) -> Any:
    """`fast_loads`, its failures as `UnusableBody`: an unparsable body may be fetched again
    (retry); one nested too deep may not."""
    try:
        # Plain (fast) parse: numbers as floats. Money normally arrives as strings and becomes
        # Decimal from them; an amount sent as a JSON number makes the caller parse again with
        # parse_json (InexactMoneyError), so it never goes via a float.
        return fast_loads(body)
    except NormalizeError as exc:
        raise UnusableBody(f"malformed response: {exc}", retry=False) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnusableBody(f"invalid JSON: {exc}", retry=True) from None


@dataclass
class Processed:
    """What a detail's 200 body became: its normalized detail and redacted raw body, compressed
    (`raw_gzip`), or the reason it cannot be used (`failure`, with the redacted raw body `raw`
    when there is one). Picklable: a worker process makes it (`process_body`)."""

    detail: NormalizedDetail | None
    raw: bytes | None
    failure: str | None = None
    outside_contract: bool = False  # the failure is a value outside the contract
    raw_gzip: bytes | None = None  # when ok: `raw` as stored (`rawbody.compress`)


def process_document(doc: Any, body: bytes) -> Processed:
    """A parsed 200 detail redacted, normalized and validated; `body` is what it was parsed
    from (money sent as JSON numbers is parsed again from it, exactly)."""
    doc = redact_document(doc)
    raw = None
    try:
        try:
            raw = fast_dumps(doc)
            detail = normalize_detail(doc, exact_money=True)
        except InexactMoneyError:
            # Money sent as JSON numbers: the exact path (Decimal from the text).
            doc = redact_document(parse_json(body))
            raw = dump_json(doc)
            detail = normalize_detail(doc)
        # Before anything is written: values outside the contract fail this cluster.
        validate_detail(detail)
    except ContractError as exc:
        return Processed(None, raw, f"outside the contract: {exc}", outside_contract=True)
    except NormalizeError as exc:
        return Processed(
            None, raw if raw is not None else dump_json(doc), f"malformed detail: {exc}"
        )
    return Processed(detail, None, raw_gzip=compress(raw))


def process_body(body: bytes) -> Processed | tuple[Literal["retry", "final"], str]:
    """`parse_body` then `process_document`, for a worker process: a body the transport
    should retry (unparsable) or give up on (nested too deep) comes back as ("retry" |
    "final", reason), which the client raises again as `Transient` / `Final` (exceptions do
    not cross processes intact; `pipeline/workers.py` answers ("error", "") for anything else
    that raises)."""
    try:
        doc = parse_body(body)
    except UnusableBody as exc:
        return ("retry" if exc.retry else "final", exc.reason)
    return process_document(doc, body)
