"""OAuth 2.1 sign-in over real loopback HTTP against a real authorization server (oidc-provider):
discovery, tokens from the client-credentials grant with a resource indicator, and every way a
token must be refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer

from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.config import Settings
from kling_omni_mcp.server import app as app_module
from kling_omni_mcp.server import oauth as oauth_module
from kling_omni_mcp.server.http import build_http_app
from kling_omni_mcp.server.identity import current_identity, static_token_id
from tests.conftest import SimHandle
from tests.oauth.conftest import OPAQUE_CLIENT, OTHER_RESOURCE, SCOPE, AuthServer, new_key

pytestmark = pytest.mark.anyio

STATIC_TOKEN = "static-tok-0a9b8c7d6e5f4"
#: An opening request: a signed-in caller gets 200, whatever session state the server has.
MCP_BODY = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(autouse=True)
def whoami_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Add a ``whoami`` tool answering ``current_identity()``: what other code sees of the caller."""
    register = app_module.register_tools

    def register_with_whoami(server: MCPServer[Any], *args: Any) -> None:
        register(server, *args)

        @server.tool()
        def whoami() -> str:
            return current_identity() or "anonymous"

    monkeypatch.setattr(app_module, "register_tools", register_with_whoami)


@asynccontextmanager
async def mcp_server(
    auth: AuthServer, simulator: SimHandle, make_settings: Callable[..., Settings], **overrides: Any
) -> AsyncIterator[str]:
    settings = make_settings(
        simulator.base_url,
        public_url=f"http://127.0.0.1:{auth.mcp_port}",
        mcp_oauth_issuer=auth.issuer,
        mcp_oauth_scopes=SCOPE,
        **overrides,
    )
    async with serve_asgi(build_http_app(settings), port=auth.mcp_port) as url:
        yield url


def client_for(url: str, token: str) -> Client:
    headers = {"Authorization": f"Bearer {token}"}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60))
    return Client(streamable_http_client(f"{url}/mcp", http_client=http))


async def status_of(url: str, token: str | None) -> httpx2.Response:
    headers = dict(MCP_HEADERS)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(timeout=20) as raw:
        return await raw.post(f"{url}/mcp", json=MCP_BODY, headers=headers)


async def test_discovery_names_the_issuer_exactly_and_401_points_to_it(
    auth_server: AuthServer, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    async with mcp_server(auth_server, simulator, make_settings) as url:
        async with httpx2.AsyncClient(timeout=10) as raw:
            metadata_url = f"{url}/.well-known/oauth-protected-resource/mcp"
            metadata = await raw.get(metadata_url)
        assert metadata.status_code == 200
        document = metadata.json()
        # Exactly as configured: no trailing slash (the SDK client compares issuers as strings).
        assert document["authorization_servers"] == [auth_server.issuer]
        assert document["resource"] == auth_server.audience
        assert document["scopes_supported"] == [SCOPE]
        async with httpx2.AsyncClient(timeout=10) as raw:
            at_root = await raw.get(f"{url}/.well-known/oauth-protected-resource")
        assert at_root.json() == document

        missing = await status_of(url, None)
        assert missing.status_code == 401
        challenge = missing.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert f'resource_metadata="{metadata_url}"' in challenge


async def test_client_credentials_token_calls_tools(
    auth_server: AuthServer, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    token = auth_server.token()
    async with mcp_server(auth_server, simulator, make_settings) as url, client_for(url, token) as client:
        created = await client.call_tool("create_image", {"prompt": "Signed in", "wait_seconds": 20})
        assert not created.is_error
        assert created.structured_content is not None
        assert created.structured_content["status"] == "succeeded"
        who = await client.call_tool("whoami", {})
        assert who.structured_content == {"result": "oauth:kling-ci"}  # sub of a client-credentials token


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong_audience", 401),
        ("expired", 401),
        ("not_yet_valid", 401),
        ("expired_within_leeway", 200),
        ("wrong_issuer", 401),
        ("forged_signature", 401),
        ("alg_none", 401),
        ("hmac_with_public_key", 401),
        ("garbage", 401),
        ("missing_scope", 403),
    ],
)
async def test_token_checks(
    case: str,
    expected: int,
    auth_server: AuthServer,
    simulator: SimHandle,
    make_settings: Callable[..., Settings],
) -> None:
    now = int(time.time())
    jwk, _key = auth_server.keys[-1]
    tokens: dict[str, Callable[[], str]] = {
        "wrong_audience": lambda: auth_server.token(resource=OTHER_RESOURCE),
        "expired": lambda: auth_server.mint({"iat": now - 700, "exp": now - 120}),
        "not_yet_valid": lambda: auth_server.mint({"nbf": now + 120}),
        "expired_within_leeway": lambda: auth_server.mint({"exp": now - 5, "scope": SCOPE}),
        "wrong_issuer": lambda: auth_server.mint({"iss": auth_server.issuer + "/other", "scope": SCOPE}),
        "forged_signature": lambda: auth_server.mint({"scope": SCOPE}, key=new_key()[1], kid=jwk["kid"]),
        "alg_none": lambda: unsigned(
            {"iss": auth_server.issuer, "aud": auth_server.audience, "scope": SCOPE}
        ),
        "hmac_with_public_key": lambda: hmac_signed(
            {"iss": auth_server.issuer, "aud": auth_server.audience, "exp": now + 300, "scope": SCOPE},
            kid=jwk["kid"],
            key=_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
        ),
        "garbage": lambda: "not-a-token",
        "missing_scope": lambda: auth_server.token(scope="other"),
    }
    async with mcp_server(auth_server, simulator, make_settings) as url:
        response = await status_of(url, tokens[case]())
    assert response.status_code == expected, response.text
    if expected == 401:
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert "resource_metadata=" in response.headers["www-authenticate"]
    if expected == 403:
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        assert response.json()["error"] == "insufficient_scope"


def _part(value: dict[str, Any] | bytes) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any]) -> str:
    """An ``alg: none`` token (no signature), as an attacker would send it."""
    claims = {"sub": "attacker", "exp": int(time.time()) + 300, **claims}
    return f"{_part({'alg': 'none', 'typ': 'at+jwt'})}.{_part(claims)}."


def hmac_signed(claims: dict[str, Any], *, kid: str, key: bytes) -> str:
    """HS256 keyed with the issuer's PUBLIC key: the classic algorithm-confusion forgery."""
    header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
    signing_input = f"{_part(header)}.{_part({'sub': 'attacker', **claims})}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_part(signature)}"


async def test_rotated_key_is_picked_up_and_the_old_one_dropped(
    auth_server: AuthServer,
    simulator: SimHandle,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    window = 3.0  # the production window is 30 s; shortened so the test does not idle
    monkeypatch.setattr(oauth_module, "KEY_REFETCH_SECONDS", window)
    old_token = auth_server.token()
    async with mcp_server(auth_server, simulator, make_settings) as url:
        assert (await status_of(url, old_token)).status_code == 200
        auth_server.rotate()
        new_token = auth_server.token()
        assert jwt.get_unverified_header(new_token)["kid"] != jwt.get_unverified_header(old_token)["kid"]
        await anyio.sleep(window + 0.2)
        assert (await status_of(url, new_token)).status_code == 200
        assert (await status_of(url, old_token)).status_code == 401  # no longer published
    assert auth_server.jwks_requests() == 2


async def test_burst_of_unknown_key_ids_costs_at_most_one_fetch(
    auth_server: AuthServer, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    async with mcp_server(auth_server, simulator, make_settings) as url:
        assert (await status_of(url, auth_server.token())).status_code == 200
        before = auth_server.jwks_requests()
        statuses: list[int] = []

        async def attack(i: int) -> None:
            forged = auth_server.mint({"scope": SCOPE}, kid=f"made-up-{i}")
            statuses.append((await status_of(url, forged)).status_code)

        async with anyio.create_task_group() as tg:
            for i in range(60):
                tg.start_soon(attack, i)
    assert statuses == [401] * 60
    assert before == 1
    assert auth_server.jwks_requests() == before  # within the 30 s window: no refetch at all


async def test_cold_burst_fetches_keys_once(
    auth_server: AuthServer, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    async with mcp_server(auth_server, simulator, make_settings) as url:
        tokens = [auth_server.mint({"scope": SCOPE}, kid=f"made-up-{i}") for i in range(30)]
        tokens.append(auth_server.token())
        statuses: list[int] = []

        async def call(token: str) -> None:
            statuses.append((await status_of(url, token)).status_code)

        async with anyio.create_task_group() as tg:
            for token in tokens:
                tg.start_soon(call, token)
    assert sorted(statuses) == [200] + [401] * 30
    assert auth_server.jwks_requests() == 1


async def test_static_token_beside_oauth(
    auth_server: AuthServer, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    async with mcp_server(auth_server, simulator, make_settings, mcp_auth_tokens=STATIC_TOKEN) as url:
        wrong = await status_of(url, "static-tok-wrong")
        assert wrong.status_code == 401
        assert "resource_metadata=" in wrong.headers["www-authenticate"]
        assert STATIC_TOKEN not in wrong.text
        async with client_for(url, STATIC_TOKEN) as client:
            who = await client.call_tool("whoami", {})
            assert who.structured_content == {"result": static_token_id(STATIC_TOKEN)}
            assert STATIC_TOKEN not in str(who.structured_content)
        async with client_for(url, auth_server.token()) as client:
            who = await client.call_tool("whoami", {})
            assert who.structured_content == {"result": "oauth:kling-ci"}


async def test_opaque_token_by_introspection(
    auth_server: AuthServer, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    opaque = auth_server.token(client=OPAQUE_CLIENT)
    assert opaque.count(".") != 2  # really opaque, not a JWT
    async with mcp_server(
        auth_server,
        simulator,
        make_settings,
        mcp_oauth_introspection_url=f"{auth_server.issuer}/token/introspection",
        mcp_oauth_client_id=OPAQUE_CLIENT[0],
        mcp_oauth_client_secret=OPAQUE_CLIENT[1],
    ) as url:
        async with client_for(url, opaque) as client:
            who = await client.call_tool("whoami", {})
            assert who.structured_content == {"result": "oauth:kling-opaque"}
        assert (await status_of(url, "an-opaque-token-nobody-issued")).status_code == 401


async def test_session_is_bound_to_the_token_that_opened_it(
    auth_server: AuthServer, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    async with mcp_server(auth_server, simulator, make_settings, mcp_auth_tokens=STATIC_TOKEN) as url:
        init = MCP_BODY
        async with httpx2.AsyncClient(timeout=20) as raw:
            opened = await raw.post(
                f"{url}/mcp", json=init, headers={**MCP_HEADERS, "Authorization": f"Bearer {STATIC_TOKEN}"}
            )
            assert opened.status_code == 200
            session = opened.headers["mcp-session-id"]
            other = {**MCP_HEADERS, "Authorization": f"Bearer {auth_server.token()}"}
            other["mcp-session-id"] = session
            listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
            hijack = await raw.post(f"{url}/mcp", json=listing, headers=other)
            assert hijack.status_code == 404
            delete = await raw.delete(f"{url}/mcp", headers=other)
            assert delete.status_code == 404
