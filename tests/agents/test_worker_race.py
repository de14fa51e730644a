"""Two real worker processes and one run whose model call outlasts the lease.

The model is a real chat-completions server in the test process whose first answer takes
``SLOW_MODEL_SECONDS``, longer than the workers' lease (``ANVIA_RUN_LEASE_SECONDS``). The test
plays the beat's orphan sweep (``runs_recover_orphaned``) and queues the run again and again while
it waits, as a redelivery would: the second worker gets every chance to take the run.

* A live worker's heartbeat keeps its lease through the slow call: the other worker never takes it.
* A stalled worker (SIGSTOP, so its heartbeat stops too) loses the run to the other worker; when it
  wakes up, its model reply arrives, the fence refuses its next write, and it stops without running
  the tool, saying so in its log.

Either way: one refund, one answer, the run ``succeeded``.
"""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agents.models import AgentRun, Message
from agents.services import conversation_create, conversation_post_message, run_enqueue, runs_recover_orphaned
from shop.models import Order, Refund
from tests.agents.worker_process import purge_queues, wait_until, worker_processes
from tests.anvia.chat_server import completion, tool_call
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

LEASE_SECONDS = 2
SLOW_MODEL_SECONDS = 4


class SlowModelServer:
    """Chat completions: a refund call (id ``c<n>``, as a server numbering its calls), then text
    once the tool result is in. The first request is answered after ``SLOW_MODEL_SECONDS``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = 0
        self.answered = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.received += 1
                    index = owner.received
                if index == 1:
                    time.sleep(SLOW_MODEL_SECONDS)
                answer = owner.answer(body, index)
                raw = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                with owner.lock:
                    owner.answered += 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @staticmethod
    def answer(body: dict, index: int) -> dict:
        if body["messages"][-1]["role"] == "tool":
            return completion(text="Your refund is done.")
        return completion(tool_calls=[tool_call(f"c{index}", "refund_order", {"order_id": "A-1001", "amount": 40})])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> SlowModelServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def model_server():
    with SlowModelServer() as server:
        yield server


@pytest.fixture
def two_workers(transactional_db, redis_url, tmp_path, model_server):
    purge_queues()
    env = {
        "ANVIA_MODEL": "test-model",
        "OPENAI_BASE_URL": model_server.base_url,
        "ANVIA_MODEL_TIMEOUT_SECONDS": "30",
        "ANVIA_RUN_LEASE_SECONDS": str(LEASE_SECONDS),
        "ANVIA_RUN_HEARTBEAT_SECONDS": "0.5",
        # The code before the heartbeat computed its lease as these two summed: the same 2 s there,
        # so that these tests show what it did (both workers refunded).
        "ANVIA_APPROVAL_BLOCK_SECONDS": "1",
        "ANVIA_RUN_LEASE_GRACE_SECONDS": "1",
    }
    with worker_processes(tmp_path) as make:
        first, second = make("first", env=env), make("second", env=env)
        yield first.wait_ready(), second.wait_ready()


@pytest.fixture
def alice():
    customer = UserFactory(username="alice")
    Order.objects.create(
        number="A-1001", customer=customer, description="Espresso machine", total="249.00", status="delivered"
    )
    return customer


def describe(run):
    return lambda: str(AgentRun.objects.filter(pk=run.pk).values("status", "attempts", "lease_owner", "error").first())


def holder(run, workers):
    def held_by():
        owner = AgentRun.objects.get(pk=run.pk).lease_owner
        return next((w for w in workers if owner.startswith(w.nodename)), None)

    return wait_until(held_by, timeout=15, message=f"no worker took run {run.pk}", describe=describe(run))


class Sweeper:
    """What beat and a redelivery would do while the slow call runs: every ``every`` seconds, the
    orphan sweep and one more message for the run (called from ``wait_until``'s predicate)."""

    def __init__(self, run, every: float = 0.25):
        self.run = run
        self.every = every
        self.last = 0.0

    def __call__(self) -> None:
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            runs_recover_orphaned()
            run_enqueue(run_id=self.run.pk)


def assert_refunded_once(run) -> AgentRun:
    finished = AgentRun.objects.get(pk=run.pk)
    assert finished.status == "succeeded", finished.error
    refund = Refund.objects.get()  # exactly one
    assert refund.amount == Decimal("40.00")
    assert refund.idempotency_key.startswith(f"{run.pk}:")
    assert list(Message.objects.filter(run=run, role="assistant").values_list("content", flat=True)) == [
        "Your refund is done."
    ]
    return finished


def test_a_live_workers_heartbeat_keeps_its_run_through_a_model_call_longer_than_the_lease(
    two_workers, alice, model_server
):
    run = conversation_post_message(conversation=conversation_create(user=alice), content="refund order A-1001, $40")
    wait_until(lambda: model_server.received == 1, timeout=15, message="the model was never asked")
    holder(run, two_workers)
    sweep = Sweeper(run)

    def finished():
        if model_server.answered == 0:
            sweep()
        return AgentRun.objects.get(pk=run.pk).status in AgentRun.FINISHED

    wait_until(finished, timeout=20, message="the run never finished", describe=describe(run))

    done = assert_refunded_once(run)
    assert done.attempts == 1, "nobody else ever claimed the run"
    assert model_server.received == 2, "the model was asked once per step, by one worker"
    assert done.state["usage"]["model_calls"] == 2
    logs = "".join(w.log_text() for w in two_workers)
    assert "lease lost" not in logs
    assert f"run skipped run={run.pk}" in logs, "the run was offered again while held, and refused"


def test_a_stalled_worker_loses_its_run_and_stops_before_running_the_tool(two_workers, alice, model_server):
    run = conversation_post_message(conversation=conversation_create(user=alice), content="refund order A-1001, $40")
    wait_until(lambda: model_server.received == 1, timeout=15, message="the model was never asked")
    stalled = holder(run, two_workers)
    stalled.pause()  # mid model call; its heartbeat stops with it
    try:
        other = next(w for w in two_workers if w is not stalled)
        sweep = Sweeper(run)

        def taken_over():
            sweep()
            current = AgentRun.objects.get(pk=run.pk)
            return current.status == "succeeded" and current.lease_owner == "" and current.attempts == 2

        wait_until(taken_over, timeout=20, message="the other worker never finished the run", describe=describe(run))
        wait_until(lambda: model_server.answered >= 1, timeout=10, message="the slow answer never went out")
    finally:
        stalled.resume()

    # The stalled worker wakes up, reads its (late) model reply, and is fenced off.
    wait_until(
        lambda: f"run stopped run={run.pk} attempt=1" in stalled.log_text(),
        timeout=15,
        message="the stalled worker never said it stopped",
        describe=stalled.log_tail,
    )
    assert "lease lost" in stalled.log_text()
    assert f"run claimed run={run.pk}" in other.log_text()
    done = assert_refunded_once(run)
    assert done.attempts == 2
    assert done.interrupted_attempts == 1
    assert Refund.objects.get().idempotency_key == f"{run.pk}:c2", "the refund is the new worker's call"
    assert model_server.received == 3, "the stalled call, then the new worker's two steps"
