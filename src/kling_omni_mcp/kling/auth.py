"""How requests prove who they come from: an API key, or a JWT signed with the secret key.

Both end up as ``Authorization: Bearer <credential>``. The JWT is signed once and reused until it
is close to expiry, so a busy server does not sign per request. Neither class ever shows its
secret in a ``repr``, a log line or an error message.
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable

from kling_omni_mcp.kling.errors import KlingConfigError

__all__ = [
    "JWT_LIFETIME",
    "JWT_NBF_SKEW",
    "JWT_RENEW_MARGIN",
    "ApiKeyAuth",
    "Auth",
    "JwtAuth",
    "wall_clock",
]

#: Seconds a signed token stays valid (vendor: ``exp = now + 1800``).
JWT_LIFETIME = 1800
#: Seconds the token is back-dated (vendor: ``nbf = now - 5``), absorbing small clock skew.
JWT_NBF_SKEW = 5
#: Re-sign when fewer than this many seconds of validity are left, so no request carries a
#: token that expires while it travels.
JWT_RENEW_MARGIN = 60


def wall_clock() -> float:
    """Seconds since the epoch, the unit of the ``exp`` and ``nbf`` claims (``time.time``).

    The clock a ``JwtAuth`` built without one uses, looked up when it is built: a server builds
    its ``JwtAuth`` from the settings, deep inside, so a test moves that server's clock by
    replacing this function (``monkeypatch.setattr(auth, "wall_clock", ...)``).
    """
    return time.time()


class Auth(ABC):
    """A way to fill the ``Authorization`` header."""

    @abstractmethod
    def authorization(self) -> str:
        """The full header value, ``Bearer <credential>``."""

    def invalidate(self) -> bool:
        """Drop any cached credential; True when the next ``authorization()`` will differ.

        The client calls this once after a 1000/1004 answer and retries only when it returns True.
        """
        return False

    def secrets(self) -> list[str]:
        """Every credential string this auth sends or signs with: masked in all vendor text."""
        return []

    @property
    @abstractmethod
    def kind(self) -> str:
        """A short, secret-free name for logs and diagnostics (``"api-key"`` or ``"jwt"``)."""


class ApiKeyAuth(Auth):
    """The API key mode: ``Authorization: Bearer <API_KEY>``."""

    def __init__(self, api_key: str) -> None:
        key = api_key.strip()
        if not key:
            raise KlingConfigError("The Kling API key is empty: set KLING_API_KEY to your key.")
        _check_printable("KLING_API_KEY", key)
        self._api_key = key

    def authorization(self) -> str:
        """``Bearer <API_KEY>``."""
        return f"Bearer {self._api_key}"

    def secrets(self) -> list[str]:
        """The API key."""
        return [self._api_key]

    @property
    def kind(self) -> str:
        return "api-key"

    def __repr__(self) -> str:
        return "ApiKeyAuth(api_key=***)"


class JwtAuth(Auth):
    """The access key + secret key mode: an HS256 JWT, cached until it nears expiry.

    ``clock`` returns wall-clock seconds (default: this module's ``wall_clock``); tests inject
    their own to move time.
    """

    def __init__(self, access_key: str, secret_key: str, *, clock: Callable[[], float] | None = None) -> None:
        access_key, secret_key = access_key.strip(), secret_key.strip()
        if not access_key or not secret_key:
            raise KlingConfigError(
                "JWT authentication needs both KLING_ACCESS_KEY and KLING_SECRET_KEY; one of them is empty."
            )
        _check_printable("KLING_ACCESS_KEY", access_key)
        self._access_key = access_key
        self._secret_key = secret_key
        self._clock = clock if clock is not None else wall_clock
        self._token: str | None = None
        self._expires_at = 0.0
        self.signed_count = 0  # how many tokens were signed: lets tests and metrics see the cache work

    @property
    def access_key(self) -> str:
        """The issuer (``iss``) claim; an identifier, not a secret."""
        return self._access_key

    @property
    def kind(self) -> str:
        return "jwt"

    def authorization(self) -> str:
        """``Bearer <jwt>``, re-signed only when less than ``JWT_RENEW_MARGIN`` seconds are left."""
        now = self._clock()
        if self._token is None or self._expires_at - now < JWT_RENEW_MARGIN:
            self._token, self._expires_at = self._sign(now)
        return f"Bearer {self._token}"

    def secrets(self) -> list[str]:
        """The access key, the secret key and the token currently in use."""
        return [v for v in (self._access_key, self._secret_key, self._token) if v]

    def invalidate(self) -> bool:
        """Forget the cached token so the next request carries a freshly signed one."""
        self._token = None
        self._expires_at = 0.0
        return True

    def _sign(self, now: float) -> tuple[str, float]:
        # Imported here: PyJWT pulls in ``cryptography`` (~15 ms), which an API-key set-up
        # never needs, and every host waits for start-up.
        import jwt

        issued = int(now)
        expires = issued + JWT_LIFETIME
        claims = {"iss": self._access_key, "exp": expires, "nbf": issued - JWT_NBF_SKEW}
        with warnings.catch_warnings():
            # The vendor issues the secret; its length is not ours to choose, and a warning on
            # every signature would only bury real problems in the logs.
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            token = jwt.encode(claims, self._secret_key, algorithm="HS256", headers={"typ": "JWT"})
        self.signed_count += 1
        return token, float(expires)

    def __repr__(self) -> str:
        return f"JwtAuth(access_key={self._access_key!r}, secret_key=***)"


def _check_printable(variable: str, value: str) -> None:
    # A key pasted with a line break or inner space cannot travel in a header; say so plainly
    # instead of letting the HTTP layer fail with a message that quotes the header.
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise KlingConfigError(
            f"{variable} contains spaces, line breaks or control characters: paste the key without them."
        )
