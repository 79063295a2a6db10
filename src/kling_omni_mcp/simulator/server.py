"""Running the simulator: inside a test's event loop, or as the blocking CLI command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Mapping, Sequence

from kling_omni_mcp._asgi import serve_asgi

from .config import SimulatorConfig
from .sim import Simulator

__all__ = ["run_simulator", "running_simulator"]

logger = logging.getLogger(__name__)

#: Upper bound on how long the CLI command serves: far beyond any session, but not for ever.
_MAX_SERVE_SECONDS = 365 * 24 * 3600


@contextlib.asynccontextmanager
async def running_simulator(sim: Simulator, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``sim`` on a loopback port in the current event loop; yield its base URL.

    Callback deliveries are stopped when the block ends.
    """
    try:
        async with serve_asgi(sim.app, host=host, port=port) as base_url:
            yield base_url
    finally:
        # The app's lifespan already does this under uvicorn; closing twice is harmless.
        await sim.aclose()


async def _serve_forever(sim: Simulator, host: str, port: int) -> None:
    async with running_simulator(sim, host=host, port=port) as base_url:
        logger.info("Kling simulator listening on %s", base_url)
        await asyncio.sleep(_MAX_SERVE_SECONDS)


def run_simulator(
    host: str = "127.0.0.1",
    port: int = 8765,
    api_keys: Sequence[str] = (),
    access_keys: Mapping[str, str] | None = None,
    duration: float = 5.0,
    webhook_secret: str | None = None,
) -> None:
    """Serve a simulator until Ctrl-C (the ``kling-omni-mcp simulator`` command).

    /admin/* answers to loopback names and to ``host`` itself (unless it is a wildcard address).
    """
    if not logging.getLogger().handlers:
        # Run as a command with nothing configured: the URL must still reach the user (stderr).
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    config = SimulatorConfig(
        api_keys=tuple(api_keys),
        access_keys=dict(access_keys or {}),
        duration=duration,
        webhook_secret=webhook_secret,
        admin_hosts=() if host in ("0.0.0.0", "::", "") else (host.strip("[]"),),  # noqa: S104 - compared, not bound
    )
    if config.open_mode:
        logger.warning("No keys configured: the simulator accepts any non-empty Bearer token.")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(Simulator(config), host, port))
    logger.info("Kling simulator stopped")
