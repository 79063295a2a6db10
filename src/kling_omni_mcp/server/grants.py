"""The SDK's ``AccessToken`` from checked token claims, shared by the JWT and introspection paths."""

from __future__ import annotations

from typing import Any

from mcp.server.auth.provider import AccessToken

__all__ = ["LEEWAY_SECONDS", "grant_from_claims", "scopes_of"]

#: Clock skew tolerated on exp/nbf/iat (the issue allows at most 60 s).
LEEWAY_SECONDS = 30


def scopes_of(claims: dict[str, Any]) -> list[str]:
    """Scopes from ``scope`` (RFC 9068, space-separated) or ``scp`` (Entra, Okta: list or string)."""
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            return value.split()
        if isinstance(value, list):
            return [str(v) for v in value]
    return []


def grant_from_claims(token: str, claims: dict[str, Any], *, issuer: str, audience: str) -> AccessToken:
    """The SDK's ``AccessToken`` for checked claims (a JWT's, or an introspection answer's)."""
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
        resource=audience,
        subject=str(subject) if subject is not None else None,
        claims={"iss": issuer},
    )
