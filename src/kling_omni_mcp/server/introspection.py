"""RFC 7662 token introspection, for authorization servers that issue opaque access tokens.

The answer must say ``active``, name this server's audience (RFC 8707) and, when it names an
issuer, the configured one. Answers are cached briefly by the token's SHA-256 (never the token),
so a client's burst of calls costs one round trip, and refusals too, so retried garbage is cheap.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import httpx2
from mcp.server.auth.provider import AccessToken

from kling_omni_mcp.server.grants import LEEWAY_SECONDS, grant_from_claims

__all__ = ["Introspector"]

logger = logging.getLogger(__name__)

#: Introspection answers are reused this long (never past the token's own expiry).
INTROSPECTION_CACHE_SECONDS = 60.0
#: A refused opaque token is remembered this long, so a client retrying garbage costs nothing.
INTROSPECTION_NEGATIVE_SECONDS = 10.0
INTROSPECTION_CACHE_SIZE = 1024


class Introspector:
    """Asks one introspection endpoint about opaque tokens, as one client."""

    def __init__(
        self,
        url: str,
        *,
        issuer: str,
        audience: str,
        client_id: str | None,
        client_secret: str | None,
        client_factory: Callable[[], httpx2.AsyncClient],
    ) -> None:
        self._url = url
        self._issuer = issuer
        self._audience = audience
        self._client_id = client_id
        self._client_secret = client_secret
        self._client_factory = client_factory
        self._answers: OrderedDict[str, tuple[float, AccessToken | None]] = OrderedDict()

    async def verify(self, token: str) -> AccessToken | None:
        """The token's grant when the server says it is active and for us; None otherwise."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._answers.get(digest)
        if cached is not None and cached[0] > now:
            grant = cached[1]
            if grant is None or grant.expires_at is None or grant.expires_at > time.time():
                return grant
        grant = await self._ask(token)
        keep = INTROSPECTION_CACHE_SECONDS if grant is not None else INTROSPECTION_NEGATIVE_SECONDS
        if grant is not None and grant.expires_at is not None:
            keep = max(0.0, min(keep, grant.expires_at - time.time()))
        self._answers[digest] = (now + keep, grant)
        self._answers.move_to_end(digest)
        while len(self._answers) > INTROSPECTION_CACHE_SIZE:
            self._answers.popitem(last=False)
        return grant

    async def _ask(self, token: str) -> AccessToken | None:
        # RFC 7662 section 2.1: the resource server authenticates as a client (client_secret_basic).
        auth: httpx2.Auth = (
            httpx2.BasicAuth(self._client_id, self._client_secret or "")
            if self._client_id is not None
            else httpx2.Auth()
        )
        try:
            async with self._client_factory() as client:
                response = await client.post(
                    self._url,
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
        if answer.get("iss") not in (None, self._issuer):
            return None
        audiences = answer.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences or []
        if self._audience not in audiences:
            logger.info("Refused an introspected token: it was issued for another resource")
            return None
        exp = answer.get("exp")
        if isinstance(exp, int | float) and exp + LEEWAY_SECONDS < time.time():
            return None
        return grant_from_claims(token, answer, issuer=self._issuer, audience=self._audience)
