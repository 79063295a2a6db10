"""Start and stop everything a running server needs, in one place.

``open_service(settings)`` yields a ready ``KlingService``: the shared HTTP client, the Kling
client (or none, when credentials are missing: the server still starts and each call explains
what to set), the result store, the watchers' task group and, in simulate mode, the embedded
simulator on a loopback port. The MCP lifespan, the CLI's ``doctor`` and the tests all use it.
"""

from __future__ import annotations

import base64
import functools
import gc
import logging
import os
import secrets
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.request import getproxies

import anyio
import anyio.to_thread
import httpx2

from kling_omni_mcp.budget import Spending
from kling_omni_mcp.config import Settings
from kling_omni_mcp.kling.auth import ApiKeyAuth, Auth, JwtAuth
from kling_omni_mcp.kling.client import DEFAULT_USER_AGENT, KlingClient
from kling_omni_mcp.kling.errors import KlingConfigError
from kling_omni_mcp.media.outputs import ResultStore, remove_live_partials
from kling_omni_mcp.service import KlingService
from kling_omni_mcp.store import open_state_store

__all__ = [
    "GC_THRESHOLDS",
    "auth_from_settings",
    "open_service",
    "result_root",
    "simulator_webhook_secret",
    "tune_gc",
]

logger = logging.getLogger(__name__)

#: The simulator accepts any bearer token when it has no keys configured.
_SIMULATOR_TOKEN = "simulated-no-account"  # noqa: S105 - not a secret: the simulator accepts any


@functools.cache
def simulator_webhook_secret() -> str:
    """The embedded simulator's own webhook secret, made once per process.

    The simulator must never sign with the real KLING_WEBHOOK_SECRET: a callback_url it was
    given would otherwise receive deliveries any real endpoint of the user's would accept.
    """
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def auth_from_settings(settings: Settings) -> Auth:
    """The auth the settings ask for: the API key when set, else access key + secret key.

    Raises ``KlingConfigError`` saying which variable to set when neither is usable.
    """
    if settings.api_key is not None:
        return ApiKeyAuth(settings.api_key.get_secret_value())
    if settings.access_key is not None and settings.secret_key is not None:
        return JwtAuth(settings.access_key.get_secret_value(), settings.secret_key.get_secret_value())
    problem = settings.credentials_problem() or (
        "No Kling credentials are configured: set KLING_API_KEY, or KLING_ACCESS_KEY and KLING_SECRET_KEY."
    )
    raise KlingConfigError(problem)


#: The garbage collector's thresholds in a server process. Python's defaults (700, 10, 10) rescan
#: the older objects often; holding 10,000 waits (430 MB of objects) that cost about a sixth of the
#: CPU (benchmarks: worst delay 24.5 s → 20.0 s, time to put the waits in flight 10.6 s → 7.3 s).
#: Young collections every 50,000 allocations still free the short-lived cycles soon.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Collect garbage less often: for a server process, at start (see ``GC_THRESHOLDS``)."""
    gc.set_threshold(*GC_THRESHOLDS)


def result_root(settings: Settings) -> Path:
    """Where results are saved: simulated ones apart, so they are never mistaken for real ones."""
    return settings.output_dir / "simulated" if settings.simulate else settings.output_dir


class _LazyTransport(httpx2.AsyncBaseTransport):
    """httpx2's default transport, built on the first request rather than at start-up.

    Building it imports httpcore2 and loads the system CA store (about 30 ms together), which
    no host should wait for before its first answer: the first vendor request pays it instead.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._transport: httpx2.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._transport is None:
            self._transport = httpx2.AsyncHTTPTransport(**self._options)
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()


async def _remove_partials_on_sigterm() -> None:
    """On SIGTERM, delete the partial downloads of this process, then terminate as before.

    Without this, SIGTERM kills the process before any ``finally`` runs and the temp files stay
    until the next start. The signal is delivered again once the receiver is gone, so the
    process ends the way it would have (or the host program's own handler runs).
    """
    received = False
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            received = True
            removed = remove_live_partials()
            logger.info("SIGTERM: removed %d partial download(s); stopping", removed)
            break
    if received:
        os.kill(os.getpid(), signal.SIGTERM)


@asynccontextmanager
async def open_service(settings: Settings) -> AsyncIterator[KlingService]:
    """Everything the tools need, opened in order and closed in reverse."""
    async with AsyncExitStack() as stack:
        timeout = httpx2.Timeout(settings.http_timeout, connect=min(10.0, settings.http_timeout))
        limits = httpx2.Limits(max_connections=64, max_keepalive_connections=16)
        # httpx2 ignores proxy settings when given a transport: with any configured, let it
        # build its own transports as usual.
        lazy = None if getproxies() else _LazyTransport(limits=limits)
        http = await stack.enter_async_context(
            httpx2.AsyncClient(
                timeout=timeout,
                follow_redirects=True,
                limits=limits,
                transport=lazy,
                headers={"User-Agent": DEFAULT_USER_AGENT},
            )
        )
        client: KlingClient | None = None
        if settings.simulate:
            # Imported here: the simulator (and Pillow) cost start-up time only when used.
            from kling_omni_mcp.simulator import Simulator, SimulatorConfig, running_simulator

            # The simulator signs with a secret of its own, which the HTTP callback route accepts
            # in simulate mode, so callbacks can be tried end to end without the real secret.
            own_secret = simulator_webhook_secret()
            simulator = Simulator(SimulatorConfig(duration=settings.sim_duration, webhook_secret=own_secret))
            base_url = await stack.enter_async_context(running_simulator(simulator))
            logger.info("Simulate mode: the embedded Kling simulator is serving on %s", base_url)
            client = KlingClient(
                base_url, ApiKeyAuth(_SIMULATOR_TOKEN), http=http, timeout=settings.http_timeout
            )
        elif settings.has_credentials:
            client = KlingClient(
                settings.api_base_url, auth_from_settings(settings), http=http, timeout=settings.http_timeout
            )
        else:
            logger.warning("%s", settings.credentials_problem())
        store = ResultStore(
            result_root(settings), allow_private=settings.simulate or settings.download_allow_private
        )
        # Partial files of a process killed mid-download (SIGKILL, power loss) go at the next start.
        await anyio.to_thread.run_sync(store.sweep_orphaned_partials)
        shared = await stack.enter_async_context(open_state_store(settings, result_root(settings)))
        spending = Spending(
            shared.ledger,
            max_units_per_day=settings.max_units_per_day,
            confirm_above_units=settings.confirm_above_units,
        )
        service = KlingService(
            settings,
            client=client,
            http=http,
            store=store,
            simulated=settings.simulate,
            spending=spending,
            shared=shared,
        )
        async with anyio.create_task_group() as task_group:
            service.attach(task_group)
            if (
                hasattr(signal, "SIGTERM")
                and os.name == "posix"
                and threading.current_thread() is threading.main_thread()
            ):
                task_group.start_soon(_remove_partials_on_sigterm)
            try:
                yield service
            finally:
                # Poll loops end with their waiters; anything left is cancelled with the server.
                task_group.cancel_scope.cancel()
