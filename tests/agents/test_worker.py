"""Agent runs executed by a real Celery worker (threads pool) through the real Redis broker.

The worker runs in a thread of the test process (``celery.contrib.testing.worker``), so it sees
the test's settings overrides; the crash tests, which need a process to kill, are in
test_worker_crash.py.
"""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal

import pytest
from celery.worker import state as worker_state

from agents.models import AgentRun, Message
from approvals.models import Approval
from approvals.services import approval_decide
from shop.models import Refund
from tests.support.chats import ask
from tests.support.waiting import approval_asked_by, run_finished, run_in_status, wait_until
from tests.support.workers import thread_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


@pytest.fixture(scope="module")
def worker(django_db_setup, redis_url):
    """One worker for the module: it touches the database only while a test runs a task, and
    every test leaves no task running (a run that still waits is suspended, holding nothing)."""
    with thread_worker(concurrency=8) as running:
        yield running


def answer(run: AgentRun) -> str:
    return Message.objects.get(run=run, role=Message.Role.ASSISTANT).content


def step_count(run: AgentRun) -> int:
    return run.events.filter(type="step").count()


def test_a_lookup_is_answered_by_the_worker(worker, alice):
    run = ask(alice, "where is my order A-1001?")
    finished = run_finished(run)
    assert finished.status == "succeeded", finished.error
    assert answer(run) == "Order A-1001 is delivered, total $249.00."
    assert finished.attempts == 1
    assert (finished.lease_owner, finished.lease_expires_at) == ("", None)
    assert not Approval.objects.exists()


def test_a_large_refund_blocks_in_the_worker_until_a_reviewer_approves(worker, alice, reviewer, settings):
    settings.ANVIA_APPROVAL_BLOCK_SECONDS = 20
    run = ask(alice, "refund order A-1001, $150")
    approval = approval_asked_by(run)
    blocked = run_in_status(run, "waiting_for_approval")
    assert blocked.lease_owner, "a blocked run is held by the worker's lease"
    assert not Refund.objects.exists()

    decided_at = time.monotonic()
    approval_decide(approval_id=approval.pk, reviewer=reviewer, approved=True)
    finished = run_finished(run)
    woke_in = time.monotonic() - decided_at

    assert finished.status == "succeeded", finished.error
    assert woke_in < 5, f"the blocked run took {woke_in:.1f} s to finish after the decision"
    assert finished.attempts == 1, "the fast path: the same task finished the run"
    assert not finished.events.filter(type="suspended").exists()
    refund = Refund.objects.get()
    assert refund.amount == Decimal("150.00")
    assert refund.idempotency_key.startswith(f"{run.pk}:")
    assert answer(run).startswith("Done: I refunded $150.00 for order A-1001")
    assert Approval.objects.get().status == "approved"
    assert finished.state["usage"]["model_calls"] == step_count(finished) == 2


def test_past_its_block_budget_a_run_suspends_and_the_decision_resumes_it(worker, alice, reviewer, settings, caplog):
    caplog.set_level(logging.INFO, logger="anvia")
    settings.ANVIA_APPROVAL_BLOCK_SECONDS = 0.5
    run = ask(alice, "refund order A-1001, $150")
    approval = approval_asked_by(run)
    suspended = run_in_status(run, "suspended")
    assert (suspended.lease_owner, suspended.lease_expires_at) == ("", None)
    # The task ended: no worker thread is held by the waiting run.
    wait_until(lambda: not worker_state.active_requests, timeout=5, message="the suspended run still holds a thread")
    assert Approval.objects.get().status == "pending"
    assert not Refund.objects.exists()

    approval_decide(approval_id=approval.pk, reviewer=reviewer, approved=True)  # enqueues the resume
    finished = run_finished(run)

    assert finished.status == "succeeded", finished.error
    assert finished.attempts == 2
    assert Refund.objects.get().amount == Decimal("150.00")
    assert answer(run).startswith("Done: I refunded $150.00 for order A-1001")
    assert Approval.objects.count() == 1
    assert finished.state["usage"]["model_calls"] == step_count(finished) == 2, "no model step ran twice"

    # Every transition is one log line naming the run (and the approval). In order within each side:
    # the worker's threads, and this thread (whose lines may interleave with the worker's).
    done = f"run succeeded run={run.pk}"
    wait_until(lambda: any(r.getMessage() == done for r in caplog.records), timeout=5, message=f"no {done!r} log")
    records = [r for r in caplog.records if r.name.startswith("anvia")]
    here = threading.main_thread().ident
    assert_logged_in_order(
        [r.getMessage() for r in records if r.thread != here],
        [
            f"run claimed run={run.pk} owner=",  # owner: the worker's name / this execution
            f"run status run={run.pk} status=waiting_for_approval ",
            f"approval requested id={approval.pk} run={run.pk} ",
            f"run suspended run={run.pk}",
            f"run claimed run={run.pk} owner=",
            f"run status run={run.pk} status=running ",
            f"run succeeded run={run.pk}",
        ],
    )
    assert_logged_in_order(
        [r.getMessage() for r in records if r.thread == here],
        [
            f"run queued run={run.pk} ",
            f"run resume queued run={run.pk} approval={approval.pk}",
            f"approval decided id={approval.pk} run={run.pk} status=approved action=approve by={reviewer.username}",
        ],
    )


def assert_logged_in_order(lines: list[str], prefixes: list[str]) -> None:
    remaining = iter(lines)
    for prefix in prefixes:
        assert any(line.startswith(prefix) for line in remaining), f"no log line {prefix!r} in order in:\n" + "\n".join(
            lines
        )


def test_runs_waiting_on_approvals_do_not_starve_new_chats(worker, alice, reviewer, settings, monkeypatch):
    # 8 worker threads; at most 4 may block on a decision, the rest suspend at once.
    settings.ANVIA_MAX_BLOCKED_RUNS = 4
    settings.ANVIA_APPROVAL_BLOCK_SECONDS = 30
    settings.ANVIA_APPROVAL_MAX_PENDING_PER_USER = 30  # one customer asks all 30
    waiting = [ask(alice, "refund order A-1001, $150") for _ in range(30)]

    def settled():
        statuses = list(AgentRun.objects.filter(pk__in=[r.pk for r in waiting]).values_list("status", flat=True))
        return (
            Approval.objects.count() == 30
            and statuses.count("waiting_for_approval") == 4
            and statuses.count("suspended") == 26
        )

    wait_until(settled, timeout=40, message="the 30 refunds did not settle to 4 blocked + 26 suspended")

    asked_at = time.monotonic()
    lookup = ask(alice, "where is my order A-1001?")
    finished = run_finished(lookup, timeout=10)
    took = time.monotonic() - asked_at
    assert finished.status == "succeeded", finished.error
    assert took < 5, f"a new chat waited {took:.1f} s behind runs waiting on approvals"
    blocked = AgentRun.objects.filter(pk__in=[r.pk for r in waiting], status="waiting_for_approval")
    assert blocked.count() == 4, "the lookup got through while 4 runs were still blocked"

    # Let the blocked ones go, so the worker can stop; the suspended ones hold nothing.
    blocked_ids = [str(pk) for pk in blocked.values_list("pk", flat=True)]
    for approval in Approval.objects.filter(run_id__in=blocked_ids):
        approval_decide(approval_id=approval.pk, reviewer=reviewer, approved=False, reason="Test over")
    for run_id in blocked_ids:
        assert run_finished(AgentRun(pk=run_id)).status == "succeeded"
    assert not Refund.objects.exists()
