"""Shared simulator fixtures (engineers A and B: append only)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.simulator.fleet import Fleet, FleetSpec

START = datetime(2026, 11, 13, 3, tzinfo=UTC)


@pytest.fixture
def fleet40() -> Fleet:
    """The demo's fleet: 40 generated clusters, seed 7, clock at the first night."""
    return Fleet(FleetSpec(seed=7, clusters=40, start=START))


# --- engineer B: the simulator over real HTTP ------------------------------------------------

API_KEY = "test-key-0123456789"


@pytest.fixture
def serve():
    """Start simulators on 127.0.0.1:0 for the test: `sim, url, http = serve(fleet, **opts)`.

    `http` is an httpx.Client carrying the bearer key; everything stops when the test ends.
    """
    import contextlib

    import httpx

    from pipeline.simulator.server import Simulator

    with contextlib.ExitStack() as stack:

        def start(fleet, **options):
            options.setdefault("api_key", API_KEY)
            sim = Simulator(fleet, **options)
            url = stack.enter_context(sim.run_in_thread(port=0))
            http = stack.enter_context(
                httpx.Client(
                    headers={"Authorization": f"Bearer {options['api_key']}"}, timeout=10.0
                )
            )
            return sim, url, http

        yield start
