"""A local stand-in for Kling's Omni-Image API, enforcing the vendor's contract.

It is the embedded default a new user tries the project on (``--simulate``) and the double
every test runs against over real HTTP::

    sim = Simulator(SimulatorConfig(api_keys=("sim-key",), duration=0.5))
    async with running_simulator(sim) as base_url:
        ...  # talk to base_url; arm faults with sim.faults; read sim.counters and sim.tasks
"""

from __future__ import annotations

from .config import DEFAULT_MAX_BODY_BYTES, SimulatorConfig
from .faults import Faults
from .server import run_simulator, running_simulator
from .sim import DEFAULT_FAILURE_MESSAGE, Simulator
from .state import CallbackRecord, Counters, TaskRecord

__all__ = [
    "DEFAULT_FAILURE_MESSAGE",
    "DEFAULT_MAX_BODY_BYTES",
    "CallbackRecord",
    "Counters",
    "Faults",
    "Simulator",
    "SimulatorConfig",
    "TaskRecord",
    "run_simulator",
    "running_simulator",
]
