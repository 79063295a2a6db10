"""Secrets never leak: whole sessions (successes and failures) with known keys and tokens set,
logging at DEBUG through the project's own logging set-up, and every log line, tool answer and
file on disk searched for the key, the secret, the tokens, any JWT and any ``Bearer <token>``."""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.cli import configure_logging
from kling_omni_mcp.config import Settings
from kling_omni_mcp.kling import auth as kling_auth
from kling_omni_mcp.kling.auth import JwtAuth
from kling_omni_mcp.server.http import build_http_app
from kling_omni_mcp.simulator import Simulator
from tests.conftest import command, free_port, serve_sim, text_of, write_png
from tests.reliability.helpers import files_under, mcp_session

pytestmark = pytest.mark.anyio

API_KEY = "sk-live-APIKEY-7c1f0e9d2b4a55e1"
WRONG_API_KEY = "sk-live-WRONGKEY-1a2b3c4d5e6f"
ACCESS_KEY = "ak-reliability-access-5e8d"
SECRET_KEY = "SECRETKEY-93ab27f1c0de4411aa"
WRONG_SECRET_KEY = "SECRETKEY-wrong-0f0f0f0f0f0f"
AUTH_TOKENS = ["tok-AUTHTOKEN-one-4f2a9c77e1", "tok-AUTHTOKEN-two-8b1d3e55aa"]
_WEBHOOK_RAW = b"WEBHOOK-SECRET-bytes-0123456789ab"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(_WEBHOOK_RAW).decode()

SECRETS = [
    API_KEY,
    WRONG_API_KEY,
    SECRET_KEY,
    WRONG_SECRET_KEY,
    *AUTH_TOKENS,
    WEBHOOK_SECRET,
    WEBHOOK_SECRET.removeprefix("whsec_"),
]
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")
#: "Bearer" followed by something token-shaped that is not the redaction mask.
BEARER = re.compile(r"(?i)bearer\s+(?!\[redacted\])[A-Za-z0-9._~+/=-]{8,}")


def leaks(text: str) -> list[str]:
    """Every secret-shaped thing in ``text`` (empty when clean)."""
    found = [f"secret {s[:6]}..." for s in SECRETS if s in text]
    found += [f"JWT {m[:12]}..." for m in JWT.findall(text)]
    found += [f"bearer {m[:14]}..." for m in BEARER.findall(text)]
    return found


def assert_clean(where: str, text: str) -> None:
    problems = leaks(text)
    assert not problems, f"{where} leaks: {problems}"


def assert_files_clean(root: Path) -> int:
    """No file below ``root`` (sidecars, images, anything) contains a secret; returns how many."""
    count = 0
    for path in files_under(root):
        data = path.read_bytes()
        text = data.decode("utf-8", errors="replace")
        assert_clean(str(path), text)
        for secret in SECRETS:
            assert secret.encode() not in data, path
        count += 1
    return count


@pytest.fixture
def debug_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Settings], io.StringIO]]:
    """``start(settings)`` sets logging up exactly as the CLI does (DEBUG, the settings' secrets
    masked) but into a buffer; the previous logging set-up comes back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("httpx2").level)
    buffer = io.StringIO()

    def start(settings: Settings) -> io.StringIO:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stderr", buffer)
            configure_logging("DEBUG", settings.secret_values())
        return buffer

    yield start
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    logging.getLogger("httpx2").setLevel(saved[2])


class Recorder:
    """Calls tools and keeps every answer, whole, for the leak check."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.answers: list[str] = []

    async def call(self, tool: str, args: dict[str, Any]) -> Any:
        result = await self.client.call_tool(tool, args)
        self.answers.append(result.model_dump_json(by_alias=True))
        return result


async def failure_session(
    rec: Recorder, sim: Simulator, workdir: Path, tmp_path: Path, echoes: list[str]
) -> dict[str, int]:
    """Successes and every kind of failure, through the tools; returns what happened, by kind."""
    seen = {"ok": 0, "error": 0}

    def tally(result: Any) -> Any:
        seen["error" if result.is_error else "ok"] += 1
        return result

    reference = write_png(workdir / "ref.png")
    created = tally(
        await rec.call(
            "create_image",
            {"prompt": "A fox like <<<image_1>>>", "images": [str(reference)], "wait_seconds": 20},
        )
    )
    assert not created.is_error, text_of(created)
    task_id = created.structured_content["task_id"]
    # A 5xx burst, retried.
    sim.faults.fail_next(2, http_status=503, code=5001, kind="query")
    assert not tally(await rec.call("get_task", {"task_id": task_id})).is_error
    # A vendor error that echoes the credential back (some gateways do): it must not reach the model.
    for secret in echoes:
        sim.faults.fail_next(1, http_status=401, code=1002, message=f"invalid token {secret}", kind="query")
        assert tally(await rec.call("get_task", {"task_id": task_id})).is_error
    # A failed task, an unknown task, bad inputs, refused rules.
    sim.faults.fail_next_tasks(1, message="Refused by the risk control system")
    assert tally(await rec.call("create_image", {"prompt": "Refused", "wait_seconds": 20})).is_error
    assert tally(await rec.call("get_task", {"task_id": "no-such-task"})).is_error
    outside = write_png(tmp_path / "elsewhere" / "x.png")
    for args in (
        {"prompt": "Use <<<image_1>>>", "images": [str(outside)]},
        {"prompt": "Use <<<image_1>>>", "images": ["/etc/passwd"]},
        {"prompt": "Use <<<image_2>>>", "images": [str(reference)]},
        {"prompt": "x", "n": 99},
    ):
        assert tally(await rec.call("create_image", args)).is_error
    # A create refused by the vendor, and one whose answer is lost.
    sim.faults.fail_next(1, http_status=429, code=1102, message="resource pack exhausted", kind="create")
    assert tally(await rec.call("create_image", {"prompt": "No credit"})).is_error
    sim.faults.lose_next_create()
    assert not tally(await rec.call("create_image", {"prompt": "Lost answer"})).is_error
    assert not tally(await rec.call("list_tasks", {})).is_error
    return seen


@pytest.mark.parametrize("auth", ["api-key", "jwt"])
async def test_in_process_session_leaks_nothing(
    auth: str,
    debug_logs: Callable[[Settings], io.StringIO],
    make_settings: Callable[..., Settings],
    workdir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = {"mcp_auth_tokens": AUTH_TOKENS, "webhook_secret": WEBHOOK_SECRET}
    if auth == "api-key":
        credentials: dict[str, Any] = {"api_key": API_KEY}
        wrong: dict[str, Any] = {"api_key": WRONG_API_KEY}
        sim_config: dict[str, Any] = {"api_keys": (API_KEY,)}
        echoes = [API_KEY, f"Bearer {API_KEY}"]
    else:
        credentials = {"api_key": None, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
        wrong = {"api_key": None, "access_key": ACCESS_KEY, "secret_key": WRONG_SECRET_KEY}
        sim_config = {"api_keys": (), "access_keys": {ACCESS_KEY: SECRET_KEY}}
        header = JwtAuth(ACCESS_KEY, SECRET_KEY).authorization()  # what the client sends: Bearer <jwt>
        echoes = [header, header.partition(" ")[2]]
    async with serve_sim(**sim_config, duration=0.3, image_scale=0.2) as vendor:
        sim, base_url = vendor.sim, vendor.base_url
        settings = make_settings(base_url, **credentials, **secrets)
        logs = debug_logs(settings)
        answers: list[str] = []
        async with mcp_session(settings, mode="legacy") as client:
            rec = Recorder(client)
            seen = await failure_session(rec, sim, workdir, tmp_path, echoes)
            answers += rec.answers
        # Authentication failures: a wrong key (or secret) is itself a secret of this set-up.
        wrong_settings = make_settings(base_url, **wrong, **secrets, output_dir=tmp_path / "out-wrong")
        logs2 = debug_logs(wrong_settings)
        async with mcp_session(wrong_settings) as client:
            rec = Recorder(client)
            for tool, args in (("create_image", {"prompt": "x"}), ("list_tasks", {})):
                result = await rec.call(tool, args)
                assert result.is_error and "1002" in text_of(result)
            answers += rec.answers
        if auth == "jwt":
            # An expired token (clock two hours behind): 1004, re-signed once, then reported.
            monkeypatch.setattr(kling_auth, "wall_clock", lambda: time.time() - 7200)
            async with mcp_session(settings) as client:
                rec = Recorder(client)
                result = await rec.call("create_image", {"prompt": "x"})
                assert result.is_error and "1004" in text_of(result)
                answers += rec.answers
    assert seen == {"ok": 4, "error": 9}
    log_text = logs.getvalue() + logs2.getvalue()
    assert "kling GET /v1/images/omni-image" in log_text  # DEBUG really was on
    for number, line in enumerate(log_text.splitlines(), 1):
        assert_clean(f"log line {number}", line)
    for number, answer in enumerate(answers, 1):
        assert_clean(f"tool answer {number}", answer)
    assert assert_files_clean(settings.output_dir) >= 3  # images and sidecars were written


async def test_http_transport_session_leaks_nothing(
    debug_logs: Callable[[Settings], io.StringIO], make_settings: Callable[..., Settings], workdir: Path
) -> None:
    """Streamable HTTP with tokens, signed vendor callbacks and refused requests."""
    port = free_port()
    async with serve_sim(
        api_keys=(API_KEY,), webhook_secret=WEBHOOK_SECRET, duration=0.5, image_scale=0.2
    ) as vendor:
        sim, base_url = vendor.sim, vendor.base_url
        settings = make_settings(
            base_url,
            api_key=API_KEY,
            mcp_auth_tokens=AUTH_TOKENS,
            webhook_secret=WEBHOOK_SECRET,
            public_url=f"http://127.0.0.1:{port}",
        )
        logs = debug_logs(settings)
        answers: list[str] = []
        async with serve_asgi(build_http_app(settings), port=port) as url:
            async with httpx2.AsyncClient(timeout=10) as raw:
                body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
                for header in (f"Bearer {AUTH_TOKENS[0]}x", "Bearer wrong-token-123456", AUTH_TOKENS[1]):
                    refused = await raw.post(f"{url}/mcp", json=body, headers={"Authorization": header})
                    assert refused.status_code == 401
                    answers.append(refused.text + str(refused.headers))
                forged = await raw.post(
                    f"{url}/callbacks/kling",
                    content=b'{"task_id": "1", "task_status": "succeed"}',
                    headers={"webhook-id": "msg_1", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"},
                )
                assert forged.status_code == 401
                answers.append(forged.text)
            headers = {"Authorization": f"Bearer {AUTH_TOKENS[1]}"}
            http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60))
            async with Client(
                streamable_http_client(f"{url}/mcp", http_client=http), mode="legacy"
            ) as client:
                rec = Recorder(client)
                created = await rec.call("create_image", {"prompt": "Over HTTP", "wait_seconds": 20})
                assert not created.is_error, text_of(created)
                assert created.structured_content["status"] == "succeeded"
                sim.faults.fail_next(1, http_status=401, code=1002, message=f"bad {API_KEY}", kind="query")
                assert (
                    await rec.call("get_task", {"task_id": created.structured_content["task_id"]})
                ).is_error
                answers += rec.answers
    # The vendor's signed callbacks reached the server (so the webhook secret was in use).
    assert any(r.http_status == 200 for r in sim.counters.callbacks)
    log_text = logs.getvalue()
    assert "Refused a callback" in log_text
    for number, line in enumerate(log_text.splitlines(), 1):
        assert_clean(f"log line {number}", line)
    for number, answer in enumerate(answers, 1):
        assert_clean(f"answer {number}", answer)
    assert_files_clean(settings.output_dir)


async def test_stdio_subprocess_stderr_leaks_nothing(tmp_path: Path, workdir: Path) -> None:
    """The real command over stdio, logging at DEBUG: its stderr is searched line by line."""
    reference = write_png(workdir / "ref.png")
    out = tmp_path / "out"
    stderr_path = tmp_path / "stderr.log"
    async with serve_sim(api_keys=(API_KEY,), duration=0.3, image_scale=0.2) as vendor:
        sim, base_url = vendor.sim, vendor.base_url
        env = {
            "HOME": str(tmp_path / "home"),
            "KLING_API_KEY": API_KEY,
            "KLING_MCP_AUTH_TOKENS": ",".join(AUTH_TOKENS),
            "KLING_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "KLING_API_BASE_URL": base_url,
            "KLING_DOWNLOAD_ALLOW_PRIVATE": "true",
            "KLING_OUTPUT_DIR": str(out),
            "KLING_INPUT_DIRS": os.pathsep.join([str(workdir), str(out)]),
            "KLING_POLL_INITIAL_SECONDS": "0.1",
            "KLING_LOG_LEVEL": "DEBUG",
        }
        cmd = command()
        params = StdioServerParameters(command=cmd[0], args=cmd[1:], env=env)
        with open(stderr_path, "w") as errlog:  # noqa: ASYNC230 - the child needs a real file
            async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=60) as client:
                rec = Recorder(client)
                created = await rec.call(
                    "create_image",
                    {"prompt": "<<<image_1>>> at sea", "images": [str(reference)], "wait_seconds": 20},
                )
                assert not created.is_error, text_of(created)
                sim.faults.fail_next(2, http_status=503, code=5001, kind="query")
                sim.faults.fail_next(1, http_status=401, code=1002, message=f"bad {API_KEY}", kind="query")
                got = await rec.call("get_task", {"task_id": created.structured_content["task_id"]})
                assert got.is_error and "1002" in text_of(got)
                assert (await rec.call("create_image", {"prompt": "x", "images": ["/etc/passwd"]})).is_error
                assert (await rec.call("get_task", {"task_id": "no-such-task"})).is_error
                assert not (await rec.call("list_tasks", {})).is_error
    stderr = stderr_path.read_text()
    assert "DEBUG" in stderr and "kling GET" in stderr  # the log really was at DEBUG
    for number, line in enumerate(stderr.splitlines(), 1):
        assert_clean(f"stderr line {number}", line)
    for number, answer in enumerate(rec.answers, 1):
        assert_clean(f"tool answer {number}", answer)
    assert assert_files_clean(out) >= 2
