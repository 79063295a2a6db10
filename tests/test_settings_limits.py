"""Settings promise only what the server does: a preview side the answer budget cannot hold is
refused at start-up, not silently ignored."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kling_omni_mcp.config import Settings


@pytest.mark.parametrize(("value", "ok"), [(0, True), (256, True), (512, True), (513, False), (1024, False)])
def test_preview_size_range(value: int, ok: bool) -> None:
    if ok:
        assert Settings(preview_size=value).preview_size == value
    else:
        with pytest.raises(ValidationError, match="less than or equal to 512"):
            Settings(preview_size=value)
