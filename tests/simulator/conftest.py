"""Fixtures for simulator tests: a simulator served on a loopback port and a client for it.

``served`` is one simulator per test module, emptied (tasks, counters, faults) before each test,
because starting a server costs more than most tests; ``serve(**config)`` builds a fresh one
with its own settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .sim_helpers import Served, ServeFactory, serve_simulator


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # Module scope lets the shared simulator below live across the tests of a module.
    return "asyncio"


@pytest.fixture(scope="module")
async def shared_simulator() -> AsyncIterator[Served]:
    async with serve_simulator() as s:
        yield s


@pytest.fixture
def served(shared_simulator: Served) -> Served:
    """The module's simulator with the test defaults, reset for this test."""
    shared_simulator.sim.reset()
    return shared_simulator


@pytest.fixture
def serve() -> ServeFactory:
    """``async with serve(**config) as s``: a fresh simulator with that config."""
    return serve_simulator
