"""One loopback HTTP server per test module, with a fresh app plugged in for every test.

Starting and stopping uvicorn costs ~0.2 s, most of a typical test here. The server runs for the
whole module and forwards each request to ``Switchboard.app``, which every test replaces with its
own (a fresh simulator, or a scripted app): state never leaks between tests, and a slow handler
left over from an earlier test keeps talking to that test's own, discarded app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from kling_omni_mcp._asgi import serve_asgi


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # Module scope, so the module-scoped server below can share the tests' event loop.
    return "asyncio"


class Switchboard:
    """An ASGI app that answers lifespan itself and hands every request to ``app``."""

    def __init__(self) -> None:
        self.app: Any = None
        self.base_url = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            for _ in range(2):  # startup, then shutdown
                message = await receive()
                await send({"type": message["type"] + ".complete"})
            return
        if self.app is None:
            raise RuntimeError("no app plugged into the test server")
        # `send` passes through untouched: the simulator aborts connections through it.
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
async def switchboard() -> AsyncIterator[Switchboard]:
    board = Switchboard()
    async with serve_asgi(board) as base_url:
        board.base_url = base_url
        yield board
