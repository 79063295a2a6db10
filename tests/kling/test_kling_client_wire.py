"""The client against a tiny scripted server: malformed answers, timeouts, escaping, headers.

These cases are about what the client does with odd HTTP, so they use their own small app rather
than the simulator (which always answers like the vendor).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kling_omni_mcp.kling import (
    ApiKeyAuth,
    CreateImageRequest,
    JwtAuth,
    KlingAuthError,
    KlingClient,
    KlingConfigError,
    KlingError,
    KlingResponseError,
    KlingTaskNotFoundError,
    KlingTimeoutError,
    KlingTransportError,
    KlingValidationError,
    RetryPolicy,
)

from .conftest import Switchboard

API_KEY = "wire-test-api-key-123"
TASK = {"task_id": "t-1", "task_status": "submitted", "task_info": {"external_task_id": "e-1"}}


def envelope(data: Any = None, code: int = 0, message: str = "ok") -> dict[str, Any]:
    return {"code": code, "message": message, "request_id": "rid-1", "data": data}


@dataclass
class Scripted:
    """Answers are popped in order; the last one repeats. Every request is recorded."""

    answers: list[tuple[int, str, bytes, float]] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)

    def json(self, body: Any, status: int = 200, delay: float = 0.0) -> None:
        self.answers.append((status, "application/json", json.dumps(body).encode(), delay))

    def raw(
        self, body: bytes, status: int = 200, content_type: str = "text/plain", delay: float = 0.0
    ) -> None:
        self.answers.append((status, content_type, body, delay))

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.seen.append(
            {
                "method": request.method,
                "raw_path": request.scope["raw_path"].decode(),
                "query": request.scope["query_string"].decode(),
                "headers": dict(request.headers),
                "body": body,
            }
        )
        status, content_type, payload, delay = (
            self.answers[0] if len(self.answers) == 1 else self.answers.pop(0)
        )
        if delay:
            await anyio.sleep(delay)
        return Response(payload, status_code=status, media_type=content_type)


@pytest.fixture
async def server(switchboard: Switchboard) -> AsyncIterator[tuple[Scripted, str]]:
    scripted = Scripted()
    switchboard.app = Starlette(routes=[Route("/{rest:path}", scripted.handle, methods=["GET", "POST"])])
    try:
        yield scripted, switchboard.base_url
    finally:
        switchboard.app = None


FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, deadline=5.0)


def client_for(
    base_url: str, *, retry: RetryPolicy = FAST, timeout: float = 5.0, auth: Any = None
) -> KlingClient:
    return KlingClient(base_url, auth or ApiKeyAuth(API_KEY), retry=retry, timeout=timeout)


def assert_no_secret(error: KlingError) -> None:
    for text in (str(error), error.describe(), repr(error.__dict__)):
        assert API_KEY not in text


@pytest.mark.anyio
async def test_get_sends_auth_and_user_agent(server: tuple[Scripted, str]) -> None:
    scripted, base_url = server
    scripted.json(envelope(TASK))
    async with client_for(base_url) as client:
        task = await client.get_task("t-1")
    assert task.task_id == "t-1"
    assert task.external_task_id == "e-1"
    headers = scripted.seen[0]["headers"]
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["user-agent"].startswith("kling-omni-mcp/")
    assert scripted.seen[0]["raw_path"] == "/v1/images/omni-image/t-1"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("task_id", "raw_path"),
    [
        ("../x", "/v1/images/omni-image/..%2Fx"),
        ("a/b", "/v1/images/omni-image/a%2Fb"),
        ("..", "/v1/images/omni-image/%2E%2E"),
        (".", "/v1/images/omni-image/%2E"),
        ("a?b#c", "/v1/images/omni-image/a%3Fb%23c"),
        ("x%2Fy", "/v1/images/omni-image/x%252Fy"),
    ],
)
async def test_ids_cannot_change_the_path(server: tuple[Scripted, str], task_id: str, raw_path: str) -> None:
    scripted, base_url = server
    scripted.json(envelope(TASK))
    async with client_for(base_url) as client:
        await client.get_task(task_id)
    assert scripted.seen[0]["raw_path"] == raw_path
    assert scripted.seen[0]["query"] == ""


@pytest.mark.anyio
async def test_empty_id_is_refused_locally(server: tuple[Scripted, str]) -> None:
    scripted, base_url = server
    async with client_for(base_url) as client:
        with pytest.raises(KlingValidationError, match="task_id"):
            await client.get_task("")
    assert scripted.seen == []


@pytest.mark.anyio
async def test_html_error_page_from_a_gateway(server: tuple[Scripted, str]) -> None:
    scripted, base_url = server
    scripted.raw(b"<html><body><h1>502 Bad Gateway</h1></body></html>", status=502, content_type="text/html")
    async with client_for(base_url) as client:
        with pytest.raises(KlingResponseError) as info:
            await client.get_task("t-1")
    message = str(info.value)
    assert "HTTP 502" in message
    assert "text/html" in message
    assert "HTML page" in message
    assert "502 Bad Gateway" in message  # a short snippet, to tell a proxy page from the API
    assert len(message) < 400
    # A gateway page is transient: the read was retried up to the policy's bound.
    assert len(scripted.seen) == FAST.max_attempts
    assert_no_secret(info.value)


@pytest.mark.anyio
async def test_html_page_with_200_is_not_retried(server: tuple[Scripted, str]) -> None:
    scripted, base_url = server
    scripted.raw(b"<!doctype html><title>Login</title>", status=200, content_type="text/html; charset=utf-8")
    async with client_for(base_url) as client:
        with pytest.raises(KlingResponseError, match="HTTP 200"):
            await client.get_task("t-1")
    assert len(scripted.seen) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"ok", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2]", "JSON list"),
        (b'{"message": "hi", "data": {}}', "without an integer 'code'"),
        (b'{"code": "0", "data": {}}', "without an integer 'code'"),
        (b'{"code": 0, "message": "ok"}', "no 'data'"),
        (b'{"code": 0, "data": null}', "no 'data'"),
        (b'{"code": 0, "data": [1]}', "expected an object"),
        (b'{"code": 0, "data": {"task_id": "t"}}', "task_status"),
        # An unknown status or a wrong optional field is read leniently (tests/kling/test_lenient.py).
        (b'{"code": 0, "data": {"task_id": {"a": 5}, "task_status": "succeed"}}', "wrong shape"),
    ],
)
async def test_malformed_answers(server: tuple[Scripted, str], body: bytes, words: str) -> None:
    scripted, base_url = server
    scripted.raw(body, content_type="application/json")
    async with client_for(base_url) as client:
        with pytest.raises(KlingResponseError) as info:
            await client.get_task("t-1")
    assert words in str(info.value)
    assert len(scripted.seen) == 1  # a malformed 200 is not transient: no retry


@pytest.mark.anyio
async def test_list_with_wrong_data_type(server: tuple[Scripted, str]) -> None:
    scripted, base_url = server
    scripted.json(envelope(TASK))  # an object where a list belongs
    async with client_for(base_url) as client:
        with pytest.raises(KlingResponseError, match="expected a list"):
            await client.list_tasks()
    assert scripted.seen[0]["query"] == "pageNum=1&pageSize=30"


@pytest.mark.anyio
async def test_vendor_error_code_is_mapped_with_request_id(server: tuple[Scripted, str]) -> None:
    scripted, base_url = server
    scripted.json(envelope(code=1201, message="Task not found"), status=400)
    async with client_for(base_url) as client:
        with pytest.raises(KlingTaskNotFoundError) as info:
            await client.get_task("nope")
    assert info.value.code == 1201
    assert info.value.request_id == "rid-1"
    assert info.value.http_status == 400
    assert len(scripted.seen) == 1


@pytest.mark.anyio
async def test_slow_answer_times_out(server: tuple[Scripted, str]) -> None:
    scripted, base_url = server
    scripted.json(envelope(TASK), delay=1.0)
    started = time.monotonic()
    async with client_for(base_url, timeout=0.3, retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(KlingTimeoutError) as info:
            await client.get_task("t-1")
    assert time.monotonic() - started < 1.5
    assert "0.3 s" in str(info.value)
    assert info.value.retryable


@pytest.mark.anyio
async def test_unreachable_vendor_fails_fast() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    async with client_for(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(KlingTransportError) as info:
            await client.get_task("t-1")
        with pytest.raises(KlingTransportError):
            await client.create_task(CreateImageRequest(prompt="a cat"))
    assert not isinstance(info.value, KlingTimeoutError)
    assert time.monotonic() - started < 2.0
    assert "ConnectError" in str(info.value)
    assert_no_secret(info.value)


@pytest.mark.anyio
async def test_api_key_auth_failure_is_not_retried(server: tuple[Scripted, str]) -> None:
    scripted, base_url = server
    scripted.json(envelope(code=1002, message="Authorization is invalid"), status=401)
    async with client_for(base_url) as client:
        with pytest.raises(KlingAuthError) as info:
            await client.get_task("t-1")
    assert info.value.code == 1002
    assert len(scripted.seen) == 1
    assert_no_secret(info.value)


@pytest.mark.anyio
async def test_jwt_expired_is_resigned_once(server: tuple[Scripted, str]) -> None:
    scripted, base_url = server
    scripted.json(envelope(code=1004, message="token expired"), status=401)
    clock = [1_000_000.0]
    auth = JwtAuth("ak", "sk-0123456789abcdef0123456789abcdef", clock=lambda: clock[0])
    async with client_for(base_url, auth=auth) as client:
        with pytest.raises(KlingAuthError) as info:
            clock[0] += 1
            await client.get_task("t-1")
    assert info.value.code == 1004
    assert len(scripted.seen) == 2  # the original and one re-signed retry, then the error
    assert auth.signed_count == 2  # the cached token was dropped and a fresh one signed


@pytest.mark.anyio
async def test_debug_log_has_no_secrets(
    server: tuple[Scripted, str], caplog: pytest.LogCaptureFixture
) -> None:
    scripted, base_url = server
    scripted.json(envelope(TASK))
    caplog.set_level(logging.DEBUG, logger="kling_omni_mcp")
    async with client_for(base_url) as client:
        await client.get_task("t-1")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("kling_omni_mcp")]
    assert any(
        "GET /v1/images/omni-image/t-1 -> HTTP 200 request_id='rid-1' attempt=1" in line for line in lines
    )
    assert all(API_KEY not in line for line in lines)


@pytest.mark.anyio
async def test_lifecycle_and_config_errors(server: tuple[Scripted, str]) -> None:
    _, base_url = server
    with pytest.raises(KlingConfigError, match="http"):
        KlingClient("ftp://example.com", ApiKeyAuth(API_KEY))
    client = client_for(base_url)
    assert API_KEY not in repr(client)
    await client.aclose()
    await client.aclose()  # twice is fine
    assert client.closed
    with pytest.raises(RuntimeError, match="closed"):
        await client.get_task("t-1")


@pytest.mark.anyio
@pytest.mark.parametrize(("page", "size"), [(0, 30), (1001, 30), (1, 0), (1, 501)])
async def test_list_ranges_checked_locally(server: tuple[Scripted, str], page: int, size: int) -> None:
    scripted, base_url = server
    async with client_for(base_url) as client:
        with pytest.raises(KlingValidationError):
            await client.list_tasks(page, size)
    assert scripted.seen == []
