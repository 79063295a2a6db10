"""Check OAuth 2.1 access tokens from an external authorization server (this server is only the
resource server; it never issues tokens).

- JWT access tokens (RFC 9068): signature with a key from the issuer's JWKS (asymmetric algorithms
  only, so ``alg: none`` and HMAC-with-the-public-key confusion are refused), ``iss``, ``aud``
  (RFC 8707: a token for another resource is refused), ``exp``/``nbf`` with a small leeway.
- Opaque tokens: RFC 7662 introspection, when an introspection endpoint is configured, cached
  briefly so a client's burst of calls costs one round trip.

Scopes are not checked here: the SDK's ``RequireAuthMiddleware`` compares ``AccessToken.scopes``
with the required scopes and answers 403 ``insufficient_scope``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
import jwt
from mcp.server.auth.provider import AccessToken

from kling_omni_mcp.server.grants import LEEWAY_SECONDS, grant_from_claims
from kling_omni_mcp.server.introspection import Introspector

__all__ = [
    "ALLOWED_ALGORITHMS",
    "KEY_REFETCH_SECONDS",
    "IssuerKeys",
    "OAuthTokenVerifier",
    "metadata_urls",
]

logger = logging.getLogger(__name__)

#: Asymmetric algorithms only: a verifier that accepted HS256 could be fooled with the public key.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: An unknown key id triggers at most one JWKS fetch per this many seconds.
KEY_REFETCH_SECONDS = 30.0
#: Seconds for each request to the authorization server (metadata, JWKS, introspection).
AS_TIMEOUT_SECONDS = 10.0
#: JWKS and metadata documents are small; a bigger answer is refused.
MAX_DOCUMENT_BYTES = 512 * 1024


async def _get_json(client: httpx2.AsyncClient, url: str) -> dict[str, Any]:
    response = await client.get(url, headers={"Accept": "application/json"})
    response.raise_for_status()
    if len(response.content) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"{url} answered {len(response.content)} bytes")
    data = response.json()
    if not isinstance(data, dict):
        raise ValueError(f"{url} did not answer a JSON object")
    return data


def metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may be: RFC 8414 (the well-known part inserted before the
    issuer's path), then OpenID Connect discovery (appended), which providers such as Keycloak use."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    origin = f"{parts.scheme}://{parts.netloc}"
    urls = [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}{path}/.well-known/openid-configuration",
    ]
    if path:
        urls.append(f"{origin}/.well-known/openid-configuration{path}")
    return urls


class IssuerKeys:
    """The issuer's signing keys: found through its metadata, fetched lazily, cached.

    An unknown ``kid`` (a rotated key, or a made-up one) triggers a refetch, but at most one per
    ``KEY_REFETCH_SECONDS`` whatever the number of tokens: the check and the fetch happen under one
    lock, so a burst of a thousand made-up ids costs at most one request.
    """

    def __init__(
        self,
        issuer: str,
        client_factory: Callable[[], httpx2.AsyncClient],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuer = issuer
        self._client_factory = client_factory
        self._clock = clock
        self._jwks_uri: str | None = None
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = anyio.Lock()

    async def key_for(self, kid: str | None) -> jwt.PyJWK | None:
        """The key with this id, refetching the set when allowed; None when there is none."""
        found = self._lookup(kid)
        if found is not None or not self._may_fetch():
            return found
        async with self._lock:
            found = self._lookup(kid)
            if found is not None or not self._may_fetch():
                return found
            await self._refresh()
            return self._lookup(kid)

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))  # a set of one key need not name it
        return self._keys.get(kid)

    def _may_fetch(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= KEY_REFETCH_SECONDS

    async def _refresh(self) -> None:
        self._fetched_at = self._clock()  # set first: a failing server is not retried in a loop
        try:
            async with self._client_factory() as client:
                if self._jwks_uri is None:
                    self._jwks_uri = await self._discover(client)
                document = await _get_json(client, self._jwks_uri)
        except (httpx2.HTTPError, ValueError) as exc:
            logger.warning("Could not fetch the signing keys of %s: %s", self._issuer, exc)
            return
        keys: dict[str | None, jwt.PyJWK] = {}
        for entry in document.get("keys", []) if isinstance(document.get("keys"), list) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWTError, ValueError, KeyError):
                continue  # a key type or curve this library cannot use: skip it, keep the rest
            keys[entry.get("kid")] = key
        self._keys = keys
        logger.info("Loaded %d signing key(s) of %s", len(keys), self._issuer)

    async def _discover(self, client: httpx2.AsyncClient) -> str:
        """``jwks_uri`` from RFC 8414 metadata, else OpenID Connect discovery."""
        problems = []
        for url in metadata_urls(self._issuer):
            try:
                metadata = await _get_json(client, url)
            except (httpx2.HTTPError, ValueError) as exc:
                problems.append(f"{url}: {exc}")
                continue
            uri = metadata.get("jwks_uri")
            if metadata.get("issuer") != self._issuer:
                problems.append(f"{url}: issuer {metadata.get('issuer')!r} is not {self._issuer!r}")
            elif isinstance(uri, str) and uri.startswith(("https://", "http://")):
                return uri
            else:
                problems.append(f"{url}: no jwks_uri")
        raise ValueError("no usable authorization server metadata (" + "; ".join(problems) + ")")


class OAuthTokenVerifier:
    """An SDK ``TokenVerifier`` for tokens from one issuer meant for one audience (resource)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        introspection_url: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        client_factory: Callable[[], httpx2.AsyncClient] | None = None,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        factory = client_factory or (
            lambda: httpx2.AsyncClient(timeout=AS_TIMEOUT_SECONDS, follow_redirects=False)
        )
        self.keys = IssuerKeys(issuer, factory)
        self._introspector = (
            Introspector(
                introspection_url,
                issuer=issuer,
                audience=audience,
                client_id=client_id,
                client_secret=client_secret,
                client_factory=factory,
            )
            if introspection_url
            else None
        )

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's grant when it is valid for this resource; None otherwise (the SDK answers 401)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            header = None
        if header is None:
            return await self._introspector.verify(token) if self._introspector else None
        return await self._verify_jwt(token, header)

    async def _verify_jwt(self, token: str, header: dict[str, Any]) -> AccessToken | None:
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            logger.info("Refused a token signed with %r (allowed: asymmetric algorithms only)", alg)
            return None
        kid = header.get("kid")
        key = await self.keys.key_for(kid if isinstance(kid, str) else None)
        if key is None:
            logger.info("Refused a token signed with an unknown key id")
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[str(alg)],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            # A key of the wrong type for the algorithm, odd claim types: refused, never a 500.
            logger.info("Refused a token: %s", exc)  # PyJWT's messages never quote the token
            return None
        return grant_from_claims(token, claims, issuer=self.issuer, audience=self.audience)
