"""Which ``callback_url`` a caller may hand to the vendor.

The vendor POSTs every status change of a task to its ``callback_url``, so an unchecked value
lets a prompt-injected call make the vendor (with the user's account) hammer any address. Only
URLs under ``KLING_PUBLIC_URL`` or under one of ``KLING_CALLBACK_ALLOWED_URLS`` pass. URLs are
compared parsed, never as strings: same scheme, host and port (default ports spelled or not),
then a path prefix that ends on a segment boundary. User-info is refused outright, so
``http://public.example@127.0.0.1:9/x`` is not "under" ``http://public.example``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from kling_omni_mcp.config import Settings

__all__ = ["allowed_callback_prefixes", "callback_url_problem", "is_under"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Origin(NamedTuple):
    scheme: str
    host: str
    port: int
    path: str


def _parse(url: str) -> _Origin | None:
    """Scheme, host, port and path of a plain http(s) URL; None for anything odder."""
    if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    segments = unquote(parts.path).split("/")
    if any(segment in (".", "..") for segment in segments):
        return None  # the vendor (or a proxy) may resolve them out from under the prefix
    return _Origin(scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme], parts.path)


def is_under(url: str, prefix: str) -> bool:
    """True when ``url`` is ``prefix`` or below it (parsed comparison; see the module doc)."""
    target, base = _parse(url), _parse(prefix)
    if target is None or base is None or target[:3] != base[:3]:
        return False
    root = base.path.rstrip("/")
    return not root or target.path == root or target.path.startswith(root + "/")


def allowed_callback_prefixes(settings: Settings) -> list[str]:
    """``KLING_PUBLIC_URL`` (when set) followed by ``KLING_CALLBACK_ALLOWED_URLS``."""
    prefixes = [settings.public_url] if settings.public_url else []
    return prefixes + list(settings.callback_allowed_urls)


def callback_url_problem(url: str | None, settings: Settings) -> str | None:
    """None when ``url`` may be sent to the vendor (or is absent); otherwise the refusal to show."""
    if url is None:
        return None
    prefixes: Sequence[str] = allowed_callback_prefixes(settings)
    if any(is_under(url, prefix) for prefix in prefixes):
        return None
    shown = url if len(url) <= 200 else url[:200] + "..."
    settings_names = "KLING_PUBLIC_URL and KLING_CALLBACK_ALLOWED_URLS"
    where = (
        f"Allowed are URLs under {', '.join(prefixes)} ({settings_names})."
        if prefixes
        else f"No callback URL is allowed on this server: {settings_names} are unset."
    )
    return (
        f"callback_url {shown!r} is refused: the vendor would POST task updates to it, so only addresses "
        f"the server's operator allowed are accepted. {where} Leave callback_url out (the server watches "
        "the task itself), or ask the operator to add the URL to KLING_CALLBACK_ALLOWED_URLS."
    )
