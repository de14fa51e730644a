"""A reviewer's decision reaches the protected tool: a real worker blocked on it, a real HTTP decision.

    .venv/bin/python bench/decision_to_tool.py                 # 50 decisions (+3 warm-up)
    REDIS_URL=redis://127.0.0.1:6379/0 DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \\
        .venv/bin/python bench/decision_to_tool.py             # scratch database anvia_bench_decide_tool

Per repetition a customer asks "Please refund order D-xxxxx, $150" (over $100: the refund needs a
reviewer) through the real ``conversation_post_message``; a real Celery worker process
(``--workers``, as in ``turn_throughput.py``) runs the agent, which asks for approval and blocks
on the decision channel. Once the approval is pending and the worker blocked (the run's status
says so, then ``--settle`` seconds), the bench POSTs the decision to a real daphne process
serving the project (``POST /api/approvals/<id>/decision/``, token auth, one kept-alive HTTP
connection), while the customer's websocket (``/ws/conversations/<id>/``, session cookie) waits
for the run's ``run.finished`` frame. Reported, p50 / p99 over the repetitions:

- decision committed -> the protected tool's body starts: ``Approval.decided_at`` -> the refund
  row's ``created_at`` (server timestamps, one clock), split at the ``decided`` ``ApprovalEvent``
  row's ``created_at`` (written inside the deciding transaction, just before its commit);
- reviewer POSTs -> the answer is visible to the customer: the POST sent -> ``run.finished`` on
  the customer's socket (the bytes arriving);
- reviewer POSTs -> the HTTP answer; decided -> the run's ``finished_at``.

Beside them, measured in the same run: one PostgreSQL commit (an ``UPDATE`` of one row in
autocommit, psycopg, the scratch database; SQLite: the same through its driver) and a redis-py
``BLPOP`` woken by an ``LPUSH`` from another thread. Services, ``--env`` and the worker options:
bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import queue
import tempfile
import threading
import time
import uuid
from pathlib import Path

import harness  # puts the repository on sys.path
from harness import ms, percentile
from reviewer_fanout import start_daphne
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

QUESTION = "Please refund order {}, $150"


class StampedSocket(ClientConnection):
    """Stamps when a frame's bytes arrive, before asyncio wakes the reader."""

    received_at = 0.0

    def data_received(self, data: bytes) -> None:
        self.received_at = time.perf_counter()
        super().data_received(data)


class CustomerSockets:
    """The customers' chat websockets, on an event loop of their own in a thread; each
    ``run.finished`` frame is put on ``finished`` as (run id, arrival time)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.finished: queue.Queue = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="customer-sockets", daemon=True)
        self.thread.start()
        self.sockets: list[StampedSocket] = []

    def open(self, conversation_id: int, cookie: str) -> None:
        asyncio.run_coroutine_threadsafe(self._open(conversation_id, cookie), self.loop).result(30)

    async def _open(self, conversation_id: int, cookie: str) -> None:
        websocket = await connect(
            f"ws://127.0.0.1:{self.port}/ws/conversations/{conversation_id}/",
            origin=Origin(f"http://127.0.0.1:{self.port}"),
            additional_headers={"Cookie": cookie},
            create_connection=StampedSocket,
            open_timeout=20,
        )
        self.sockets.append(websocket)
        self.loop.create_task(self._read(websocket))

    async def _read(self, websocket: StampedSocket) -> None:
        with contextlib.suppress(Exception):
            async for message in websocket:
                frame = json.loads(message)
                if frame.get("type") == "run.finished":
                    self.finished.put((frame["run_id"], websocket.received_at))

    def close(self) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(s.close() for s in self.sockets), return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def session_cookie(user) -> str:
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def commit_floor(samples: int = 300) -> list[float]:
    """One-row ``UPDATE`` in autocommit (one commit each) on the bench's database, in ms."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_commit_floor (id integer PRIMARY KEY, n integer)")
        cursor.execute("DELETE FROM bench_commit_floor")
        cursor.execute("INSERT INTO bench_commit_floor VALUES (1, 0)")
        timings = []
        for _ in range(samples + 20):
            started = time.perf_counter()
            cursor.execute("UPDATE bench_commit_floor SET n = n + 1 WHERE id = 1")
            timings.append((time.perf_counter() - started) * 1000)
    return timings[20:]


def blpop_floor(redis_url: str, samples: int = 300) -> list[float]:
    """``LPUSH`` sent -> a ``BLPOP`` blocked in another thread returns, in ms."""
    import redis

    key = f"anvia-bench:blpop-floor:{uuid.uuid4().hex}"
    waiter, pusher = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    woke: queue.Queue = queue.Queue()
    ready = threading.Event()

    def wait() -> None:
        for _ in range(samples + 20):
            ready.set()
            waiter.blpop([key], timeout=5)
            woke.put(time.perf_counter())

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    timings = []
    try:
        for _ in range(samples + 20):
            ready.wait(5)
            ready.clear()
            time.sleep(0.002)  # let it block
            sent = time.perf_counter()
            pusher.lpush(key, b"1")
            timings.append((woke.get(timeout=5) - sent) * 1000)
    finally:
        thread.join(5)
        pusher.delete(key)
        waiter.close()
        pusher.close()
    return timings[20:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50, help="decisions measured")
    parser.add_argument("--warmup", type=int, default=3, help="first decisions left out (a cold worker)")
    parser.add_argument("--settle", type=float, default=0.05, help="seconds between 'waiting' and the POST")
    parser.add_argument("--timeout", type=float, default=300.0)
    harness.add_worker_arguments(parser)
    args = parser.parse_args()
    with harness.worker_host(args, "anvia_bench_decide_tool", "decision to tool") as (services, workers):
        from django.db import connections
        from rest_framework.authtoken.models import Token

        from agents.models import AgentRun, Conversation, Message
        from agents.services import conversation_post_message
        from approvals.models import Approval, ApprovalEvent
        from shop.models import Order, Refund

        total = args.n + args.warmup
        conversation_ids = harness.create_customers(total, prefix="D")
        _, reviewer = harness.bench_users()
        token = Token.objects.get_or_create(user=reviewer)[0].key
        workers.start()
        log_dir = Path(tempfile.mkdtemp(prefix="anvia-bench-daphne-"))
        server, port = start_daphne(log_dir / "daphne.log")
        sockets = CustomerSockets(port)
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + args.timeout
        rows: list[dict] = []
        try:
            commit_ms = commit_floor()
            blpop_ms = blpop_floor(services.redis_url)
            for index, conversation_id in enumerate(conversation_ids):
                if time.monotonic() > deadline:
                    print(f"stopped at the {args.timeout:.0f} s bound after {index} decisions")
                    break
                conversation = Conversation.objects.select_related("user").get(pk=conversation_id)
                number = Order.objects.get(customer=conversation.user).number
                sockets.open(conversation_id, session_cookie(conversation.user))
                run = conversation_post_message(conversation=conversation, content=QUESTION.format(number))
                done, progress = harness.wait_for(
                    lambda run=run: (
                        AgentRun.objects.filter(pk=run.pk, status=AgentRun.Status.WAITING_FOR_APPROVAL).exists()
                        and Approval.objects.filter(run_id=str(run.pk), status=Approval.Status.PENDING).exists(),
                        str(AgentRun.objects.filter(pk=run.pk).values_list("status", flat=True).first()),
                    ),
                    deadline=deadline,
                    interval=0.002,
                )
                if not done:
                    raise RuntimeError(f"run {run.pk} never waited for a decision: {progress}")
                approval = Approval.objects.get(run_id=str(run.pk))
                time.sleep(args.settle)  # the worker is in its BLPOP by now
                body = json.dumps({"approved": True, "reason": "bench"})
                posted = time.perf_counter()
                client.request(
                    "POST",
                    f"/api/approvals/{approval.pk}/decision/",
                    body=body,
                    headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
                )
                response = client.getresponse()
                response.read()
                answered = time.perf_counter()
                if response.status != 200:
                    raise RuntimeError(f"the decision POST answered {response.status}")
                while True:
                    run_id, arrived = sockets.finished.get(timeout=30)
                    if run_id == str(run.pk):
                        break
                connections.close_all()  # fresh reads below
                decided = Approval.objects.get(pk=approval.pk)
                decided_event = ApprovalEvent.objects.get(approval_id=approval.pk, kind=ApprovalEvent.Kind.DECIDED)
                finished = AgentRun.objects.get(pk=run.pk)
                refund = Refund.objects.filter(idempotency_key=f"{run.pk}:{approval.call_id}").first()
                if finished.status != AgentRun.Status.SUCCEEDED or refund is None:
                    answer = Message.objects.filter(run=finished, role=Message.Role.ASSISTANT).first()
                    raise RuntimeError(
                        f"run {run.pk} ended {finished.status} {finished.error!r}, refund {refund}, "
                        f"approval {decided.status}, answer {answer and answer.content!r}"
                    )
                rows.append(
                    {
                        "tool": (refund.created_at - decided.decided_at).total_seconds() * 1000,
                        "in_decide": (decided_event.created_at - decided.decided_at).total_seconds() * 1000,
                        "after_decide": (refund.created_at - decided_event.created_at).total_seconds() * 1000,
                        "visible": (arrived - posted) * 1000,
                        "http": (answered - posted) * 1000,
                        "finished": (finished.finished_at - decided.decided_at).total_seconds() * 1000,
                    }
                )
        finally:
            client.close()
            sockets.close()
            harness.stop_process_groups([server])
        measured = rows[args.warmup :]
        if not measured:
            raise SystemExit("no decision measured")

        def figure(key: str) -> str:
            values = [row[key] for row in measured]
            return f"{ms(percentile(values, 50))} / {ms(percentile(values, 99))}"

        floors = (
            f"PostgreSQL commit {ms(percentile(commit_ms, 50))} / {ms(percentile(commit_ms, 99))}; "
            if "postgres" in services.database_url
            else f"SQLite commit {ms(percentile(commit_ms, 50))} / {ms(percentile(commit_ms, 99))}; "
        ) + f"BLPOP wake {ms(percentile(blpop_ms, 50))} / {ms(percentile(blpop_ms, 99))}"
        print(f"\n{len(measured)} decisions ({args.warmup} warm-up left out); floors (same run, p50 / p99): {floors}")
        harness.print_table(
            ["figure", "p50 / p99", "target"],
            [
                [
                    "decision committed -> tool body starts (decided_at -> refund created_at)",
                    figure("tool"),
                    "<= 2 ms / 6 ms",
                ],
                [
                    "  of which: decided_at -> its 'decided' event row (inside the deciding transaction)",
                    figure("in_decide"),
                    "",
                ],
                [
                    "  of which: 'decided' event row -> refund row (commit, wake, worker, tool)",
                    figure("after_decide"),
                    "",
                ],
                ["reviewer POSTs -> answer on the customer's socket", figure("visible"), "p50 <= 20 ms"],
                ["reviewer POSTs -> HTTP response", figure("http"), ""],
                ["decided_at -> run finished_at", figure("finished"), ""],
            ],
        )
        workers.print_errors()


if __name__ == "__main__":
    main()
