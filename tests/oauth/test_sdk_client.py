"""The SDK's own OAuth client, as a host runs it: discovery from the 401, dynamic client
registration, the authorization-code + PKCE flow with a resource indicator against oidc-provider
(its login and consent pages driven by a plain HTTP client, as a person would click), then a tool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.config import Settings
from kling_omni_mcp.server.http import build_http_app
from tests.conftest import SimHandle, free_port, text_of
from tests.oauth.conftest import SCOPE, AuthServer

pytestmark = pytest.mark.anyio

MAX_REDIRECTS = 12


class MemoryStorage:
    """The SDK's TokenStorage, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Person:
    """Opens the authorization URL, signs in as ``login`` and consents, like a user in a browser."""

    def __init__(self, login: str, redirect_uri: str) -> None:
        self.login = login
        self.redirect_uri = redirect_uri
        self.authorization_url: str | None = None
        self.pages: list[str] = []

    async def open(self, url: str) -> None:
        self.authorization_url = url

    async def finish(self) -> AuthorizationCodeResult:
        assert self.authorization_url is not None
        async with httpx2.AsyncClient(timeout=20, follow_redirects=False) as browser:
            response = await browser.get(self.authorization_url)
            for _ in range(MAX_REDIRECTS):
                if response.is_redirect:
                    target = urljoin(str(response.url), response.headers["location"])
                    if target.startswith(self.redirect_uri):
                        query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
                        assert "error" not in query, query
                        return AuthorizationCodeResult(
                            code=query["code"], state=query.get("state"), iss=query.get("iss")
                        )
                    response = await browser.get(target)
                    continue
                page = response.text
                assert response.status_code == 200, page[:500]
                self.pages.append(page)
                form: dict[str, Any] = {"prompt": "consent"}
                if 'name="login"' in page:
                    form = {"prompt": "login", "login": self.login, "password": "any"}
                action = page.split('action="', 1)[1].split('"', 1)[0]
                response = await browser.post(urljoin(str(response.url), action), data=form)
        raise AssertionError("the authorization server never redirected back")


async def test_sdk_oauth_client_signs_in_with_pkce_and_calls_a_tool(
    auth_server: AuthServer, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        simulator.base_url,
        public_url=f"http://127.0.0.1:{auth_server.mcp_port}",
        mcp_oauth_issuer=auth_server.issuer,
        mcp_oauth_scopes=SCOPE,
    )
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    person = Person("alice", redirect_uri)
    storage = MemoryStorage()
    oauth = OAuthClientProvider(
        server_url=auth_server.audience,
        client_metadata=OAuthClientMetadata(
            client_name="kling test host",
            redirect_uris=[redirect_uri],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
            scope=f"openid {SCOPE}",
        ),
        storage=storage,
        redirect_handler=person.open,
        callback_handler=person.finish,
    )
    async with serve_asgi(build_http_app(settings), port=auth_server.mcp_port) as url:
        http = httpx2.AsyncClient(auth=oauth, timeout=httpx2.Timeout(30, read=60))
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
            arguments = {"prompt": "Signed in with PKCE", "wait_seconds": 20}
            created = await client.call_tool("create_image", arguments)
            assert not created.is_error, text_of(created)
            assert created.structured_content is not None
            assert created.structured_content["status"] == "succeeded"
    assert person.authorization_url is not None
    asked = parse_qs(urlsplit(person.authorization_url).query)
    assert asked["resource"] == [auth_server.audience]  # RFC 8707 from the protected-resource metadata
    assert asked["code_challenge_method"] == ["S256"]
    assert any('name="login"' in page for page in person.pages)  # a person really signed in
    assert storage.client is not None  # registered itself (RFC 7591)
    assert storage.tokens is not None and storage.tokens.access_token.count(".") == 2  # a JWT for us
