"""Command line: serve (default), demo, doctor, simulator.

In a server process stdout is the protocol: everything here logs to stderr, and only the
``demo`` and ``doctor`` commands (which are not servers) print to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from kling_omni_mcp import __version__

__all__ = ["configure_logging", "main"]

logger = logging.getLogger("kling_omni_mcp")


def configure_logging(level: str = "INFO", secrets: Sequence[str] = ()) -> None:
    """Log to stderr only, with secrets masked, at ``level``."""
    from kling_omni_mcp.redact import RedactingFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx2 logs every request line at INFO (URLs only), which is noise on a server's stderr.
    logging.getLogger("httpx2").setLevel(logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kling-omni-mcp",
        description="MCP server for Kling Omni-Image. Without a command it serves MCP over stdio.",
    )
    parser.add_argument("--version", action="version", version=f"kling-omni-mcp {__version__}")
    parser.add_argument(
        "--simulate", action="store_true", help="use the embedded simulator: no account, no cost"
    )
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="default: stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP transport: address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="HTTP transport: port (default 8000)")
    parser.add_argument(
        "--stateless", action="store_true", help="HTTP transport: no sessions (several replicas)"
    )
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="HTTP transport: allow a non-loopback address without KLING_MCP_AUTH_TOKENS",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("serve", help="serve MCP (the default)")
    sub.add_parser("demo", help="run a real MCP client against the simulated server and show the result")
    sub.add_parser("doctor", help="check settings, credentials and the output folder")
    sim = sub.add_parser(
        "simulator",
        help="serve the Kling API simulator over HTTP",
        description="Credentials may come from the environment instead of flags (flags show in ps): "
        f"{', '.join(_SIM_ENV.values())} (API keys comma-separated).",
    )
    sim.add_argument("--host", dest="sim_host", default="127.0.0.1")
    sim.add_argument("--port", dest="sim_port", type=int, default=8765)
    sim.add_argument("--api-key", action="append", default=[], help="accepted API key (repeatable)")
    sim.add_argument("--access-key", help="accepted JWT issuer")
    sim.add_argument("--secret-key", help="secret key that signs accepted JWTs")
    sim.add_argument("--duration", type=float, default=5.0, help="seconds a task takes (default 5)")
    sim.add_argument("--webhook-secret", help="sign callbacks with this whsec_... secret")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kling-omni-mcp`` command."""
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    if command == "demo":
        from kling_omni_mcp.demo import run_demo

        configure_logging("WARNING")
        return run_demo()
    if command == "simulator":
        return _run_simulator(args)

    from kling_omni_mcp.config import SettingsError, load_settings

    try:
        settings = load_settings(**({"simulate": True} if args.simulate else {}))
    except SettingsError as exc:
        configure_logging("INFO")
        logger.error("%s", exc)
        return 2
    configure_logging(settings.log_level, settings.secret_values())
    if command != "doctor":
        from kling_omni_mcp.runtime import tune_gc

        tune_gc()
    if command == "doctor":
        from kling_omni_mcp.doctor import run_doctor

        text, ready = run_doctor(settings)
        print(text)  # doctor is a command for a person, not a server: stdout is its output
        return 0 if ready else 1
    if args.transport == "http":
        from kling_omni_mcp.server.http import serve_http

        return serve_http(
            settings,
            host=args.host,
            port=args.port,
            stateless=args.stateless,
            allow_unauthenticated=args.allow_unauthenticated,
        )
    from kling_omni_mcp.server.app import build_server

    server = build_server(settings)
    logger.info(
        "kling-omni-mcp %s serving MCP over stdio%s",
        __version__,
        " (simulate mode)" if settings.simulate else "",
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.run("stdio")
    return 0


#: Environment variables the simulator command reads when the matching flag is not given.
_SIM_ENV = {
    "api_key": "KLING_SIM_API_KEYS",
    "access_key": "KLING_SIM_ACCESS_KEY",
    "secret_key": "KLING_SIM_SECRET_KEY",
    "webhook_secret": "KLING_SIM_WEBHOOK_SECRET",
}


def _simulator_env(args: argparse.Namespace) -> None:
    """Fill unset credential flags from the environment (kept out of ``ps``)."""
    for name, variable in _SIM_ENV.items():
        value = os.environ.get(variable, "").strip()
        if not value or getattr(args, name):
            continue
        if name == "api_key":
            args.api_key = [part.strip() for part in value.split(",") if part.strip()]
        else:
            setattr(args, name, value)


def _run_simulator(args: argparse.Namespace) -> int:
    _simulator_env(args)
    configure_logging("INFO", [s for s in (*args.api_key, args.secret_key, args.webhook_secret) if s])
    if bool(args.access_key) != bool(args.secret_key):
        logger.error("--access-key and --secret-key go together: give both or neither.")
        return 2
    from kling_omni_mcp.simulator import run_simulator

    run_simulator(
        host=args.sim_host,
        port=args.sim_port,
        api_keys=list(args.api_key),
        access_keys={args.access_key: args.secret_key} if args.access_key else {},
        duration=args.duration,
        webhook_secret=args.webhook_secret,
    )
    return 0
