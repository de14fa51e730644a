"""How long until every connected reviewer's websocket has a new approval.

    .venv/bin/python bench/reviewer_fanout.py               # ~2 min on 2 cores; --n 1 100 for a short run

daphne serves ``anvia_project.asgi:application`` on loopback, as the Procfile has it, with the
project's channel layer (``bench_settings.py``: a key prefix of the bench's own). The bench opens
1, then 100, then 1000 reviewer websockets to ``/ws/approvals/`` (``websockets``' asyncio client,
a session cookie for a staff reviewer, permessage-deflate offered as browsers do; daphne declines
it), and for each N repeats: ``approval_request`` (in a worker thread, real rows) -> the
``approval.created`` frame on all N sockets. Timed from the approval's commit
(``notify_reviewers`` called by ``on_commit``: the start of the ``group_send``) to the first and
the last socket receiving it; also from ``approval_request`` returning. Reported: p50/p99
(nearest rank) over the repetitions, lost frames, and CPU time per delivered frame of the server
and of this process (the clients). N=1 is the floor: one commit, one ``group_send``, one frame.

``--payload short,max``: a ~40-character reason, and one longer than the 300-character preview.
``--quick``: 5 repetitions. ``--logs DIR``: keep the server's output. Services and ``--nice`` /
``--wait-quiet``: bench/README.md. RLIMIT_NOFILE is raised to the hard limit here and in daphne.

Target: N=1000 under 400 ms p99.
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
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import harness  # puts the repository on sys.path
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Origin

from scripts.embedded_redis import free_port

perf = time.perf_counter
VENV_BIN = Path(sys.executable).parent
CONNECT_CONCURRENCY = 32
CONNECT_ATTEMPTS = 5
SETTLE_SECONDS = 0.15
SHORT_REASON = "Review refund of $150.00 for order A-{i}."
APP = "anvia_project.asgi:application"


def start_daphne(log_path: Path, limit: float = 60.0) -> tuple[subprocess.Popen, int]:
    """Start daphne in a process group of its own; return it and its port once it listens."""
    port = free_port()
    command = [str(VENV_BIN / "daphne"), "-v", "0", "-b", "127.0.0.1", "-p", str(port), APP]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(harness.BENCH_DIR), str(harness.REPO)])}
    process = harness.start_in_group(command, log_path, env, preexec_fn=harness.raise_fd_limit)
    deadline = time.monotonic() + limit
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return process, port
        time.sleep(0.1)
    harness.stop_process_groups([process])
    raise RuntimeError(f"daphne did not listen within {limit:.0f} s:\n{harness.tail(log_path)}")


class ReviewerSocket(ClientConnection):
    """Stamps when a frame's bytes arrive, before asyncio wakes the socket's reader (up to ms later)."""

    received_at = 0.0

    def data_received(self, data: bytes) -> None:
        self.received_at = perf()
        super().data_received(data)


class Fleet:
    """N reviewer websockets; records when the frame carrying the current token reaches each."""

    def __init__(self, port: int, cookie: str) -> None:
        self.uri, self.origin, self.cookie = f"ws://127.0.0.1:{port}/ws/approvals/", f"http://127.0.0.1:{port}", cookie
        self.sockets: list[ReviewerSocket] = []
        self.readers: list[asyncio.Task] = []
        self.token = ""
        self.frame_bytes = 0
        self.expected = 0
        self.arrivals: list[float] = []
        self.all_in = asyncio.Event()
        self.closing = False
        self.closed_early = 0
        self.reconnects = 0

    async def read(self, websocket: ReviewerSocket) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in websocket:
                if self.token and self.token in message:
                    self.arrivals.append(websocket.received_at)
                    self.frame_bytes = len(message.encode())
                    if len(self.arrivals) >= self.expected:
                        self.all_in.set()
        if not self.closing:  # the server closed first
            self.closed_early += 1

    async def grow(self, total: int) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one() -> None:
            # On a loaded machine daphne gives up on a handshake its consumer did not accept within
            # 5 s (--websocket_connect_timeout: connect reads the session and permissions on the
            # one sync thread); such a socket is opened again, and counted.
            for attempt in range(CONNECT_ATTEMPTS):
                async with gate:
                    try:
                        websocket = await connect(
                            self.uri,
                            origin=Origin(self.origin),
                            additional_headers={"Cookie": self.cookie},
                            proxy=None,
                            open_timeout=60,
                            ping_interval=None,  # no keepalive traffic among the timed frames
                            close_timeout=5,
                            max_size=None,
                            create_connection=ReviewerSocket,
                        )
                    except (OSError, TimeoutError, InvalidHandshake):
                        if attempt == CONNECT_ATTEMPTS - 1:
                            raise
                        self.reconnects += 1
                        continue
                self.sockets.append(websocket)
                self.readers.append(asyncio.create_task(self.read(websocket)))
                return

        await asyncio.gather(*(one() for _ in range(total - len(self.sockets))))

    def arm(self, token: str) -> None:
        self.token, self.expected, self.arrivals = token, len(self.sockets), []
        self.all_in.clear()

    async def close(self) -> None:
        self.closing = True
        gate = asyncio.Semaphore(100)

        async def one(websocket: ReviewerSocket) -> None:
            async with gate:
                await websocket.close()

        await asyncio.gather(*(one(websocket) for websocket in self.sockets))
        await asyncio.gather(*self.readers)
        self.sockets, self.readers = [], []


@dataclass
class Result:
    payload: str
    n: int
    first: list[float] = field(default_factory=list)  # ms, commit -> first socket
    last: list[float] = field(default_factory=list)  # ms, commit -> last socket
    from_return: list[float] = field(default_factory=list)  # ms, approval_request returned -> last socket
    lost: int = 0
    frame_bytes: int = 0
    server_cpu_per_frame_us: float = 0.0
    client_cpu_per_frame_us: float = 0.0  # this process: the clients (and the sender thread)


class Sender:
    """Creates approvals as the agent run would; stamps the commit (``notify_reviewers`` called)."""

    def __init__(self, payload: str) -> None:
        import approvals.services as services
        from approvals.notifications import notify_reviewers

        self.services = services
        self.payload = payload
        self.notified_at = 0.0

        def stamped(kind, approval) -> None:
            self.notified_at = perf()
            notify_reviewers(kind, approval)

        services.notify_reviewers = stamped  # the real one, with a time stamp in front

    def reason(self, i: int, token: str) -> str:
        text = f"{token} {SHORT_REASON.format(i=i)}"
        if self.payload == "max":  # longer than the preview: the summary carries its first 300 characters
            text += " The customer says the parcel arrived damaged and sent photos." * 6
        return text

    def create(self, i: int, token: str) -> tuple[float, float]:
        from django.contrib.auth import get_user_model

        # A customer of its own per approval: one customer may have only so many waiting at once.
        requester, _ = get_user_model().objects.get_or_create(username=f"bench-customer-{i}")
        self.services.approval_request(
            request=self.services.ApprovalRequest(
                run_id=uuid.uuid4().hex,
                call_id="call-1",
                agent_name="support",
                tool_name="refund_order",
                args={"order_id": f"A-{i}", "amount": 150.0},
                reason=self.reason(i, token),
                requested_by_id=requester.pk,
            )
        )
        returned = perf()
        from django.db import connection

        connection.close_if_unusable_or_obsolete()
        return self.notified_at, returned


def reviewer_cookie() -> str:
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    _, user = harness.bench_users()
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


async def measure(payload: str, reps: dict[int, int], warmup: int, log_dir: str, cookie: str) -> list[Result]:
    sender = await asyncio.to_thread(Sender, payload)
    log_path = Path(log_dir) / f"daphne-{payload}.log"
    server, port = start_daphne(log_path)
    results: list[Result] = []
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-sender")
    fleet = Fleet(port, cookie)
    try:
        serial = 0
        for n in sorted(reps):
            started = perf()
            await fleet.grow(n)
            again = f", {fleet.reconnects} handshakes retried so far" if fleet.reconnects else ""
            print(f"  [{payload}]: {n} sockets open ({perf() - started:.1f} s to connect{again})", flush=True)
            result = Result(payload, n)
            cpu_before = client_cpu_before = cpu_frames = 0.0
            for rep in range(warmup + reps[n]):
                if rep == warmup:
                    cpu_before, client_cpu_before = harness.tree_usage([server.pid])[2], time.process_time()
                serial += 1
                token = f"[bench-{uuid.uuid4().hex[:8]}-{serial}]"
                fleet.arm(token)
                notified, returned = await loop.run_in_executor(executor, sender.create, serial, token)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fleet.all_in.wait(), 20)
                got = len(fleet.arrivals)
                if rep >= warmup:
                    cpu_frames += got
                    result.lost += n - got
                    if got:
                        result.first.append((min(fleet.arrivals) - notified) * 1000)
                        if got == n:
                            result.last.append((max(fleet.arrivals) - notified) * 1000)
                            result.from_return.append((max(fleet.arrivals) - returned) * 1000)
                await asyncio.sleep(SETTLE_SECONDS)
            if cpu_frames:
                result.server_cpu_per_frame_us = (harness.tree_usage([server.pid])[2] - cpu_before) / cpu_frames * 1e6
                result.client_cpu_per_frame_us = (time.process_time() - client_cpu_before) / cpu_frames * 1e6
            result.frame_bytes = fleet.frame_bytes
            results.append(result)
            if result.last:
                print(
                    f"    N={n}: last socket p50 {harness.percentile(result.last, 50):.1f} ms, "
                    f"p99 {harness.percentile(result.last, 99):.1f} ms, lost {result.lost}; all (ms): "
                    + " ".join(f"{v:.0f}" for v in sorted(result.last)),
                    flush=True,
                )
            else:
                print(f"    N={n}: no repetition reached every socket (lost {result.lost})", flush=True)
        if fleet.closed_early:
            print(f"  the server closed {fleet.closed_early} sockets early", flush=True)
    finally:
        await fleet.close()
        harness.stop_process_groups([server])
        executor.shutdown(wait=True)
        if not results:
            print(harness.tail(log_path), file=sys.stderr)
    return results


def report(results: list[Result], services_line: str, load: str) -> None:
    print()
    print(f"Reviewer fan-out: approval committed -> approval.created on every socket. {services_line}.")
    print(f"daphne + the project's channel layer. {harness.machine_line()}. Load average before/after: {load}.")
    print("Target: N=1000 last socket p99 < 400 ms, nothing lost. N=1 is the floor (one commit, one frame).")
    headers = ["payload", "N", "reps", "first p50", "last p50", "last p99", "return->last p50", "lost"]
    headers += ["CPU/frame server", "client", "target"]
    rows = []
    for r in results:
        if r.last:
            last99 = harness.percentile(r.last, 99)
            cells = [harness.percentile(r.first, 50), harness.percentile(r.last, 50), last99]
            cells = [f"{value:.1f} ms" for value in [*cells, harness.percentile(r.from_return, 50)]]
        else:
            last99 = float("inf")
            cells = ["-", "-", "-", "-"]
        target = ("met" if last99 < 400 and not r.lost else "MISSED") if r.n == 1000 else ""
        # CPU clocks tick every 10 ms: per-frame figures mean something from N=100 up.
        cpu = [f"{us:.0f} µs" if r.n >= 100 else "-" for us in (r.server_cpu_per_frame_us, r.client_cpu_per_frame_us)]
        rows.append([f"{r.payload} ({r.frame_bytes} B)", str(r.n), str(len(r.last)), *cells, str(r.lost), *cpu, target])
    harness.print_table(headers, rows)


async def run(args) -> list[Result]:
    reps = {n: args.reps_large if n >= 1000 else args.reps_small for n in args.n}
    cookie = await asyncio.to_thread(reviewer_cookie)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="anvia-fanout-") as scratch_dir:
        for payload in args.payload:
            results += await measure(payload, reps, args.warmup, args.logs or scratch_dir, cookie)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payload", default="short", help="short, max, or short,max")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 100, 1000], help="how many sockets, in turn")
    parser.add_argument("--reps-small", type=int, default=20, help="repetitions for N < 1000")
    parser.add_argument("--reps-large", type=int, default=15, help="repetitions for N >= 1000")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="5 repetitions each, 1 warm-up")
    parser.add_argument("--logs", metavar="DIR", help="keep the server's output in DIR")
    harness.add_quiet_arguments(parser)
    args = parser.parse_args()
    args.payload = [p.strip() for p in args.payload.split(",") if p.strip()]
    if bad := set(args.payload) - {"short", "max"}:
        parser.error(f"unknown payloads: {', '.join(sorted(bad))}")
    if args.quick:
        args.reps_small = args.reps_large = 5
        args.warmup = 1

    limit = harness.raise_fd_limit()
    if limit < 2 * max(args.n) + 200:
        sys.exit(f"RLIMIT_NOFILE is {limit}; {2 * max(args.n) + 200} descriptors are needed for {max(args.n)} sockets.")
    with harness.measured_services(args, "anvia_bench_fanout") as (_, services_line, load_before):
        results = asyncio.run(run(args))
        report(results, services_line, f"{load_before} / {harness.load_average()}")


if __name__ == "__main__":
    main()
