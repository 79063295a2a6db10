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

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
import jwt
from mcp.server.auth.provider import AccessToken

__all__ = [
    "ALLOWED_ALGORITHMS",
    "KEY_REFETCH_SECONDS",
    "LEEWAY_SECONDS",
    "IssuerKeys",
    "OAuthTokenVerifier",
    "metadata_urls",
    "scopes_of",
]

logger = logging.getLogger(__name__)

#: Asymmetric algorithms only: a verifier that accepted HS256 could be fooled with the public key.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: Clock skew tolerated on exp/nbf/iat (the issue allows at most 60 s).
LEEWAY_SECONDS = 30
#: An unknown key id triggers at most one JWKS fetch per this many seconds.
KEY_REFETCH_SECONDS = 30.0
#: Seconds for each request to the authorization server (metadata, JWKS, introspection).
AS_TIMEOUT_SECONDS = 10.0
#: Introspection answers are reused this long (never past the token's own expiry).
INTROSPECTION_CACHE_SECONDS = 60.0
#: A refused opaque token is remembered this long, so a client retrying garbage costs nothing.
INTROSPECTION_NEGATIVE_SECONDS = 10.0
INTROSPECTION_CACHE_SIZE = 1024
#: JWKS and metadata documents are small; a bigger answer is refused unread past this.
MAX_DOCUMENT_BYTES = 512 * 1024


def scopes_of(claims: dict[str, Any]) -> list[str]:
    """Scopes from ``scope`` (RFC 9068, space-separated) or ``scp`` (Entra, Okta: list or string)."""
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            return value.split()
        if isinstance(value, list):
            return [str(v) for v in value]
    return []


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
        #: How many times the JWKS document was requested (for tests and /healthz-style checks).
        self.fetches = 0

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
                self.fetches += 1
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
        self._introspection_url = introspection_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._client_factory = client_factory or (
            lambda: httpx2.AsyncClient(timeout=AS_TIMEOUT_SECONDS, follow_redirects=False)
        )
        self.keys = IssuerKeys(issuer, self._client_factory)
        self._introspected: OrderedDict[str, tuple[float, AccessToken | None]] = OrderedDict()

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's grant when it is valid for this resource; None otherwise (the SDK answers 401)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            header = None
        if header is None:
            return await self._introspect(token) if self._introspection_url else None
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
        return self._grant(token, claims)

    def _grant(self, token: str, claims: dict[str, Any]) -> AccessToken:
        subject = claims.get("sub")
        client_id = claims.get("client_id") or claims.get("azp") or subject or ""
        exp = claims.get("exp")
        return AccessToken(
            token=token,
            client_id=str(client_id),
            scopes=scopes_of(claims),
            # When this server stops accepting it: the SDK's backend compares expires_at with its
            # own clock and knows nothing of the leeway for clock skew.
            expires_at=int(exp) + LEEWAY_SECONDS if isinstance(exp, int | float) else None,
            resource=self.audience,
            subject=str(subject) if subject is not None else None,
            claims={"iss": self.issuer},
        )

    async def _introspect(self, token: str) -> AccessToken | None:
        """RFC 7662, with answers cached by the token's hash (never the token itself)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._introspected.get(digest)
        if cached is not None and cached[0] > now:
            grant = cached[1]
            if grant is None or grant.expires_at is None or grant.expires_at > time.time():
                return grant
        grant = await self._ask_introspection(token)
        keep = INTROSPECTION_CACHE_SECONDS if grant is not None else INTROSPECTION_NEGATIVE_SECONDS
        if grant is not None and grant.expires_at is not None:
            keep = max(0.0, min(keep, grant.expires_at - time.time()))
        self._introspected[digest] = (now + keep, grant)
        self._introspected.move_to_end(digest)
        while len(self._introspected) > INTROSPECTION_CACHE_SIZE:
            self._introspected.popitem(last=False)
        return grant

    async def _ask_introspection(self, token: str) -> AccessToken | None:
        assert self._introspection_url is not None
        # RFC 7662 section 2.1: the resource server authenticates as a client (client_secret_basic).
        auth: httpx2.Auth = (
            httpx2.BasicAuth(self._client_id, self._client_secret or "")
            if self._client_id is not None
            else httpx2.Auth()
        )
        try:
            async with self._client_factory() as client:
                response = await client.post(
                    self._introspection_url,
                    data={"token": token, "token_type_hint": "access_token"},
                    auth=auth,
                    headers={"Accept": "application/json"},
                )
            response.raise_for_status()
            answer = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            logger.warning("Token introspection failed: %s", exc)
            return None
        if not isinstance(answer, dict) or answer.get("active") is not True:
            return None
        if answer.get("iss") not in (None, self.issuer):
            return None
        audiences = answer.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences or []
        if self.audience not in audiences:
            logger.info("Refused an introspected token: it was issued for another resource")
            return None
        exp = answer.get("exp")
        if isinstance(exp, int | float) and exp + LEEWAY_SECONDS < time.time():
            return None
        return self._grant(token, answer)
