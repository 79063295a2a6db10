"""``run_simulator``: the blocking command serves until Ctrl-C and says where on stderr."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx2
import pytest

SCRIPT = (
    "from kling_omni_mcp.simulator import run_simulator; "
    "run_simulator(host='127.0.0.1', port=0, api_keys=['cli-key'], duration=0.1)"
)


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_run_simulator_logs_its_url_serves_and_stops_on_ctrl_c() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stderr is not None
        url = None
        deadline = time.monotonic() + 20
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            match = re.search(r"Kling simulator listening on (http://127\.0\.0\.1:\d+)", line)
            url = match.group(1) if match else None
        assert url, "no 'listening on' line on stderr"
        with httpx2.Client(base_url=url, timeout=5) as client:
            ok = client.get("/v1/images/omni-image", headers={"Authorization": "Bearer cli-key"})
            assert ok.status_code == 200 and ok.json()["code"] == 0
            refused = client.get("/v1/images/omni-image", headers={"Authorization": "Bearer nope"})
            assert refused.status_code == 401
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0
        assert out == ""  # nothing on stdout: it may be an MCP stdio channel elsewhere
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
