"""Usage archetypes and the generated fleet's make-up (private to the simulator).

Every generator here is vectorized over one chunk of absolute hours and draws only from the
numpy Generator it is given, so a chunk's values are a pure function of (seed, cluster, chunk).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

# name: (memory_total_gb, idle watts, max watts, (min, max) on-demand price per GPU-hour in USD)
GPU_TYPES: dict[str, tuple[float, float, float, tuple[float, float]]] = {
    "H100": (80.0, 70.0, 700.0, (2.49, 6.98)),
    "A100": (80.0, 55.0, 400.0, (1.29, 3.99)),
    "L40S": (48.0, 35.0, 350.0, (0.99, 1.99)),
    "L4": (24.0, 16.0, 72.0, (0.44, 0.89)),
    "T4": (16.0, 10.0, 70.0, (0.29, 0.59)),
}

# region: UTC offset in whole hours (the working hours of notebook users follow it)
REGIONS: dict[str, int] = {
    "us-west-2": -8,
    "us-east-1": -5,
    "eu-west-1": 0,
    "eu-central-1": 1,
    "ap-northeast-1": 9,
    "ap-south-1": 5,
}
EUR_REGIONS = ("eu-west-1", "eu-central-1")

ARCHETYPES = (
    "training",  # steady training: busy 85-99 % with short checkpoint gaps
    "inference",  # diurnal inference: never idle, peaks in the afternoon of its region
    "notebook",  # developer notebook: busy in local working hours, idle nights and weekends
    "forgotten",  # nobody uses it: < 2 % with several GB of GPU memory held
    "partial",  # multi-GPU where some GPUs are never busy
    "stopped",  # stopped, storage still billing
    "error",  # in `error`, still billing everything
)

HOSTILE_NAMES = (
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '=HYPERLINK("http://evil.example","x")',
    "+1+1",
    "-2+3",
    "@SUM(A1)",
)


@dataclass(frozen=True)
class Slot:
    """One cluster of the 40-cluster deck: its archetype and what happens to it."""

    archetype: str
    mods: frozenset[str] = field(default_factory=frozenset)
    hostile_name: str | None = None


def _slot(archetype: str, *mods: str, name: str | None = None) -> Slot:
    return Slot(archetype, frozenset(mods), name)


# The deck: every 40 consecutive generated clusters are one shuffled copy of it, so a 40-cluster
# fleet holds every archetype and event, and larger fleets keep the same proportions.
# Modifiers: late (late-data revisions), eur, no_gpus (no per-GPU series), no_point_cost,
# created / deleted (during the period), price, resize (8 -> 4), stop_start, stop_mid,
# error_mid, secrets_env, secrets_ssh, secrets_url, secrets_logs.
DECK: tuple[Slot, ...] = (
    _slot("training", "price", "secrets_env"),
    _slot("training", "late"),
    _slot("training", "eur"),
    _slot("training", "no_gpus"),
    _slot("training", "deleted"),
    _slot("training", "created"),
    _slot("training", "resize"),
    _slot("training", "secrets_ssh", "secrets_logs"),
    _slot("training", name=HOSTILE_NAMES[2]),
    _slot("training", "no_point_cost"),
    _slot("inference", "late"),
    _slot("inference", "no_point_cost"),
    _slot("inference", "eur", "secrets_url"),
    _slot("inference", "created"),
    _slot("inference", "deleted"),
    _slot("inference", "price"),
    _slot("inference", name=HOSTILE_NAMES[3]),
    _slot("notebook", "secrets_env", "secrets_logs", name=HOSTILE_NAMES[0]),
    _slot("notebook", name=HOSTILE_NAMES[1]),
    _slot("notebook", "late"),
    _slot("notebook", "no_gpus"),
    _slot("notebook", "stop_start"),
    _slot("notebook", "secrets_ssh", "secrets_url"),
    _slot("notebook", "created"),
    _slot("notebook", "price", name=HOSTILE_NAMES[4]),
    _slot("notebook"),
    _slot("forgotten", "secrets_env", "stop_mid"),  # its owner stops it: stop_idle resolved
    _slot("forgotten", "eur"),
    _slot("forgotten", "no_gpus"),
    _slot("forgotten", "deleted"),
    _slot("forgotten", name=HOSTILE_NAMES[5]),
    _slot("partial", "resize"),  # 4 busy of 8, resized to 4: downsize resolved
    _slot("partial", "late", "secrets_logs"),
    _slot("partial"),
    _slot("partial", "price"),
    _slot("stopped"),
    _slot("stopped", "secrets_env", "secrets_ssh"),
    _slot("stopped", "stop_mid"),
    _slot("error"),
    _slot("error", "error_mid"),
)
assert len(DECK) == 40


def gpu_choices(archetype: str, mods: frozenset[str]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """GPU types and counts an archetype is drawn from."""
    if "resize" in mods:
        return ("H100", "A100"), (8,)
    return {
        "training": (("H100", "A100"), (2, 4, 8)),
        "inference": (("L40S", "L4", "A100"), (1, 2, 4)),
        "notebook": (("A100", "L4", "T4", "L40S"), (1, 1, 2)),
        "forgotten": (("A100", "L40S", "T4", "H100"), (1, 2, 4)),
        "partial": (("H100", "A100"), (4, 8)),
        "stopped": (("A100", "L40S", "L4"), (1, 2)),
        "error": (("A100", "H100", "L40S"), (1, 2, 4)),
    }[archetype]


def price_for(rng: np.random.Generator, gpu_type: str, currency: str) -> Decimal:
    """A per-GPU-hour on-demand price near public list prices, 2 decimals."""
    lo, hi = GPU_TYPES[gpu_type][3]
    value = float(rng.uniform(lo, hi))
    if currency == "EUR":
        value *= 0.93
    return Decimal(f"{value:.2f}")


def generate(
    archetype: str,
    rng: np.random.Generator,
    hours: np.ndarray,
    gpus: int,
    *,
    tz_offset: int,
    mem_total: float,
    busy_gpus: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Utilization (%) and memory used (GB) per hour x GPU, before status overlays.

    `hours` are absolute hours since the epoch (UTC); values are not yet rounded.
    """
    n = len(hours)
    local = hours + tz_offset
    hod = local % 24
    dow = (local // 24 + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    if archetype in ("training", "partial", "error", "stopped"):
        util = rng.uniform(85.0, 99.0, (n, gpus))
        # checkpoint/restart gaps of 1-3 h: short, so never an 8 h idle run
        gap = rng.random(n) < 0.02
        for i in np.flatnonzero(gap).tolist():
            length = int(rng.integers(1, 4))
            util[i : i + length, :] = rng.uniform(0.0, 3.0, (min(length, n - i), gpus))
        mem = rng.uniform(0.70, 0.95, (n, gpus)) * mem_total
        if archetype == "partial":
            util[:, busy_gpus:] = rng.uniform(0.0, 1.5, (n, gpus - busy_gpus))
            mem[:, busy_gpus:] = rng.uniform(0.2, 0.6, (n, gpus - busy_gpus))
        return util, mem
    if archetype == "inference":
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * (hod - 9) / 24)
        base = 18.0 + 62.0 * wave
        util = base[:, None] + rng.normal(0.0, 4.0, (n, gpus))
        util = np.clip(util, 10.0, 99.0)
        mem = np.full((n, gpus), 0.35 * mem_total) + rng.uniform(-1.0, 1.0, (n, gpus))
        return util, mem
    if archetype == "notebook":
        working = (hod >= 9) & (hod < 18) & (dow < 5)
        busy = rng.uniform(12.0, 80.0, (n, gpus))
        idle = rng.uniform(0.0, 2.0, (n, gpus))
        util = np.where(working[:, None], busy, idle)
        # an open notebook keeps its tensors: memory stays held overnight
        mem = np.where(working[:, None], rng.uniform(6.0, 14.0, (n, gpus)), 4.5)
        return util, mem
    if archetype == "forgotten":
        util = rng.uniform(0.0, 1.8, (n, gpus))
        mem = np.full((n, gpus), 6.0) + rng.uniform(-0.05, 0.05, (n, gpus))
        return util, mem
    raise ValueError(f"unknown archetype {archetype!r}")
