"""The callback_url allow-list: URLs compared parsed, never as strings (table-driven)."""

from __future__ import annotations

import pytest

from kling_omni_mcp.callback_urls import callback_url_problem, is_under
from kling_omni_mcp.config import Settings

PUBLIC = "https://public.example"

UNDER_CASES = [
    # (url, prefix, under?)
    ("https://public.example/callbacks/kling", PUBLIC, True),
    ("https://public.example", PUBLIC, True),
    ("https://PUBLIC.example:443/x?y=1", PUBLIC, True),
    ("https://public.example/hooks/kling", "https://public.example/hooks", True),
    ("https://public.example/hooks", "https://public.example/hooks/", True),
    ("https://public.example/hooksevil", "https://public.example/hooks", False),
    ("https://public.example/hooks/../admin", "https://public.example/hooks", False),
    ("https://public.example/hooks/%2e%2e/admin", "https://public.example/hooks", False),
    ("http://public.example/callbacks/kling", PUBLIC, False),
    ("https://public.example:8443/callbacks", PUBLIC, False),
    ("https://public.example.evil.test/x", PUBLIC, False),
    ("https://evil.test/public.example", PUBLIC, False),
    ("http://public.example@127.0.0.1:9/x", "http://public.example", False),
    ("https://user:pw@public.example/x", PUBLIC, False),
    ("https://public.example\\@evil.test/", PUBLIC, False),
    ("https://public.example/x y", PUBLIC, False),
    ("https://public.example:99999/x", PUBLIC, False),
    ("ftp://public.example/x", "ftp://public.example", False),
    ("//public.example/x", PUBLIC, False),
    ("https://[::1]:8443/cb", "https://[::1]:8443", True),
    ("http://127.0.0.1:80/cb", "http://127.0.0.1", True),
]


@pytest.mark.parametrize(("url", "prefix", "expected"), UNDER_CASES)
def test_is_under(url: str, prefix: str, expected: bool) -> None:
    assert is_under(url, prefix) is expected


def settings(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


def test_absent_callback_is_fine_and_nothing_is_allowed_by_default() -> None:
    assert callback_url_problem(None, settings()) is None
    problem = callback_url_problem("https://hooks.example/x", settings())
    assert problem is not None
    assert "callback_url" in problem and "KLING_CALLBACK_ALLOWED_URLS" in problem
    assert "KLING_PUBLIC_URL" in problem


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://public.example/callbacks/kling", True),
        ("https://hooks.example/kling/one", True),
        ("https://hooks.example/kling", True),
        ("https://hooks.example/other", False),
        ("http://public.example@127.0.0.1:9/x", False),
        ("http://169.254.169.254/latest/meta-data", False),
    ],
)
def test_public_url_and_allowed_prefixes(url: str, allowed: bool) -> None:
    config = settings(
        public_url=PUBLIC, callback_allowed_urls="https://hooks.example/kling, https://x.example"
    )
    problem = callback_url_problem(url, config)
    assert (problem is None) is allowed, problem
    if problem:
        assert "https://hooks.example/kling" in problem  # says what is allowed


def test_allowed_urls_setting_refuses_user_info() -> None:
    from kling_omni_mcp.config import SettingsError, load_settings

    with pytest.raises(SettingsError, match="KLING_CALLBACK_ALLOWED_URLS"):
        load_settings(callback_allowed_urls="http://a@b.example/x")
