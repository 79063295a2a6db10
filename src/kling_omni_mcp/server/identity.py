"""Who is calling: one stable, non-secret identity per caller, for whatever must be kept per user.

Both ways of signing in end up as the SDK's ``AccessToken`` in the request (``get_access_token()``):

- a static token from ``KLING_MCP_AUTH_TOKENS`` -> ``"token:<first 16 hex of its SHA-256>"``
  (stable across restarts, reveals nothing usable about the token);
- an OAuth access token -> ``"oauth:<sub>"`` (the subject is unique per issuer, and one issuer is
  configured). The prefixes keep the two spaces apart: no OAuth subject can pose as a static token.

Without sign-in (stdio, or HTTP with no tokens configured) there is no identity: ``None``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier

__all__ = [
    "STATIC_TOKEN_ISSUER",
    "SignInVerifier",
    "StaticTokenVerifier",
    "current_identity",
    "identity_of",
    "static_token_id",
]

#: The ``iss`` given to static-token grants, so the SDK's session owner (client, issuer, subject)
#: of a static token never equals an OAuth one.
STATIC_TOKEN_ISSUER = "urn:kling-omni-mcp:static-token"  # noqa: S105 (a name, not a secret)


def static_token_id(token: str) -> str:
    """The public id of a static token: ``token:`` plus a SHA-256 prefix."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def identity_of(grant: AccessToken) -> str:
    """The caller identity a verified token stands for (see the module docstring)."""
    if (grant.claims or {}).get("iss") == STATIC_TOKEN_ISSUER:
        return grant.client_id
    return "oauth:" + (grant.subject or grant.client_id)


def current_identity() -> str | None:
    """The identity of the caller of the request being handled, or None without sign-in.

    Call it inside a tool, resource or route handler; it reads the SDK's request context.
    """
    grant = get_access_token()
    return identity_of(grant) if grant is not None else None


class StaticTokenVerifier:
    """``KLING_MCP_AUTH_TOKENS`` as an SDK ``TokenVerifier``.

    Compared in constant time against every configured token, so the time taken says nothing
    about how much of a guess was right. A static token is trusted with every scope the server
    requires (it was handed out by whoever runs the server).
    """

    def __init__(self, tokens: Sequence[str], scopes: Sequence[str] = ()) -> None:
        self._tokens = [t.encode() for t in tokens if t]
        self._scopes = list(scopes)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    async def verify_token(self, token: str) -> AccessToken | None:
        given = token.strip().encode()
        ok = False
        for candidate in self._tokens:
            ok |= hmac.compare_digest(given, candidate)
        if not ok:
            return None
        token_id = static_token_id(token.strip())
        return AccessToken(
            token=token.strip(),
            client_id=token_id,
            scopes=self._scopes,
            subject=token_id,
            claims={"iss": STATIC_TOKEN_ISSUER},
        )


class SignInVerifier:
    """Static tokens first (cheap, local), then OAuth when an issuer is configured."""

    def __init__(self, static: StaticTokenVerifier, oauth: TokenVerifier | None) -> None:
        self._static = static
        self._oauth = oauth

    async def verify_token(self, token: str) -> AccessToken | None:
        grant = await self._static.verify_token(token) if self._static else None
        if grant is None and self._oauth is not None:
            grant = await self._oauth.verify_token(token)
        return grant
