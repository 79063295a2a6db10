"""Helpers shared by the simulator tests (a unique module name, so imports never collide)."""

from __future__ import annotations

import base64
import contextlib
import io
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import jwt
from PIL import Image

from kling_omni_mcp.simulator import Simulator
from tests.conftest import serve_sim

API_KEY = "sim-key"
ACCESS_KEY = "ak-test"
# 64 bytes: PyJWT warns about shorter HMAC keys (HS512 wants 64).
SECRET_KEY = "sk-test-" + "0123456789abcdef" * 3 + "01234567"
CREATE = "/v1/images/omni-image"


@dataclass
class Served:
    """A running simulator and a client already carrying a valid API key."""

    sim: Simulator
    url: str
    client: httpx2.AsyncClient

    async def create(self, **body: Any) -> httpx2.Response:
        """POST a create with ``body`` (a prompt is added when missing)."""
        body.setdefault("prompt", "a red fox in the snow")
        return await self.client.post(CREATE, json=body)

    async def create_ok(self, **body: Any) -> dict[str, Any]:
        """Create and return ``data``; fail the test on a refusal."""
        response = await self.create(**body)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def query(self, task_id: str) -> httpx2.Response:
        return await self.client.get(f"{CREATE}/{task_id}")

    async def wait_final(self, task_id: str, *, within: float = 5.0) -> dict[str, Any]:
        """Poll until the task is succeed or failed; return the query ``data``."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            response = await self.query(task_id)
            data: dict[str, Any] = response.json()["data"]
            if data["task_status"] in ("succeed", "failed"):
                return data
            await anyio.sleep(0.05)
        raise AssertionError(f"task {task_id} did not finish within {within} s")


@contextlib.asynccontextmanager
async def serve_simulator(**overrides: Any) -> AsyncIterator[Served]:
    """A simulator (started by ``serve_sim``, as in every test) with the defaults of these tests:
    API key, access key, 0.3 s tasks, 1/8-size images; and a client carrying the API key."""
    settings: dict[str, Any] = {
        "api_keys": (API_KEY,),
        "access_keys": {ACCESS_KEY: SECRET_KEY},
        "duration": 0.3,
        "image_scale": 0.125,
    }
    settings.update(overrides)
    async with serve_sim(**settings) as handle:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx2.AsyncClient(base_url=handle.base_url, headers=headers, timeout=10) as client:
            yield Served(handle.sim, handle.base_url, client)


ServeFactory = Callable[..., contextlib.AbstractAsyncContextManager[Served]]


def make_image(width: int, height: int, fmt: str = "PNG", color: str = "teal") -> bytes:
    """An image file of the given size and format."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format=fmt)
    return out.getvalue()


def b64_image(width: int, height: int, fmt: str = "PNG") -> str:
    """A bare Base64 image, as the API wants it in ``image_list``."""
    return base64.b64encode(make_image(width, height, fmt)).decode()


def make_jwt(
    *,
    iss: str = ACCESS_KEY,
    secret: str = SECRET_KEY,
    exp_in: float = 1800,
    nbf_in: float = -5,
    algorithm: str = "HS256",
) -> str:
    """A vendor-style JWT; offsets are seconds from now."""
    now = time.time()
    claims = {"iss": iss, "exp": int(now + exp_in), "nbf": int(now + nbf_in)}
    return jwt.encode(claims, secret, algorithm=algorithm, headers={"typ": "JWT"})


async def until(predicate: Callable[[], bool], *, within: float = 5.0, step: float = 0.02) -> None:
    """Wait until ``predicate()`` holds; fail the test after ``within`` seconds."""
    for _ in range(int(within / step) + 1):
        if predicate():
            return
        await anyio.sleep(step)
    raise AssertionError(f"condition not met within {within} s")
