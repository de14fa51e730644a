"""A worker process killed (SIGKILL) while a run waits for an approval: nothing is lost or done twice.

The task is acknowledged late, but Redis would redeliver it only after ``visibility_timeout``
(an hour): these tests never count on that. Recovery is the run's lease running out (a live
worker renews it every ``ANVIA_RUN_HEARTBEAT_SECONDS``; a dead one stops), then the beat's orphan
sweep, the decision (which queues the resume once the lease is gone) or a worker starting up
(``worker_ready`` queues every orphaned run). The resumed run continues from its saved state.

* With the default settings and beat running, a dead worker's run is resumed by a live worker
  within 15 s of the kill, while that live worker's own blocked run (a busy worker) keeps its lease.
  The measured recovery time is printed (``make test ARGS="tests/agents/test_worker_crash.py -s"``).
* With no beat: one run is approved while no worker is alive, the other is taken over by the next
  worker to start and approved while it blocks there (a short lease keeps that test fast).
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.utils import timezone

from agents.models import AgentRun, Message
from approvals.models import Approval
from approvals.services import approval_decide
from shop.models import Refund
from tests.factories import ReviewerFactory
from tests.support.chats import ask
from tests.support.waiting import approval_asked_by, run_finished, run_in_status, run_where, wait_until
from tests.support.workers import purge_queues, worker_processes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

DOOMED_WORKER_ENV = {"ANVIA_RUN_LEASE_SECONDS": "2", "ANVIA_RUN_HEARTBEAT_SECONDS": "0.5"}
RECOVERY_TARGET_SECONDS = 15
# The default lease (README "Configuration"), for "a busy worker keeps its run".
DEFAULT_LEASE_SECONDS = 10
# What an uninterrupted "$150 refund" run does: one model step asks for the refund, one answers.
MODEL_STEPS = 2


@pytest.fixture
def workers(transactional_db, redis_url, tmp_path):
    purge_queues()
    with worker_processes(tmp_path) as make:
        yield make


@pytest.fixture
def enqueued(monkeypatch):
    """Every run this process queues (the message still goes to the broker)."""
    import agents.services

    queued = []
    real = agents.services.run_enqueue

    def spy(*, run_id):
        queued.append(str(run_id))
        real(run_id=run_id)

    monkeypatch.setattr(agents.services, "run_enqueue", spy)
    return queued


def ask_refund(alice, order: str) -> AgentRun:
    return ask(alice, f"refund order {order}, $150")


def wait_until_blocked(worker, run) -> tuple[AgentRun, Approval]:
    """Wait until ``worker`` is blocked on the run's approval."""
    approval = approval_asked_by(run, timeout=20)
    blocked = run_in_status(run, "waiting_for_approval", timeout=10)
    assert blocked.lease_owner.startswith(worker.nodename), blocked.lease_owner
    assert blocked.attempts == 1
    return blocked, approval


def assert_finished_once(run, order: str) -> None:
    finished = AgentRun.objects.get(pk=run.pk)
    assert finished.status == "succeeded", finished.error
    assert (finished.lease_owner, finished.lease_expires_at) == ("", None)
    refunds = Refund.objects.filter(order__number=order)
    assert refunds.count() == 1, f"the refund of {order} ran exactly once"
    refund = refunds.get()
    assert refund.amount == Decimal("150.00")
    assert refund.idempotency_key.startswith(f"{run.pk}:")
    approvals = Approval.objects.filter(run_id=str(run.pk))
    assert approvals.count() == 1, "the resumed run reused its approval; no second request"
    assert approvals.get().status == "approved"
    answers = Message.objects.filter(run=run, role=Message.Role.ASSISTANT)
    assert [m.content for m in answers] == [f"Done: I refunded $150.00 for order {order} (refund RF-{refund.pk})."]
    # No model step that already happened was repeated.
    assert finished.state["usage"]["model_calls"] == MODEL_STEPS
    assert finished.events.filter(type="step").count() == MODEL_STEPS


def test_runs_blocked_in_a_killed_worker_resume_from_their_saved_state(workers, alice, enqueued):
    doomed = workers("doomed", env=DOOMED_WORKER_ENV).wait_ready()
    # Both at once, so both are still blocked (not yet suspended) when the worker dies.
    first, second = ask_refund(alice, "A-1001"), ask_refund(alice, "A-1004")
    first, first_approval = wait_until_blocked(doomed, first)
    second, second_approval = wait_until_blocked(doomed, second)

    doomed.kill()
    assert not doomed.alive
    for run in (first, second):
        run_where(
            run, lambda r: r.lease_expires_at < timezone.now(), "the dead worker's lease never ran out", timeout=10
        )
        still = AgentRun.objects.get(pk=run.pk)
        assert (still.status, still.attempts) == ("waiting_for_approval", 1), "nobody touched the orphaned run"
    assert not Refund.objects.exists()

    # 1. No worker is alive and the lease ran out: the decision itself queues the resume.
    enqueued.clear()
    approval_decide(approval_id=first_approval.pk, reviewer=ReviewerFactory(), approved=True)
    assert enqueued == [str(first.pk)]

    # 2. worker_ready queues the orphaned runs: the new worker takes the second one and blocks on
    # the same approval (and finishes the first, whose resume was waiting in the queue).
    replacement = workers("replacement").wait_ready()
    retaken = run_where(
        second,
        lambda r: r.status == "waiting_for_approval" and r.lease_owner.startswith(replacement.nodename),
        "was not taken over by the new worker",
        timeout=20,
    )
    assert retaken.attempts == 2
    run_finished(first, timeout=20)
    assert_finished_once(first, "A-1001")

    enqueued.clear()
    approval_decide(approval_id=second_approval.pk, reviewer=ReviewerFactory(), approved=True)
    assert enqueued == [], "a live worker holds the run: the decision wakes it, no resume is queued"
    finished = run_finished(second, timeout=15)
    assert finished.attempts == 2
    assert_finished_once(second, "A-1004")
    assert Refund.objects.count() == 2


def test_a_dead_workers_run_resumes_within_15_s_and_a_busy_workers_run_is_never_taken(workers, alice):
    """Default settings. The doomed worker has one thread, so the second run goes to the survivor
    and blocks there: a live worker, busy, whose run must keep its lease throughout."""
    doomed = workers("doomed", concurrency=1)
    workers("beat", beat=True)
    doomed.wait_ready()
    orphan = ask_refund(alice, "A-1001")
    survivor = workers("survivor")
    orphan, orphan_approval = wait_until_blocked(doomed, orphan)
    survivor.wait_ready()
    busy = ask_refund(alice, "A-1004")
    busy, busy_approval = wait_until_blocked(survivor, busy)

    doomed.kill()
    killed_at = time.monotonic()
    assert not doomed.alive
    run_where(
        orphan,
        lambda r: r.status == "waiting_for_approval" and r.lease_owner.startswith(survivor.nodename),
        "was not resumed by the live worker",
        timeout=RECOVERY_TARGET_SECONDS + 10,
    )
    recovered_in = time.monotonic() - killed_at
    print(f"\nrecovery after SIGKILL: {recovered_in:.1f} s (lease, heartbeat and sweep at their defaults)")  # noqa: T201
    assert recovered_in < RECOVERY_TARGET_SECONDS, f"the dead worker's run waited {recovered_in:.1f} s"
    recovered = AgentRun.objects.get(pk=orphan.pk)
    assert (recovered.attempts, recovered.interrupted_attempts) == (2, 1)

    # The busy worker's run stays its own for longer than a lease, renewed by the heartbeat.
    def held_past_a_lease():
        current = AgentRun.objects.get(pk=busy.pk)
        assert (current.attempts, current.lease_owner) == (1, busy.lease_owner), "a live worker's run was taken"
        return time.monotonic() - killed_at > DEFAULT_LEASE_SECONDS + 2

    wait_until(held_past_a_lease, timeout=DEFAULT_LEASE_SECONDS + 5, message="the busy run changed hands")

    reviewer = ReviewerFactory()
    approval_decide(approval_id=orphan_approval.pk, reviewer=reviewer, approved=True)
    approval_decide(approval_id=busy_approval.pk, reviewer=reviewer, approved=True)
    for run, order in ((orphan, "A-1001"), (busy, "A-1004")):
        run_finished(run, timeout=15)
        assert_finished_once(run, order)
    assert AgentRun.objects.get(pk=busy.pk).attempts == 1
    assert AgentRun.objects.get(pk=orphan.pk).attempts == 2
    assert Refund.objects.count() == 2
