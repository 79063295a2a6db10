"""A small hostile fake of the Kling API for the tests: a raw HTTP/1.1 server on loopback.

Raw (not Starlette) because some behaviours are below what a framework lets one do: drip one
byte every few seconds, promise a body and never finish it. Each route answers with one named
behaviour from ``BEHAVIOURS``; tests pick them from that table. Every request is recorded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from tests.conftest import write_png

Send = Callable[[bytes], Awaitable[None]]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Vendor:
    """Routes (path without query → behaviour name and its arguments) and what was asked."""

    base_url: str = ""
    routes: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def route(self, path: str, behaviour: str, **args: Any) -> None:
        self.routes[path] = (behaviour, args)

    def seen(self, path_prefix: str = "") -> list[Request]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]


def envelope(data: Any, **extra: Any) -> bytes:
    return json.dumps(
        {"code": 0, "message": "SUCCEED", "request_id": "rid-1", "data": data, **extra}
    ).encode()


def task(task_id: str = "t-1", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task_id": task_id,
        "task_status": "succeed",
        "task_status_msg": "",
        "task_info": {"external_task_id": "ext-1"},
        "task_result": {"result_type": "single", "images": []},
        "created_at": 1_764_000_000_000,
        "updated_at": 1_764_000_030_000,
        "final_unit_deduction": "8",
    }
    body.update(fields)
    return body


def _head(status: int, content_type: str, length: int | None, extra: dict[str, str] | None = None) -> bytes:
    reason = {200: "OK", 302: "Found", 404: "Not Found"}.get(status, "X")
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- behaviours: each sends one whole answer ---------------------------------------------------


async def json_answer(send: Send, req: Request, *, data: Any = None, body: bytes | None = None) -> None:
    """A JSON envelope around ``data`` (or the raw ``body``)."""
    payload = body if body is not None else envelope(data)
    await send(_head(200, "application/json", len(payload)) + payload)


async def echo_credentials(send: Send, req: Request, *, task_id: str = "t-1") -> None:
    """Echo the Authorization header (and thus the key or JWT) into every vendor string."""
    credential = req.headers.get("authorization", "").partition(" ")[2]
    echoed = task(
        task_id,
        task_status="failed",
        task_status_msg=f"bad token {credential} (Authorization: Bearer {credential})",
        task_info={"external_task_id": f"ext-{credential}"},
        task_result={"images": [{"index": 0, "url": f"https://cdn.example/x.png?key={credential}"}]},
    )
    payload = envelope(echoed, request_id=f"rid-{credential}")
    await send(_head(200, "application/json", len(payload)) + payload)


async def huge(send: Send, req: Request, *, size: int = 5 * 1024 * 1024, declare: bool = True) -> None:
    """A valid-looking JSON answer of ``size`` bytes, with or without a Content-Length."""
    filler = b" " * (size - 100)
    payload = envelope(task())[:-1] + b"," + b'"pad": "' + filler + b'"}'
    await send(_head(200, "application/json", len(payload) if declare else None))
    for start in range(0, len(payload), 256 * 1024):
        await send(payload[start : start + 256 * 1024])


async def drip(
    send: Send,
    req: Request,
    *,
    every: float = 2.0,
    content_type: str = "application/json",
    length: int = 1000,
) -> None:
    """Promise a body of ``length`` bytes, then send one byte every ``every`` seconds, for ever."""
    await send(_head(200, content_type, length))
    while True:
        await send(b" ")
        await anyio.sleep(every)


async def redirect(send: Send, req: Request, *, location: str) -> None:
    await send(_head(302, "text/plain", 0, {"Location": location}))


async def png(send: Send, req: Request, *, file: Any = None) -> None:
    """A real PNG image."""
    data = file.read_bytes()
    await send(_head(200, "image/png", len(data)) + data)


async def blob(send: Send, req: Request, *, size: int) -> None:
    """A PNG signature followed by ``size`` bytes, no Content-Length (the size is not announced)."""
    await send(_head(200, "image/png", None) + b"\x89PNG\r\n\x1a\n")
    chunk = b"\0" * (1024 * 1024)
    for _ in range(size // len(chunk) + 1):
        await send(chunk)


BEHAVIOURS: dict[str, Callable[..., Awaitable[None]]] = {
    "blob": blob,
    "json": json_answer,
    "echo_credentials": echo_credentials,
    "huge": huge,
    "drip": drip,
    "redirect": redirect,
    "png": png,
}


async def _read_request(stream: anyio.abc.ByteStream) -> tuple[Request, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > 1_000_000:
            return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0") or 0)
    while len(body) < length:
        body += await stream.receive(65536)
    return Request(method, target.split("?", 1)[0], headers), body


@asynccontextmanager
async def hostile_vendor(host: str = "127.0.0.1") -> AsyncIterator[Vendor]:
    """Serve a ``Vendor`` on a free port of ``host``; unrouted paths answer 404."""
    vendor = Vendor()
    listener = await anyio.create_tcp_listener(local_host=host, local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    vendor.base_url = f"http://{host}:{port}"

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                got = await _read_request(stream)
                if got is None:
                    return
                req, _body = got
                vendor.requests.append(req)
                behaviour = vendor.routes.get(req.path)
                if behaviour is None:
                    await stream.send(_head(404, "text/plain", 0))
                    return
                name, args = behaviour
                await BEHAVIOURS[name](stream.send, req, **args)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
                pass  # the client gave up: that is what many of these tests want

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            try:
                yield vendor
            finally:
                tg.cancel_scope.cancel()
    finally:
        await listener.aclose()


def sample_png(folder: Any) -> Any:
    """A small real PNG to serve as a result image."""
    return write_png(folder / "result.png", size=(320, 320))
