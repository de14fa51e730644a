"""API reads at 100 connections: requests per second and latency, one daphne process and several.

    .venv/bin/python bench/api_reads.py                        # --servers 1 2 --connections 100 --seconds 10

A reviewer's ``GET /api/approvals/?status=pending`` (empty) and a customer's
``GET /api/conversations/<id>/`` (10 messages), token auth, against daphne serving
``anvia_project.asgi:application``: one process as ``make run`` serves it, then N processes
sharing one listening socket (``daphne --fd``, as supervisord's ``fcgi-program`` runs them).
Beside them, the floor in the same run: Django's admin login page on the same servers. The
client is asyncio with raw HTTP/1.1 keep-alive (``--connections`` sockets, each sending its next
request when the last answer is in), in this process, on the same machine: its own CPU is
reported. After each server set, a reviewer websocket (``/ws/approvals/``) must still open.

Target (issue 14): >= 500 req/s, p99 < 200 ms, websockets still served.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # puts the repository on sys.path
from harness import ms, percentile
from websockets.asyncio.client import connect
from websockets.typing import Origin

VENV_BIN = Path(sys.executable).parent
APP = "anvia_project.asgi:application"


def start_servers(count: int, log_dir: Path) -> tuple[list[subprocess.Popen], int, socket.socket]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(harness.BENCH_DIR), str(harness.REPO)])}
    processes = [
        harness.start_in_group(
            [str(VENV_BIN / "daphne"), "-v", "0", "--fd", str(listener.fileno()), APP],
            log_dir / f"daphne{index}.log",
            env,
            pass_fds=(listener.fileno(),),
            preexec_fn=harness.raise_fd_limit,
        )
        for index in range(count)
    ]
    return processes, port, listener


async def fetch(reader, writer, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


async def load(port: int, request: bytes, connections: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    stop_at = 0.0

    async def one() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                status = await fetch(reader, writer, request)
                if status != 200:
                    errors += 1
                latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    stop_at = time.perf_counter() + 1.0  # warm-up: every connection opened and served once
    await asyncio.gather(*(one() for _ in range(connections)))
    latencies.clear()
    errors = 0
    cpu, started = time.process_time(), time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(one() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {
        "rate": len(latencies) / elapsed,
        "mean": sum(latencies) / len(latencies) * 1000,
        "p50": percentile([x * 1000 for x in latencies], 50),
        "p99": percentile([x * 1000 for x in latencies], 99),
        "errors": errors,
        "client_cpu_us": (time.process_time() - cpu) / max(1, len(latencies)) * 1e6,
    }


async def socket_opens(port: int, cookie: str) -> bool:
    try:
        async with connect(
            f"ws://127.0.0.1:{port}/ws/approvals/",
            origin=Origin(f"http://127.0.0.1:{port}"),
            additional_headers={"Cookie": cookie},
            open_timeout=10,
        ) as websocket:
            await websocket.ping()
            return True
    except Exception as error:
        print(f"reviewer websocket failed: {error!r}")
        return False


def get(path: str, token: str = "") -> bytes:
    auth = f"Authorization: Token {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 2], help="daphne processes, one set each")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    harness.raise_fd_limit()
    with harness.scratch_services("anvia_bench_api") as services:
        harness.django_setup_and_migrate()
        from decision_to_tool import session_cookie
        from django.db import connections
        from rest_framework.authtoken.models import Token

        from agents.models import Conversation, Message

        customer, reviewer = harness.bench_users()
        conversation = Conversation.objects.create(user=customer, agent_name="support", title="bench")
        for index in range(5):
            Message.objects.create(conversation=conversation, role="user", content=f"question {index}")
            Message.objects.create(conversation=conversation, role="assistant", content=f"answer {index}")
        reviewer_token = Token.objects.get_or_create(user=reviewer)[0].key
        customer_token = Token.objects.get_or_create(user=customer)[0].key
        cookie = session_cookie(reviewer)
        connections.close_all()
        endpoints = [
            ("GET /api/approvals/?status=pending (empty)", get("/api/approvals/?status=pending", reviewer_token)),
            (
                f"GET /api/conversations/{conversation.pk}/",
                get(f"/api/conversations/{conversation.pk}/", customer_token),
            ),
            ("floor: GET /admin/login/", get("/admin/login/")),
        ]
        print(f"API reads: {services.line}; {args.connections} connections, {args.seconds:.0f} s each")
        print(f"{harness.machine_line()}; load average before: {harness.load_average()}", flush=True)
        rows = []
        log_dir = Path(tempfile.mkdtemp(prefix="anvia-bench-api-"))
        for count in args.servers:
            processes, port, listener = start_servers(count, log_dir)
            try:
                deadline = time.monotonic() + 60
                while True:
                    with (
                        contextlib.suppress(OSError),
                        socket.create_connection(("127.0.0.1", port), timeout=0.5) as probe,
                    ):
                        probe.sendall(get("/admin/login/"))
                        if probe.recv(16).startswith(b"HTTP/1.1"):
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"daphne did not answer:\n{harness.tail(log_dir / 'daphne0.log')}")
                    time.sleep(0.2)
                for name, request in endpoints:
                    before = harness.tree_usage([p.pid for p in processes])[2]
                    result = asyncio.run(load(port, request, args.connections, args.seconds))
                    server_cpu = harness.tree_usage([p.pid for p in processes])[2] - before
                    served = result["rate"] * args.seconds
                    rows.append(
                        [
                            name,
                            str(count),
                            f"{result['rate']:.0f}/s",
                            f"{ms(result['mean'])} / {ms(result['p50'])} / {ms(result['p99'])}",
                            str(result["errors"]),
                            f"{server_cpu / max(1, served) * 1000:.2f} ms",
                            f"{result['client_cpu_us']:.0f} µs",
                        ]
                    )
                    print(" | ".join(rows[-1]), flush=True)
                websocket = asyncio.run(socket_opens(port, cookie))
                rows.append(["reviewer websocket opens", str(count), "yes" if websocket else "NO", "", "", "", ""])
            finally:
                harness.stop_process_groups(processes)
                listener.close()
        print()
        harness.print_table(
            [
                "request",
                "daphne processes",
                "req/s",
                "latency mean / p50 / p99",
                "non-200",
                "server CPU/req",
                "client CPU/req",
            ],
            rows,
        )
        print(f"\nload average after: {harness.load_average()}")


if __name__ == "__main__":
    main()
