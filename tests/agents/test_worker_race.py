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

import threading
import time
from decimal import Decimal

import pytest

from agents.models import AgentRun, Message
from agents.services import run_enqueue, runs_recover_orphaned
from shop.models import Refund
from tests.support.chat_server import ChatServer, completion, tool_call
from tests.support.chats import ask
from tests.support.waiting import runs_and_approvals, wait_until
from tests.support.workers import purge_queues, worker_processes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

LEASE_SECONDS = 2
SLOW_MODEL_SECONDS = 4


class SlowModelServer(ChatServer):
    """Chat completions: a refund call (id ``c<n>``, as a server numbering its calls), then text
    once the tool result is in. The first request is answered after ``SLOW_MODEL_SECONDS``."""

    def __init__(self) -> None:
        super().__init__()
        self.received = 0
        self.answered = 0
        self._counts = threading.Lock()
        self.answer_with(self.play)

    def play(self, body: dict) -> dict:
        with self._counts:
            self.received += 1
            index = self.received
        if index == 1:
            time.sleep(SLOW_MODEL_SECONDS)  # the slow model call this module is about, not a wait
        if body["messages"][-1]["role"] == "tool":
            answer = completion(text="Your refund is done.")
        else:
            answer = completion(
                tool_calls=[tool_call(f"c{index}", "refund_order", {"order_id": "A-1001", "amount": 40})]
            )
        with self._counts:
            self.answered += 1
        return answer


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


def holder(run, workers):
    def held_by():
        owner = AgentRun.objects.get(pk=run.pk).lease_owner
        return next((w for w in workers if owner.startswith(w.nodename)), None)

    return wait_until(held_by, timeout=15, message=f"no worker took run {run.pk}", describe=runs_and_approvals(run))


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
    run = ask(alice, "refund order A-1001, $40")
    wait_until(lambda: model_server.received == 1, timeout=15, message="the model was never asked")
    holder(run, two_workers)
    sweep = Sweeper(run)

    def finished():
        if model_server.answered == 0:
            sweep()
        return AgentRun.objects.get(pk=run.pk).status in AgentRun.FINISHED

    wait_until(finished, timeout=20, message="the run never finished", describe=runs_and_approvals(run))

    done = assert_refunded_once(run)
    assert done.attempts == 1, "nobody else ever claimed the run"
    assert model_server.received == 2, "the model was asked once per step, by one worker"
    assert done.state["usage"]["model_calls"] == 2
    logs = "".join(w.log_text() for w in two_workers)
    assert "lease lost" not in logs
    assert f"run skipped run={run.pk}" in logs, "the run was offered again while held, and refused"


def test_a_stalled_worker_loses_its_run_and_stops_before_running_the_tool(two_workers, alice, model_server):
    run = ask(alice, "refund order A-1001, $40")
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

        wait_until(
            taken_over, timeout=20, message="the other worker never finished the run", describe=runs_and_approvals(run)
        )
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
