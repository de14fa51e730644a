"""Every protected call of a step before reviewers at once; the run resumes once, after the last
decision; respond and terminate; a reviewer's edit told beside the result (in the app, in-process)."""

from __future__ import annotations

import threading

import pytest

from agents.models import AgentRun, Message
from agents.services import STOPPED_TEXT, run_execute
from approvals.models import Approval
from approvals.services import approval_decide
from shop.models import Refund
from tests.factories import OrderFactory, ReviewerFactory, UserFactory
from tests.support.chats import ask

pytestmark = pytest.mark.django_db(transaction=True)

TWO_REFUNDS = "refund order A-1001, $150 and order A-1002, $120"


@pytest.fixture
def queued(monkeypatch, settings):
    """What would go to Celery, recorded instead; runs suspend at once (no blocking)."""
    settings.ANVIA_APPROVAL_BLOCK_SECONDS = 0
    sent: list[str] = []
    monkeypatch.setattr("agents.services.run_enqueue", lambda *, run_id: sent.append(str(run_id)))
    return sent


@pytest.fixture
def customer():
    user = UserFactory(username="carol")
    OrderFactory(number="A-1001", customer=user, description="Espresso machine", total="249.00")
    OrderFactory(number="A-1002", customer=user, description="Grinder", total="180.00")
    return user


def suspended_with_two(customer, queued) -> tuple[AgentRun, Approval, Approval]:
    run = ask(customer, TWO_REFUNDS)
    assert run_execute(run_id=run.pk).status == "suspended"
    first, second = Approval.objects.order_by("args__order_id")
    assert (first.status, second.status) == ("pending", "pending")  # both before reviewers at once
    assert queued == [str(run.pk)]  # the post
    return run, first, second


def test_both_calls_are_pending_at_once_and_the_run_resumes_after_the_second_decision(customer, queued):
    run, first, second = suspended_with_two(customer, queued)

    approval_decide(approval_id=second.pk, reviewer=ReviewerFactory(), approved=True)
    assert queued == [str(run.pk)]  # one decided, one pending: not yet
    assert AgentRun.objects.get(pk=run.pk).status == "suspended"
    approval_decide(approval_id=first.pk, reviewer=ReviewerFactory(), approved=False, reason="Out of window.")
    assert queued == [str(run.pk), str(run.pk)]  # now, once

    finished = run_execute(run_id=run.pk)

    assert finished.status == "succeeded"
    assert [(r.order.number, r.amount) for r in Refund.objects.all()] == [("A-1002", 120)]
    answer = Message.objects.get(run=run, role="assistant").content
    assert "I refunded $120.00 for order A-1002" in answer
    assert "Out of window." in answer


@pytest.mark.parametrize("attempt", range(5))
def test_two_decisions_at_the_same_moment_resume_the_run_exactly_once(customer, queued, attempt):
    run, first, second = suspended_with_two(customer, queued)
    barrier = threading.Barrier(2)
    reviewers = [ReviewerFactory(), ReviewerFactory()]
    errors: list[BaseException] = []

    def decide(approval, reviewer):
        from django.db import connection

        try:
            barrier.wait()
            approval_decide(approval_id=approval.pk, reviewer=reviewer, approved=True)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=pair) for pair in zip([first, second], reviewers, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert queued.count(str(run.pk)) == 2  # the post, and one resume
    assert run_execute(run_id=run.pk).status == "succeeded"
    assert Refund.objects.count() == 2


def test_an_edited_amount_is_told_to_the_customer_as_a_change_not_a_failure(customer, queued):
    run = ask(customer, "refund order A-1001, $118")
    run_execute(run_id=run.pk)
    approval_decide(
        approval_id=Approval.objects.get().pk,
        reviewer=ReviewerFactory(),
        approved=True,
        edited_args={"order_id": "A-1001", "amount": 105},
    )

    assert run_execute(run_id=run.pk).status == "succeeded"

    assert Refund.objects.get().amount == 105
    answer = Message.objects.get(run=run, role="assistant").content
    assert answer.startswith("Done: I refunded $105.00 (a reviewer changed it from $118.00) for order A-1001")
    assert "didn't go through" not in answer


def test_respond_answers_the_model_in_place_of_the_tool(customer, queued):
    run = ask(customer, "refund order A-1001, $150")
    run_execute(run_id=run.pk)
    approval_decide(
        approval_id=Approval.objects.get().pk,
        reviewer=ReviewerFactory(),
        action="respond",
        response="This order was refunded by phone yesterday (RF-77).",
    )

    assert run_execute(run_id=run.pk).status == "succeeded"

    assert not Refund.objects.exists()
    assert (
        "This order was refunded by phone yesterday (RF-77)." in Message.objects.get(run=run, role="assistant").content
    )
    record = AgentRun.objects.get(pk=run.pk).state["tool_calls"][0]
    assert (record["outcome"], record["message"]) == (
        "responded",
        "This order was refunded by phone yesterday (RF-77).",
    )


def test_terminate_stops_the_run_cancels_the_other_call_and_tells_the_customer(customer, queued):
    run, first, second = suspended_with_two(customer, queued)

    approval_decide(approval_id=first.pk, reviewer=ReviewerFactory(), action="terminate", reason="Looks like fraud.")
    second.refresh_from_db()
    assert second.status == "cancelled"
    stopped = run_execute(run_id=run.pk)

    assert stopped.status == "stopped"
    assert not Refund.objects.exists()
    answer = Message.objects.get(run=run, role="assistant").content
    assert answer == STOPPED_TEXT
    assert "fraud" not in answer
    assert run_execute(run_id=run.pk) is None  # finished: nothing more runs
