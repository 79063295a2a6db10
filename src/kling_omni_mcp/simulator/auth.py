"""Vendor-style authentication: ``Authorization: Bearer <api key>`` or an HS256 JWT.

Codes follow the vendor's table (all HTTP 401): 1000 not a Bearer header, 1001 header missing or
empty, 1002 token invalid (unknown key, bad signature, wrong algorithm, unknown issuer), 1003 not
valid yet (``nbf``), 1004 expired (``exp``). Tokens and secrets never appear in a message or a log.
"""

from __future__ import annotations

import hmac
import warnings
from collections.abc import Mapping

from .envelope import ApiError

__all__ = ["check_authorization"]

_ALGORITHM = "HS256"


def _refuse(code: int, message: str) -> ApiError:
    return ApiError(401, code, message)


def _known_api_key(token: str, api_keys: tuple[str, ...]) -> bool:
    # Constant-time comparison against every key, so timing says nothing about a near miss.
    found = False
    for key in api_keys:
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def _check_jwt(token: str, access_keys: Mapping[str, str]) -> None:
    # Imported here: PyJWT pulls in ``cryptography``, which API-key and open set-ups (such as
    # ``--simulate``, whose start-up a host waits for) never need.
    import jwt

    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise _refuse(1002, "Authorization token is invalid: not an API key and not a JWT") from None
    if header.get("alg") != _ALGORITHM:
        # Refusing anything but HS256 stops the `alg: none` forgery and key-confusion attacks.
        raise _refuse(1002, f"Authorization token is invalid: JWT alg must be {_ALGORITHM}")
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise _refuse(1002, "Authorization token is invalid: the JWT cannot be decoded") from None
    issuer = claims.get("iss")
    secret = access_keys.get(issuer) if isinstance(issuer, str) else None
    if secret is None:
        raise _refuse(1002, "Authorization token is invalid: iss is not a known access key")
    try:
        with warnings.catch_warnings():
            # Short secrets are the user's business here; the vendor does not warn either.
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            jwt.decode(token, secret, algorithms=[_ALGORITHM], options={"require": ["iss", "exp"]})
    except jwt.ExpiredSignatureError:
        raise _refuse(1004, "Authorization token has expired (exp is in the past)") from None
    except jwt.ImmatureSignatureError:
        raise _refuse(1003, "Authorization token is not yet valid (nbf is in the future)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise _refuse(1002, f"Authorization token is invalid: the JWT has no {exc.claim} claim") from None
    except jwt.InvalidTokenError:
        raise _refuse(1002, "Authorization token is invalid: signature verification failed") from None


def check_authorization(
    header: str | None,
    *,
    api_keys: tuple[str, ...],
    access_keys: Mapping[str, str],
) -> None:
    """Accept the request or raise ``ApiError`` (HTTP 401) with the vendor's code.

    With no credential configured (open mode) any non-empty Bearer token is accepted.
    """
    if header is None or not header.strip():
        raise _refuse(1001, "Authorization header is empty: send 'Authorization: Bearer <token>'")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        raise _refuse(1000, "Authorization failed: the header must be 'Bearer <token>'")
    if not token:
        raise _refuse(1001, "Authorization header is empty: no token after 'Bearer'")
    if not api_keys and not access_keys:
        return
    if _known_api_key(token, api_keys):
        return
    if token.count(".") == 2:
        _check_jwt(token, access_keys)
        return
    raise _refuse(1002, "Authorization token is invalid: unknown API key")
