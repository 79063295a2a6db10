"""Serve an ASGI app with uvicorn inside the running event loop, on a real loopback socket.

Used by the embedded simulator (``--simulate``), by tests and by benchmarks: every one of them
wants "start this app on a free port, give me its URL, stop it cleanly afterwards" without a
thread or a subprocess, and without uvicorn taking over the process's signal handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Generator
from typing import Any

import uvicorn

__all__ = ["serve_asgi"]

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT = 15.0
_SHUTDOWN_TIMEOUT = 5.0


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to the host program."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serve_asgi(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    **uvicorn_options: Any,
) -> AsyncIterator[str]:
    """Run ``app`` on ``host:port`` (0 picks a free port) and yield its base URL.

    ``uvicorn_options`` go to ``uvicorn.Config`` (e.g. the HTTP transport's limits).

    The socket is bound before uvicorn starts, so the port is known and nothing races for it.
    On exit the server is asked to stop, then forced after a few seconds.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so, and accepted
    # connections inherit it. With proto 0, Nagle + delayed ACK add ~40 ms to every answer on a
    # kept-alive connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.setblocking(False)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="auto",
        timeout_graceful_shutdown=2,
        log_config=None,
        **uvicorn_options,
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn:{bound_port}")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STARTUP_TIMEOUT
        while not server.started:
            if task.done():
                # Surface the startup failure (e.g. a lifespan error) instead of hanging.
                task.result()
                raise RuntimeError("the HTTP server stopped before it started")
            if loop.time() > deadline:
                raise TimeoutError(f"the HTTP server did not start within {_STARTUP_TIMEOUT:.0f} s")
            await asyncio.sleep(0.01)
        shown_host = f"[{host}]" if family == socket.AF_INET6 else host
        yield f"http://{shown_host}:{bound_port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), _SHUTDOWN_TIMEOUT)
        except (TimeoutError, asyncio.CancelledError):
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        except BaseException:
            logger.debug("HTTP server on port %s ended with an error", bound_port, exc_info=True)
        finally:
            sock.close()
