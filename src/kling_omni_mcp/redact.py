"""Keep secrets out of logs: a logging filter that masks configured secrets and any bearer token.

Defence in depth: no code path is meant to log a key, but a vendor message, an exception text
or a third-party library might echo one. The filter rewrites the record before any handler sees it.

It also keeps one record on one line: control characters in the message (a newline in a
vendor's text or a caller's argument) are written as escapes, so an untrusted value can never
forge a log line of its own. Only an attached traceback keeps its line breaks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["RedactingFilter", "escape_controls", "redact"]

MASK = "[redacted]"

# "Bearer <anything>" and anything shaped like a JWT (three base64url parts, header starting eyJ).
_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every given secret, bearer token and JWT replaced by a mask."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    # Each pattern needs its literal start: most text has neither, and is then not scanned
    # (every vendor string passes here: a 500-task list page has about 10,000 of them).
    if "bearer" in text.lower():
        text = _PATTERNS[0].sub(lambda m: m.group(1) + MASK, text)
    if "eyJ" in text:
        text = _PATTERNS[1].sub(MASK, text)
    return text


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` on one line: each control character written as an escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's final message (arguments included) and its exception text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = escape_controls(redact(message, self._secrets))
        if record.exc_info and record.exc_info[1] is not None:
            formatted = logging.Formatter().formatException(record.exc_info)
            cleaned_exc = redact(formatted, self._secrets)
            record.exc_info = None
            record.exc_text = None
            cleaned = f"{cleaned}\n{cleaned_exc}"
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True
