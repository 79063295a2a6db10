"""The standalone simulator command: credentials from the environment (not in ps), and its
/admin routes refuse foreign Host and Origin headers (DNS rebinding)."""

from __future__ import annotations

import base64
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import command, free_port

API_KEY = "env-sim-key-5d2c9a7e"
SECRET = "whsec_" + base64.b64encode(b"simulator-env-secret-32-bytes!!!").decode()


@pytest.fixture
def hook() -> Iterator[tuple[str, queue.Queue[tuple[bytes, dict[str, str]]]]]:
    """A plain HTTP receiver for the simulator's callbacks."""
    received: queue.Queue[tuple[bytes, dict[str, str]]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            received.put((body, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/<pid>/cmdline")
def test_simulator_command_takes_secrets_from_env_and_guards_admin(
    hook: tuple[str, queue.Queue[tuple[bytes, dict[str, str]]]], tmp_path: Path
) -> None:
    hook_url, received = hook
    port = free_port()
    env = {
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "PYTHONUNBUFFERED": "1",
        "KLING_SIM_API_KEYS": API_KEY,
        "KLING_SIM_WEBHOOK_SECRET": SECRET,
    }
    proc = subprocess.Popen(
        [*command(), "simulator", "--port", str(port), "--duration", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            url = match.group(1) if match else None
        assert url, "the simulator did not start"
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert API_KEY.encode() not in cmdline and SECRET.encode() not in cmdline
        with httpx2.Client(base_url=url, timeout=5) as client:
            assert (
                client.get("/v1/images/omni-image", headers={"Authorization": "Bearer nope"}).status_code
                == 401
            )
            auth = {"Authorization": f"Bearer {API_KEY}"}
            assert client.get("/v1/images/omni-image", headers=auth).status_code == 200
            created = client.post(
                "/v1/images/omni-image",
                headers=auth,
                json={"model_name": "kling-image-o1", "prompt": "x", "callback_url": hook_url},
            )
            assert created.status_code == 200, created.text
            body, headers = received.get(timeout=10)
            Webhook(SECRET).verify(body, headers)  # signed with the secret from the environment

            assert client.get("/admin/counters").status_code == 200
            foreign = [
                {"Host": "evil.example"},
                {"Host": f"evil.example:{port}"},
                {"Origin": "http://evil.example"},
            ]
            for extra in foreign:
                assert client.get("/admin/counters", headers=extra).status_code == 403, extra
                assert client.post("/admin/reset", headers=extra).status_code == 403, extra
            assert client.get("/admin/counters", headers={"Host": f"localhost:{port}"}).status_code == 200
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert os.environ.get("KLING_SIM_API_KEYS") is None  # the test did not leak into this process
