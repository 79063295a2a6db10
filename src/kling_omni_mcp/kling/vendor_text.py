"""Vendor text made safe at the client boundary, once, so nothing downstream has to think about it.

A compromised or broken vendor (or a proxy in front of it) may echo the credential we sent, put
terminal escapes or bidi overrides into a status message, or send strings of any length. Every
string of an answer passes through ``clean_vendor_text`` before it leaves the client: the
credentials in use are masked, control characters, ANSI escapes and bidi overrides are removed,
and the length is capped. Answers, sidecars and logs then only ever see cleaned text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from kling_omni_mcp.redact import redact

__all__ = ["MAX_VENDOR_STRING_CHARS", "clean_vendor_json", "clean_vendor_text"]

#: Longest vendor string kept (a signed CDN URL is ~1 KB). With at most 9 images per task this
#: keeps any task answer far below the 100,000-character ceiling of one tool answer.
MAX_VENDOR_STRING_CHARS = 4096
#: How deep a vendor JSON value may nest; deeper parts are dropped (the API nests 3 levels).
_MAX_DEPTH = 8
#: How many items of one list are looked at (the API's lists hold at most 500 tasks).
_MAX_ITEMS = 1000

# ANSI/VT escape sequences (CSI, OSC, two-character escapes), then any remaining C0/C1 control
# character, DEL, and the Unicode bidi controls and invisible formatting marks that can make text
# read differently from what it is ("Trojan source").
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def clean_vendor_text(
    text: str, secrets: Iterable[str] = (), *, max_chars: int = MAX_VENDOR_STRING_CHARS
) -> str:
    """``text`` without the given secrets, bearer tokens, JWTs, escapes and control characters.

    Line breaks and tabs become spaces (a vendor message is one line); the result is at most
    ``max_chars`` characters.
    """
    if len(text) <= max_chars and text.isprintable():
        # Nothing to strip: escapes, line breaks, C0/C1 controls and the bidi and invisible
        # marks above are all non-printable. Only the secrets are left to mask.
        return redact(text, secrets)
    text = text[: max_chars * 4]  # bound the work before the regexes run
    text = _ANSI.sub("", text)
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    text = _CONTROLS.sub("", text)
    text = redact(text, secrets)
    if len(text) > max_chars:
        text = text[: max_chars - 3] + "..."
    return text


def clean_vendor_json(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of a decoded JSON value with every string (keys too) cleaned by ``clean_vendor_text``."""
    return _clean(value, list(secrets), 0)


def _clean(value: Any, secrets: list[str], depth: int) -> Any:
    if isinstance(value, str):
        return clean_vendor_text(value, secrets)
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {
            clean_vendor_text(str(k), secrets, max_chars=200): _clean(v, secrets, depth + 1)
            for k, v in list(value.items())[:_MAX_ITEMS]
        }
    if isinstance(value, list):
        return [_clean(v, secrets, depth + 1) for v in value[:_MAX_ITEMS]]
    return value
