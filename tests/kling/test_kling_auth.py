"""Auth strategies: the exact header, JWT claims, token caching and re-signing, no secret leaks."""

from __future__ import annotations

import jwt
import pytest
from pydantic import SecretStr

from kling_omni_mcp.config import Settings
from kling_omni_mcp.kling.auth import JWT_LIFETIME, ApiKeyAuth, JwtAuth
from kling_omni_mcp.kling.errors import KlingConfigError
from kling_omni_mcp.runtime import auth_from_settings

SECRET = "sk-test-secret-0123456789abcdef0123456789"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _decode(header_value: str) -> dict[str, object]:
    scheme, token = header_value.split(" ", 1)
    assert scheme == "Bearer"
    # Claims are checked by hand below, so the library must not reject them against the real clock.
    return jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False})


def test_api_key_header_and_repr() -> None:
    auth = ApiKeyAuth("  my-api-key  ")
    assert auth.authorization() == "Bearer my-api-key"
    assert "my-api-key" not in repr(auth)
    assert auth.invalidate() is False  # re-sending the same key cannot help


def test_api_key_empty_is_refused() -> None:
    with pytest.raises(KlingConfigError, match="KLING_API_KEY"):
        ApiKeyAuth("   ")


def test_jwt_claims_and_header() -> None:
    clock = FakeClock(1_800_000_000.4)
    auth = JwtAuth("ak-123", SECRET, clock=clock)
    value = auth.authorization()
    token = value.split(" ", 1)[1]
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = _decode(value)
    assert claims["iss"] == "ak-123"
    assert claims["exp"] == 1_800_000_000 + 1800
    assert claims["nbf"] == 1_800_000_000 - 5
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-0123456789abcdef012345", algorithms=["HS256"])


def test_jwt_is_cached_until_close_to_expiry() -> None:
    clock = FakeClock(1_000_000.0)
    auth = JwtAuth("ak", SECRET, clock=clock)
    first = auth.authorization()
    clock.now += JWT_LIFETIME - 61  # 61 s left: still fine
    assert auth.authorization() == first
    assert auth.signed_count == 1
    clock.now += 2  # 59 s left: re-sign
    second = auth.authorization()
    assert second != first
    assert auth.signed_count == 2
    assert _decode(second)["exp"] == int(clock.now) + 1800


def test_jwt_invalidate_forces_a_new_signature() -> None:
    clock = FakeClock(5_000_000.0)
    auth = JwtAuth("ak", SECRET, clock=clock)
    first = auth.authorization()
    assert auth.invalidate() is True
    clock.now += 1  # a new iat second so the token text differs
    assert auth.authorization() != first
    assert auth.signed_count == 2


def test_jwt_repr_hides_the_secret() -> None:
    auth = JwtAuth("ak-visible", SECRET)
    auth.authorization()
    assert SECRET not in repr(auth)
    assert "ak-visible" in repr(auth)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("KLING_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_auth_from_settings_prefers_api_key() -> None:
    auth = auth_from_settings(
        Settings(api_key=SecretStr("k1"), access_key=SecretStr("ak"), secret_key=SecretStr(SECRET))
    )
    assert isinstance(auth, ApiKeyAuth)
    assert auth.authorization() == "Bearer k1"


@pytest.mark.usefixtures("clean_env")
def test_auth_from_settings_jwt() -> None:
    auth = auth_from_settings(Settings(access_key=SecretStr("ak"), secret_key=SecretStr(SECRET)))
    assert isinstance(auth, JwtAuth)
    assert _decode(auth.authorization())["iss"] == "ak"


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "KLING_API_KEY"),
        ({"access_key": SecretStr("ak")}, "KLING_SECRET_KEY is not"),
        ({"secret_key": SecretStr(SECRET)}, "KLING_ACCESS_KEY is not"),
    ],
)
def test_auth_from_settings_missing_credentials(kwargs: dict[str, SecretStr], expected: str) -> None:
    with pytest.raises(KlingConfigError) as info:
        auth_from_settings(Settings(**kwargs))  # type: ignore[arg-type]
    assert expected in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("key", ["abc def", "abc\ndef", "abc\x00def"])
def test_keys_with_inner_whitespace_or_control_chars_are_refused(key: str) -> None:
    with pytest.raises(KlingConfigError, match="KLING_API_KEY") as info:
        ApiKeyAuth(key)
    assert key not in str(info.value)
    with pytest.raises(KlingConfigError, match="KLING_ACCESS_KEY"):
        JwtAuth(key, SECRET)
