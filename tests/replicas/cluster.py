"""Replicas of the real HTTP server as subprocesses (``kling-omni-mcp --transport http --stateless``)
sharing one Redis, one output folder, one public URL and the simulator, behind ``proxy.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import TEST_API_KEY, command, free_port
from tests.replicas.proxy import RoundRobinProxy, running_proxy

_READY_TIMEOUT = 60.0


@dataclass
class Replica:
    """One server process; its log is in ``log``."""

    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: Mapping[str, str]) -> None:
        args = [*command(), "--transport", "http", "--stateless", "--port", str(self.port)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(args, env=dict(env), stdout=subprocess.DEVNULL, stderr=out)

    def kill(self) -> None:
        """SIGKILL: no release, no goodbye (a crashed or evicted replica)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    async def health(self) -> dict[str, Any]:
        async with httpx2.AsyncClient(timeout=5) as http:
            response = await http.get(f"{self.url}/healthz")
            body: dict[str, Any] = response.json()
            return body


def mcp_client(base: str) -> Client:
    """An MCP client (stateless-friendly legacy handshake) for the server at ``base``."""
    http = httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120))
    return Client(streamable_http_client(f"{base}/mcp", http_client=http), mode="legacy")


@dataclass
class Cluster:
    replicas: list[Replica]
    proxy: RoundRobinProxy
    url: str
    output: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self, base: str | None = None) -> Client:
        """An MCP client through the proxy (or straight to ``base``)."""
        return mcp_client(base or self.url)

    def holder_of(self, token: str) -> Replica:
        """The replica whose pid names a lease token (``host-pid-…:…``)."""
        pid = int(token.split(":", 1)[0].rsplit("-", 2)[1])
        return next(r for r in self.replicas if r.process is not None and r.process.pid == pid)


async def _ready(replica: Replica) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if replica.process is not None and replica.process.poll() is not None:
            raise RuntimeError(f"replica on {replica.port} exited: {replica.log.read_text()[-2000:]}")
        try:
            if (await replica.health()).get("ready"):
                return
        except httpx2.HTTPError:
            pass
        await anyio.sleep(0.2)
    raise RuntimeError(f"replica on {replica.port} not ready: {replica.log.read_text()[-2000:]}")


@asynccontextmanager
async def running_cluster(
    tmp_path: Path, sim_url: str, redis_url: str | None, count: int = 3, **settings: str
) -> AsyncIterator[Cluster]:
    """``count`` replicas behind a round-robin proxy; ``settings`` are extra KLING_* values."""
    output = tmp_path / "shared-out"
    output.mkdir(exist_ok=True)
    proxy_port = free_port()
    replicas = [Replica(free_port(), tmp_path / f"replica-{n}.log") for n in range(count)]
    proxy = RoundRobinProxy([r.url for r in replicas])
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    env.update(
        KLING_API_KEY=TEST_API_KEY,
        KLING_API_BASE_URL=sim_url,
        KLING_OUTPUT_DIR=str(output),
        KLING_INPUT_DIRS=str(tmp_path),
        KLING_PUBLIC_URL=f"http://127.0.0.1:{proxy_port}",
        KLING_DOWNLOAD_ALLOW_PRIVATE="true",  # the simulator's result links are on loopback
        KLING_POLL_INITIAL_SECONDS="0.5",
        KLING_POLL_MAX_SECONDS="1.0",
        KLING_LOG_LEVEL="INFO",
    )
    if redis_url is not None:
        env["KLING_REDIS_URL"] = redis_url
    env.update({f"KLING_{k.upper()}": v for k, v in settings.items()})
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(running_proxy(proxy, port=proxy_port))
        for replica in replicas:
            stack.callback(replica.stop)
            replica.start(env)
        async with anyio.create_task_group() as tg:
            for replica in replicas:
                tg.start_soon(_ready, replica)
        yield Cluster(replicas, proxy, url, output, env)
