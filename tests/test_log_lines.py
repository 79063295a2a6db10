"""Log lines cannot be forged: an untrusted value with a newline stays on its record's line."""

from __future__ import annotations

import io
import logging

from kling_omni_mcp.redact import RedactingFilter


def test_a_newline_in_an_untrusted_value_cannot_forge_a_log_line() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter(["sk-live-123456"]))
    logger = logging.getLogger("test.forge")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        vendor_text = "ok\nERROR kling_omni_mcp: key sk-live-123456 leaked\x1b[2J\r"
        logger.warning("vendor said %s", vendor_text)
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("WARNING vendor said ok\\nERROR")
    assert "sk-live-123456" not in out.getvalue() and "\x1b" not in out.getvalue()
