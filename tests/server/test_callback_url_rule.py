"""create_image(callback_url=...) over real HTTP: only allowed URLs reach the vendor, and the
embedded simulator never signs with the real webhook secret."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.config import Settings
from kling_omni_mcp.runtime import simulator_webhook_secret
from tests.conftest import SimHandle, free_port, text_of
from tests.server.test_http import WEBHOOK_SECRET, client_for, http_server

pytestmark = pytest.mark.anyio

REFUSED = [
    "http://127.0.0.1:9/x",
    "http://public.example@127.0.0.1:9/x",
    "https://public.example.evil.test/callbacks/kling",
    "https://public.example/../x",
    "http://public.example/callbacks/kling",
    "https://hooks.example/kling-evil",
    "http://169.254.169.254/latest/meta-data",
]
ACCEPTED = [
    "https://public.example/callbacks/kling?tag=A%2Fb",
    "https://hooks.example/kling/job-7",
]


async def test_only_allowed_callback_urls_reach_the_vendor(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        simulator.base_url,
        public_url="https://public.example",
        callback_allowed_urls="https://hooks.example/kling",
    )
    async with http_server(settings) as url, client_for(url, None) as client:
        for value in REFUSED:
            result = await client.call_tool("create_image", {"prompt": "x", "callback_url": value})
            assert result.is_error, value
            text = text_of(result)
            assert "callback_url" in text and "KLING_CALLBACK_ALLOWED_URLS" in text
        assert simulator.sim.counters.create_requests == 0  # nothing was sent, nothing spent
        for value in ACCEPTED:
            result = await client.call_tool("create_image", {"prompt": "x", "callback_url": value})
            assert not result.is_error, text_of(result)
            task_id = result.structured_content["task_id"]  # type: ignore[index]
            assert simulator.sim.tasks[task_id].body["callback_url"] == value  # unchanged
        assert simulator.sim.counters.creates == len(ACCEPTED)


async def test_simulate_mode_signs_with_its_own_secret(make_settings: Callable[..., Settings]) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: Request) -> Response:
        received.append((await request.body(), dict(request.headers)))
        return Response(status_code=200)

    port = free_port()
    settings = make_settings(
        None,
        simulate=True,
        sim_duration=1.0,
        poll_initial_seconds=30,
        poll_max_seconds=30,
        webhook_secret=WEBHOOK_SECRET,
        public_url=f"http://127.0.0.1:{port}",
    )
    receiver = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with serve_asgi(receiver) as hook_url:
        settings = settings.model_copy(update={"callback_allowed_urls": [f"{hook_url}/hook"]})
        async with http_server(settings, port=port) as url, client_for(url, None) as client:
            # To a receiver of the operator's: signed, but not with the real secret.
            sent = await client.call_tool(
                "create_image", {"prompt": "x", "callback_url": f"{hook_url}/hook", "wait_seconds": 15}
            )
            assert not sent.is_error, text_of(sent)
            # To this server's own route: the simulator's secret is the one accepted there, so the
            # callback (not the 30 s poll) ends the wait.
            created = await client.call_tool("create_image", {"prompt": "y"})
            started = time.monotonic()
            waited = await client.call_tool(
                "wait_for_task",
                {"task_id": created.structured_content["task_id"], "timeout_seconds": 40},  # type: ignore[index]
            )
            assert not waited.is_error and time.monotonic() - started < 15
    assert received
    for body, headers in received:
        with pytest.raises(WebhookVerificationError):
            Webhook(WEBHOOK_SECRET).verify(body, headers)
        Webhook(simulator_webhook_secret()).verify(body, headers)
