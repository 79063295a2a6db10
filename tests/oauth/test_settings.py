"""OAuth and link settings as a user writes them, and where the issuer's metadata is looked for."""

from __future__ import annotations

import pytest

from kling_omni_mcp.config import SettingsError, load_settings
from kling_omni_mcp.server.oauth import metadata_urls
from kling_omni_mcp.server.signin import exact_url


@pytest.mark.parametrize(
    ("env", "audience", "scopes"),
    [
        ({"public_url": "https://mcp.example.com/"}, "https://mcp.example.com/mcp", []),
        (
            {"public_url": "https://a.example", "mcp_oauth_scopes": "x y,z"},
            "https://a.example/mcp",
            ["x", "y", "z"],
        ),
        ({"mcp_oauth_audience": "https://api.example/kling"}, "https://api.example/kling", []),
    ],
)
def test_audience_and_scopes(env: dict[str, str], audience: str, scopes: list[str]) -> None:
    settings = load_settings(mcp_oauth_issuer="https://id.example.com", **env)
    assert settings.oauth_audience == audience
    assert settings.mcp_oauth_scopes == scopes
    assert settings.mcp_oauth_issuer == "https://id.example.com"  # kept exactly: no slash added


def test_issuer_needs_the_servers_address_and_a_real_url() -> None:
    with pytest.raises(SettingsError, match=r"KLING_MCP_OAUTH_ISSUER.*KLING_PUBLIC_URL"):
        load_settings(mcp_oauth_issuer="https://id.example.com")
    with pytest.raises(SettingsError, match="KLING_MCP_OAUTH_ISSUER"):
        load_settings(mcp_oauth_issuer="id.example.com", public_url="https://mcp.example.com")
    assert load_settings(public_url="https://mcp.example.com").oauth_audience is None


def test_secrets_are_redacted_sources() -> None:
    settings = load_settings(mcp_oauth_client_secret="introspect-secret-1", link_secret="link-secret-22")
    assert {"introspect-secret-1", "link-secret-22"} <= set(settings.secret_values())
    assert "introspect-secret-1" not in repr(settings)


@pytest.mark.parametrize(
    "issuer", ["https://id.example.com", "https://id.example.com/", "http://127.0.0.1:9"]
)
def test_issuer_url_prints_back_exactly(issuer: str) -> None:
    assert str(exact_url(issuer)) == issuer


@pytest.mark.parametrize(
    ("issuer", "first", "openid"),
    [
        (
            "https://sso.example.com/realms/main",
            "https://sso.example.com/.well-known/oauth-authorization-server/realms/main",
            "https://sso.example.com/realms/main/.well-known/openid-configuration",
        ),
        (
            "https://tenant.auth0.com/",
            "https://tenant.auth0.com/.well-known/oauth-authorization-server",
            "https://tenant.auth0.com/.well-known/openid-configuration",
        ),
    ],
)
def test_metadata_locations(issuer: str, first: str, openid: str) -> None:
    urls = metadata_urls(issuer)
    assert urls[0] == first
    assert openid in urls


def test_oauth_alone_allows_a_network_bind() -> None:
    from kling_omni_mcp.server.http import check_bind_is_safe

    settings = load_settings(mcp_oauth_issuer="https://id.example.com", public_url="https://mcp.example.com")
    check_bind_is_safe(settings, "0.0.0.0", allow_unauthenticated=False)  # no UnsafeBindError
