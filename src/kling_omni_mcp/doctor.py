"""``kling-omni-mcp doctor``: check settings, credentials and folders; print a verdict to act on."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import anyio

from kling_omni_mcp import __version__
from kling_omni_mcp.config import Settings
from kling_omni_mcp.kling.errors import KlingError
from kling_omni_mcp.runtime import open_service, result_root
from kling_omni_mcp.service import KlingService

__all__ = ["Check", "report", "run_checks", "run_doctor"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _check_output(settings: Settings) -> Check:
    folder = result_root(settings)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".doctor-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return Check(
            "output folder",
            False,
            f"{folder} is not writable ({exc.strerror}): set KLING_OUTPUT_DIR to a folder you own.",
        )
    return Check("output folder", True, f"{folder} is writable")


def _check_inputs(settings: Settings) -> Check:
    dirs = settings.allowed_input_dirs
    missing = [str(d) for d in dirs if not d.is_dir()]
    shown = os.pathsep.join(str(d) for d in dirs)
    if missing:
        return Check("input folders", False, f"not found: {', '.join(missing)} (KLING_INPUT_DIRS={shown})")
    return Check("input folders", True, f"local images may come from: {shown}")


async def _check_account(service: KlingService, settings: Settings) -> Check:
    """The resource packs (informative: a failure here does not stop the server from working)."""
    try:
        with anyio.fail_after(settings.http_timeout + 5):
            account = await service.account.get()
    except KlingError as exc:
        return Check("account", False, f"GET /account/costs failed: {exc.describe()}")
    except TimeoutError:
        return Check("account", False, "GET /account/costs did not answer in time")
    packs = "; ".join(
        f"{p.name}: {p.remaining_units:g}/{p.total_units:g} units, {p.status}" for p in account.packs
    )
    detail = f"{account.remaining_units_active:g} units left in active packs ({packs or 'no packs'}). "
    return Check("account", True, detail + " ".join(account.notes[:2]))


async def run_checks(settings: Settings) -> list[Check]:
    """Every check, in the order a person would fix them."""
    checks = [Check("version", True, f"kling-omni-mcp {__version__}")]
    mode = "simulate (embedded simulator, no account)" if settings.simulate else settings.api_base_url
    checks.append(Check("vendor", True, mode))
    problem = settings.credentials_problem()
    if problem:
        checks.append(Check("credentials", False, problem))
    else:
        kind = (
            "simulated"
            if settings.simulate
            else ("API key" if settings.api_key else "access key + secret key (JWT)")
        )
        checks.append(Check("credentials", True, kind))
        try:
            async with open_service(settings) as service:
                with anyio.fail_after(settings.http_timeout + 5):
                    listing = await service.list_tasks(page=1, page_size=1)
                checks.append(
                    Check("API call", True, f"list_tasks answered ({len(listing.tasks)} task(s) on page 1)")
                )
                checks.append(await _check_account(service, settings))
        except KlingError as exc:
            checks.append(Check("API call", False, exc.describe()))
        except TimeoutError:
            checks.append(Check("API call", False, f"no answer from {settings.api_base_url} in time"))
    checks.append(_check_output(settings))
    checks.append(_check_inputs(settings))
    return checks


def report(checks: list[Check]) -> tuple[str, bool]:
    """The checks and a verdict a person can act on, as text; and whether everything is ready."""
    lines = [f"[{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}" for check in checks]
    failed = [c for c in checks if not c.ok]
    if failed:
        lines.append(f"\nNot ready: fix the {len(failed)} item(s) marked FAIL, then run the doctor again.")
    else:
        lines.append("\nReady: add kling-omni-mcp to your MCP host (see the README) and ask for an image.")
    return "\n".join(lines), not failed


def run_doctor(settings: Settings) -> tuple[str, bool]:
    """Run every check; return the report and whether everything is ready."""
    return report(anyio.run(run_checks, settings))
