"""A real ``redis-server`` on a free loopback port, for the tests of shared state (issue 13)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest

from tests.conftest import free_port
from tests.tooling import redis_server_executable

_START_TIMEOUT = 10.0


class RedisServer:
    """One ``redis-server`` without persistence; ``stop()`` and ``start()`` keep its port."""

    def __init__(self, executable: str, folder: Path) -> None:
        self.executable = executable
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {_START_TIMEOUT:g} s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh ``redis-server`` for one test, stopped afterwards."""
    server = RedisServer(redis_server_executable(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def until(check: Callable[[], bool | Awaitable[bool]], timeout: float, step: float = 0.05) -> float:  # noqa: ASYNC109
    """Seconds until ``check()`` holds (awaited when it returns an awaitable); fails after ``timeout``."""
    began = anyio.current_time()
    with anyio.fail_after(timeout):
        while True:
            result = check()
            if result if isinstance(result, bool) else await result:
                return anyio.current_time() - began
            await anyio.sleep(step)
