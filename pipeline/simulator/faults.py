"""Faults the simulator injects on demand: seedable, countable, transient or permanent.

Every decision is a pure function of (fault seed, kind, request key[, attempt]), hashed with
BLAKE2b (Python's `hash` is salted per process), so a test can ask in advance which clusters a
fault will hit (`FaultSpec.affects`) and compare with what the client recorded.

The request key is the cluster id for a details request and the normalized query for a list
page. A key is *affected* by a kind when `u(seed, kind, key) < rate`: the rate is the share of
keys (clusters, pages) that the fault hits.

- Transient kinds (the default) hit an affected key on its first `transient_attempts` requests
  and then let it through, so a client that retries recovers every cluster. The server counts
  those attempts per simulated night: once the virtual clock moves, the faults fire again.
- Permanent kinds (`FaultSpec(permanent={"invalid_json"})`) hit an affected cluster on every
  details request; on a list page they act as transient, so a list can always be read in full.

Kinds (`FAULT_KINDS`):

    error_500     500 INTERNAL_ERROR, contract JSON body
    error_502     502 with an HTML body, as a proxy in front of the API sends it
    error_503     503 SERVICE_UNAVAILABLE, JSON body and Retry-After: 1
    timeout       no response for `timeout_seconds` (longer than the client's timeout), then
                  the connection is closed
    drop          the connection is closed without any response
    truncated     200 whose JSON body is cut in the middle (Content-Length matches the cut)
    invalid_json  200 whose body is not JSON (quotes broken)
    slow          the normal response, after `slow_seconds`
    deleted       details answer 404 RESOURCE_NOT_FOUND for a cluster the list still shows
                  (deleted between list and details); always permanent, details only
    duplicate     a list page boundary where a cluster inserted meanwhile shifts the paging:
                  the last item of page p-1 appears again first on page p (and every later
                  page is shifted by one more); list only
    storm_429     a 429 burst: a request starts a storm with probability `rate` (decided by
                  its sequence number), and every API request in the next `storm_seconds` of
                  wall-clock time gets 429 RATE_LIMIT_EXCEEDED with Retry-After

Counted in `/_sim/stats` under `faults` by kind (one count per faulty response) and, for
details requests, under `faulted_clusters` by cluster id and kind.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

FAULT_KINDS: tuple[str, ...] = (
    "error_500",
    "error_502",
    "error_503",
    "timeout",
    "drop",
    "truncated",
    "invalid_json",
    "slow",
    "deleted",
    "duplicate",
    "storm_429",
)

# Kinds decided per request (in this order: the first that fires wins).
REQUEST_KINDS: tuple[str, ...] = (
    "deleted",
    "error_500",
    "error_502",
    "error_503",
    "timeout",
    "drop",
    "truncated",
    "invalid_json",
    "slow",
)

_ALIASES = {
    "500": "error_500",
    "502": "error_502",
    "503": "error_503",
    "429": "storm_429",
    "dropped": "drop",
    "malformed": "invalid_json",
    "404": "deleted",
    "duplicates": "duplicate",
}

# Past the pipeline's default api.timeout_seconds (30 s): a timeout fault must really time out.
# Tests set a short client timeout and a matching short `timeout_seconds`.
DEFAULT_TIMEOUT_SECONDS = 35.0
DEFAULT_SLOW_SECONDS = 0.2
DEFAULT_STORM_SECONDS = 1.0


def fault_kind(name: str) -> str:
    """The canonical kind for `name` (accepts aliases such as `500` or `dropped`)."""
    kind = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {name!r}; known: {', '.join(FAULT_KINDS)}")
    return kind


def unit_hash(*parts: object) -> float:
    """A uniform number in [0, 1) that depends only on `parts` (stable across processes)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return struct.unpack(">Q", digest)[0] / 2.0**64


@dataclass(frozen=True)
class FaultSpec:
    """Which faults to inject and how often; the default injects none.

    `rates` maps a kind of `FAULT_KINDS` to the share of keys it hits (0..1). Example: one
    cluster in ten answers 500 once, one in twenty is always malformed JSON:

        FaultSpec(rates={"error_500": 0.1, "invalid_json": 0.05},
                  permanent=frozenset({"invalid_json"}))
    """

    rates: Mapping[str, float] = field(default_factory=dict)
    permanent: frozenset[str] = frozenset()
    seed: int = 0
    transient_attempts: int = 1
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    slow_seconds: float = DEFAULT_SLOW_SECONDS
    storm_seconds: float = DEFAULT_STORM_SECONDS

    def __post_init__(self) -> None:
        rates = {fault_kind(k): float(v) for k, v in dict(self.rates).items()}
        for kind, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate for {kind} must be within 0..1, got {rate}")
        object.__setattr__(self, "rates", rates)
        object.__setattr__(self, "permanent", frozenset(fault_kind(k) for k in self.permanent))
        if self.transient_attempts < 1:
            raise ValueError("transient_attempts must be >= 1")

    @classmethod
    def parse(cls, items: Iterable[str], *, seed: int = 0, **options: float) -> FaultSpec:
        """Build from `KIND=RATE` strings (`KIND=RATE:permanent` for a permanent fault)."""
        rates: dict[str, float] = {}
        permanent: set[str] = set()
        for item in items:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"fault {item!r} is not KIND=RATE")
            rate_text, _, mode = value.partition(":")
            kind = fault_kind(name)
            try:
                rates[kind] = float(rate_text)
            except ValueError:
                raise ValueError(f"fault rate {rate_text!r} for {kind} is not a number") from None
            if mode == "permanent":
                permanent.add(kind)
            elif mode not in ("", "transient"):
                raise ValueError(f"fault mode {mode!r} for {kind}: use transient or permanent")
        return cls(rates=rates, permanent=frozenset(permanent), seed=seed, **options)  # type: ignore[arg-type]

    @property
    def active(self) -> bool:
        """True when any fault has a non-zero rate."""
        return any(rate > 0 for rate in self.rates.values())

    def rate(self, kind: str) -> float:
        """The configured rate of `kind` (0 when not configured)."""
        return self.rates.get(fault_kind(kind), 0.0)

    def is_permanent(self, kind: str) -> bool:
        """Permanent faults hit every attempt; `deleted` is permanent by nature."""
        kind = fault_kind(kind)
        return kind == "deleted" or kind in self.permanent

    def affects(self, kind: str, key: str) -> bool:
        """True when fault `kind` is set to hit requests for `key` (a cluster id or page key)."""
        kind = fault_kind(kind)
        rate = self.rates.get(kind, 0.0)
        return rate > 0 and unit_hash(self.seed, kind, key) < rate

    def affected(self, kind: str, keys: Iterable[str]) -> list[str]:
        """The keys (e.g. cluster ids) among `keys` that `kind` hits, in their given order."""
        return [key for key in keys if self.affects(kind, key)]

    def request_fault(self, key: str, attempt: int, *, details: bool) -> str | None:
        """The fault for the `attempt`-th (1-based) request for `key`, or None.

        Permanent faults fire on every attempt of a details request; transient ones on the
        first `transient_attempts` attempts only.
        """
        for kind in REQUEST_KINDS:
            if kind == "deleted" and not details:
                continue
            if not self.affects(kind, key):
                continue
            if self.is_permanent(kind):
                if details:
                    return kind
                if attempt <= self.transient_attempts:
                    return kind
            elif attempt <= self.transient_attempts:
                return kind
        return None

    def starts_storm(self, sequence: int) -> bool:
        """True when the request with this sequence number starts a 429 storm."""
        rate = self.rates.get("storm_429", 0.0)
        return rate > 0 and unit_hash(self.seed, "storm_429", sequence) < rate

    def page_shift(self, list_key: str, page: int) -> int:
        """How many items page `page` is shifted back by duplicate faults at its boundaries.

        Boundary b (between page b-1 and page b, b >= 2) is affected when
        `affects("duplicate", f"{list_key}|{b}")`; a page is shifted by the number of affected
        boundaries up to and including its own.
        """
        if self.rates.get("duplicate", 0.0) <= 0 or page < 2:
            return 0
        cache_key = (self.seed, self.rates["duplicate"], list_key)
        with _SHIFT_LOCK:
            shifts = _SHIFTS.setdefault(cache_key, [0, 0])
            while len(shifts) <= page:
                boundary = len(shifts)
                hit = self.affects("duplicate", f"{list_key}|{boundary}")
                shifts.append(shifts[-1] + int(hit))
            return shifts[page]


# Cumulative page shifts per (seed, rate, list query): paging with limit=1 through a large fleet
# would otherwise rehash every boundary on every request.
_SHIFTS: dict[tuple[int, float, str], list[int]] = {}
_SHIFT_LOCK = threading.Lock()
