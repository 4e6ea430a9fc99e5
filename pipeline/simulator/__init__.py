"""The simulated GPU cloud: a deterministic fleet served over real HTTP on loopback.

    from pipeline.simulator import Fleet, FleetSpec, Simulator, RateLimit, FaultSpec, VariantSpec

    fleet = Fleet(FleetSpec(seed=7, clusters=40, start=datetime(2026, 11, 13, 3, tzinfo=UTC)))
    sim = Simulator(fleet, api_key="k", rate_limit=RateLimit(1000, 3600),
                    faults=FaultSpec(rates={"error_500": 0.1}), variants=VariantSpec(camel=True))
    with sim.run_in_thread(port=0) as base_url:   # http://127.0.0.1:PORT/v1
        ...

The fleet and ground truth (fleet.py, truth.py) are imported lazily, on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.simulator.faults import FAULT_KINDS, FaultSpec
from pipeline.simulator.server import RateLimit, Simulator
from pipeline.simulator.variants import VARIANT_NAMES, VariantSpec

_LAZY = {
    "Fleet": "pipeline.simulator.fleet",
    "FleetSpec": "pipeline.simulator.fleet",
    "ClusterPlan": "pipeline.simulator.fleet",
    "CANARY": "pipeline.simulator.fleet",
    "ground_truth": "pipeline.simulator.truth",
    "GroundTruth": "pipeline.simulator.truth",
}

__all__ = [
    "FAULT_KINDS",
    "VARIANT_NAMES",
    "FaultSpec",
    "RateLimit",
    "Simulator",
    "VariantSpec",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Import the fleet and truth modules only when one of their names is used."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipeline.simulator' has no attribute {name!r}")
