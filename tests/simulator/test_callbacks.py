"""Callbacks: each status change is POSTed to callback_url, signed the Standard Webhooks way."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kling_omni_mcp._asgi import serve_asgi

from .sim_helpers import ServeFactory, until

pytestmark = pytest.mark.anyio

SECRET = "whsec_" + base64.b64encode(b"simulator-callback-secret-32byte").decode()


@dataclass
class Receiver:
    url: str
    posts: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    status: int = 200

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body, _ in self.posts]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    holder: list[Receiver] = []

    async def hook(request: Request) -> Response:
        holder[0].posts.append((await request.body(), dict(request.headers)))
        return Response("ok", status_code=holder[0].status)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with serve_asgi(app) as base:
        holder.append(Receiver(base + "/hook"))
        yield holder[0]


async def _wait_for_posts(receiver: Receiver, count: int) -> None:
    await until(lambda: len(receiver.posts) >= count)


async def test_each_status_change_is_posted_and_signed(serve: ServeFactory, receiver: Receiver) -> None:
    async with serve(duration=0.6, webhook_secret=SECRET) as s:
        created = await s.create_ok(callback_url=receiver.url, external_task_id="cb-1")
        await _wait_for_posts(receiver, 3)
        await anyio.sleep(0.1)
        bodies = receiver.bodies()
        assert [b["task_status"] for b in bodies] == ["submitted", "processing", "succeed"]
        assert all(b["task_id"] == created["task_id"] for b in bodies)
        assert bodies[-1]["task_info"] == {"external_task_id": "cb-1"}
        assert bodies[-1]["task_result"]["images"][0]["url"].startswith(s.url)
        assert bodies[-1]["final_unit_deduction"] == "8"
        webhook = Webhook(SECRET)
        for body, headers in receiver.posts:
            assert webhook.verify(body, headers) == json.loads(body)
            assert headers["webhook-signature"].startswith("v1,")
        ids = {headers["webhook-id"] for _, headers in receiver.posts}
        assert len(ids) == 3  # each delivery is its own message
        records = list(s.sim.counters.callbacks)
        assert [(r.task_status, r.http_status, r.signed) for r in records] == [
            ("submitted", 200, True),
            ("processing", 200, True),
            ("succeed", 200, True),
        ]


async def test_a_wrong_secret_does_not_verify(serve: ServeFactory, receiver: Receiver) -> None:
    async with serve(duration=0.05, webhook_secret=SECRET) as s:
        await s.create_ok(callback_url=receiver.url)
        await _wait_for_posts(receiver, 1)
        body, headers = receiver.posts[0]
        other = Webhook("whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode())
        with pytest.raises(Exception, match="signature"):
            other.verify(body, headers)


async def test_failed_task_callback_carries_the_reason(serve: ServeFactory, receiver: Receiver) -> None:
    async with serve(duration=0.2) as s:
        s.sim.faults.fail_next_tasks(1, message="Refused by policy")
        await s.create_ok(callback_url=receiver.url)
        await until(lambda: bool(receiver.posts) and receiver.bodies()[-1]["task_status"] == "failed")
        final = receiver.bodies()[-1]
        assert (final["task_status_msg"], final["final_unit_deduction"]) == ("Refused by policy", "0")
        assert "webhook-signature" not in receiver.posts[-1][1]  # no secret, no signature


async def test_unreachable_or_refusing_receivers_are_recorded_not_raised(
    serve: ServeFactory, receiver: Receiver
) -> None:
    receiver.status = 500
    async with serve(duration=0.1, callback_timeout=1.0) as s:
        await s.create_ok(callback_url=receiver.url)
        await s.create_ok(callback_url="http://127.0.0.1:9/nothing-listens-here")
        await until(lambda: len({r.url for r in s.sim.counters.callbacks if r.task_status == "succeed"}) == 2)
        refused = [r for r in s.sim.counters.callbacks if r.url == receiver.url]
        assert refused and all(r.http_status == 500 for r in refused)
        dead = [r for r in s.sim.counters.callbacks if r.url != receiver.url]
        assert dead and all(r.http_status is None and r.error for r in dead)
        assert (await s.client.get("/v1/images/omni-image")).status_code == 200
