"""Shared fixtures: the anyio backend and a fresh simulator on a free loopback port."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
