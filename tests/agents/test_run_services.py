"""Agent runs, executed in the test process (the Celery worker tests are in test_worker.py)."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection

from agents.errors import MessageRefused
from agents.models import AgentRun, Message
from agents.services import (
    _question_and_history,
    conversation_create,
    conversation_post_message,
    run_execute,
    runs_recover_orphaned,
)
from approvals.models import Approval
from approvals.services import approval_decide
from shop.models import Order, Refund
from tests.factories import ReviewerFactory
from tests.support.chats import ask

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_lookup_answers_without_approval(alice, queued):
    run = ask(alice, "where is my order A-1001?")
    assert queued == [str(run.pk)]
    finished = run_execute(run_id=run.pk)
    assert finished.status == "succeeded"
    answer = Message.objects.get(run=run, role="assistant")
    assert answer.content == "Order A-1001 is delivered, total $249.00."
    assert [e.type for e in run.events.all()][-1] == "done"


def test_a_customer_never_reaches_another_customers_order(alice, bob, queued):
    run = ask(alice, "where is my order B-2001?")
    run_execute(run_id=run.pk)
    answer = Message.objects.get(run=run, role="assistant").content
    assert "B-2001 was not found among your orders" in answer
    assert "Desk" not in answer


def test_a_small_refund_runs_at_once_and_only_once_per_call(alice, queued):
    run = ask(alice, "refund order A-1001, $40")
    run_execute(run_id=run.pk)
    refund = Refund.objects.get()
    assert refund.amount == Decimal("40.00")
    assert refund.idempotency_key.startswith(f"{run.pk}:")
    assert not Approval.objects.exists()


def test_a_large_refund_waits_then_suspends_and_resumes_on_decision(alice, queued, settings):
    settings.ANVIA_APPROVAL_BLOCK_SECONDS = 0.3
    run = ask(alice, "refund order A-1001, $150")
    suspended = run_execute(run_id=run.pk)
    assert suspended.status == "suspended"
    approval = Approval.objects.get()
    assert approval.reason == "Review refund of $150.00 for A-1001."
    assert approval.requested_by == alice
    assert not Refund.objects.exists()

    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=True)
    assert queued == [str(run.pk), str(run.pk)]  # posted, then resumed by the decision
    finished = run_execute(run_id=run.pk)
    assert finished.status == "succeeded"
    assert Refund.objects.get().amount == Decimal("150.00")
    assert "Done: I refunded $150.00 for order A-1001" in Message.objects.get(run=run, role="assistant").content


def test_a_blocked_run_wakes_on_decision_without_suspending(alice, reviewer, queued, decision_waiters, settings):
    settings.ANVIA_APPROVAL_BLOCK_SECONDS = 20
    run = ask(alice, "cancel order A-1003")
    seen: dict = {}

    def review():
        try:
            approval_id = decision_waiters.first(timeout=10)
            seen["status"] = AgentRun.objects.get(pk=run.pk).status
            approval_decide(approval_id=approval_id, reviewer=reviewer, approved=False, reason="Shipped")
        finally:
            connection.close()

    thread = threading.Thread(target=review)
    thread.start()
    finished = run_execute(run_id=run.pk)
    thread.join(10)
    assert not thread.is_alive()
    assert seen["status"] == "waiting_for_approval"
    assert finished.status == "succeeded"
    assert Order.objects.get(number="A-1003").status == "placed"
    answer = Message.objects.get(run=run, role="assistant").content
    assert answer == "That didn't go through. Cancellation was not approved. Reviewer's reason: Shipped"
    assert queued == [str(run.pk)]  # the live waiter got it; no resume was queued


def test_a_run_held_by_a_live_worker_is_not_taken_twice(alice, queued):
    run = ask(alice, "where is my order A-1001?")
    AgentRun.objects.filter(pk=run.pk).update(
        status="running", lease_owner="other", lease_expires_at="2999-01-01T00:00:00Z"
    )
    assert run_execute(run_id=run.pk) is None
    assert runs_recover_orphaned() == 0


def test_an_orphaned_run_is_recovered(alice, queued):
    run = ask(alice, "where is my order A-1001?")
    AgentRun.objects.filter(pk=run.pk).update(
        status="waiting_for_approval", lease_owner="dead", lease_expires_at="2000-01-01T00:00:00Z"
    )
    assert runs_recover_orphaned() == 1
    assert run_execute(run_id=run.pk).status == "succeeded"


def test_a_model_failure_ends_the_run_with_words_the_customer_can_read(alice, queued, settings):
    settings.ANVIA_MODEL = "llama3.2"
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"
    from agents.support import support_agent

    support_agent.model.__dict__.pop("client", None)
    try:
        run = ask(alice, "hello")
        failed = run_execute(run_id=run.pk)
    finally:
        support_agent.model.__dict__.pop("client", None)
    assert failed.status == "failed"
    assert "Could not reach" in failed.error
    assert Message.objects.get(run=run, role="assistant").content.startswith("Sorry, the assistant is unavailable")


def test_empty_and_huge_messages_are_refused(alice):
    conversation = conversation_create(user=alice)
    with pytest.raises(MessageRefused, match="empty"):
        conversation_post_message(conversation=conversation, content="   ")
    with pytest.raises(MessageRefused, match="longer than 4000"):
        conversation_post_message(conversation=conversation, content="x" * 4001)


def test_a_run_suspended_on_its_second_protected_call_is_not_requeued_by_the_first(alice, queued, settings):
    """Only a decided approval of a call the run still waits on may queue it again."""
    from agents.support import support_agent
    from anvia.testing import ScriptedModel, call

    settings.ANVIA_APPROVAL_BLOCK_SECONDS = 0.2
    scripted = ScriptedModel(
        [call("refund_order", order_id="A-1001", amount=150), call("cancel_order", order_id="A-1003"), "Done."]
    )
    original, support_agent.model = support_agent.model, scripted
    try:
        run = ask(alice, "refund then cancel")
        assert run_execute(run_id=run.pk).status == "suspended"
        approval_decide(approval_id=Approval.objects.get().pk, reviewer=ReviewerFactory(), approved=True)
        assert run_execute(run_id=run.pk).status == "suspended"  # now waiting on the cancellation
        refund_approval = Approval.objects.get(tool_name="refund_order")
        assert refund_approval.executed_at is not None
        assert refund_approval.outcome["outcome"] == "ran"
        assert refund_approval.events.filter(kind="executed").count() == 1
        assert queued == [str(run.pk), str(run.pk)]  # posted, resumed once; not again on suspend
    finally:
        support_agent.model = original


def test_the_run_state_holding_a_protected_call_is_saved_before_its_approval_exists(
    alice, queued, settings, monkeypatch
):
    """A worker that dies right after the approval is created must resume knowing the call: the
    state with the model's call is durable before any reviewer can see (and decide) it."""
    import approvals.services as approval_services

    settings.ANVIA_APPROVAL_BLOCK_SECONDS = 0
    saved_when_asked = []
    real_create = approval_services._approval_create

    def create(request):
        run = AgentRun.objects.get(pk=request.run_id)
        saved_when_asked.append(
            [c["id"] for m in (run.state or {}).get("messages", []) for c in m.get("tool_calls") or []]
        )
        return real_create(request)

    monkeypatch.setattr(approval_services, "_approval_create", create)
    run = ask(alice, "refund order A-1001, $150")
    run_execute(run_id=run.pk)

    approval = Approval.objects.get()
    assert saved_when_asked == [[approval.call_id]]


def test_the_first_prompt_reads_only_the_last_messages_before_the_question(alice, queued, django_assert_num_queries):
    conversation = conversation_create(user=alice)
    for index in range(30):
        role = "user" if index % 2 == 0 else "assistant"
        Message.objects.create(conversation=conversation, role=role, content=f"m{index}")
    run = conversation_post_message(conversation=conversation, content="where is my order A-1001?")
    run = AgentRun.objects.select_related("conversation", "user").get(pk=run.pk)

    with django_assert_num_queries(1):  # however long the conversation
        asked, history = _question_and_history(run)

    assert asked.content == "where is my order A-1001?"
    assert [m.content for m in history] == [f"m{index}" for index in range(10, 30)]
    # A message saved after the question (not the usual case) is not history for it.
    Message.objects.create(conversation=conversation, role="assistant", content="later")
    asked, history = _question_and_history(run)
    assert asked.content == "where is my order A-1001?"
    assert [m.content for m in history] == [f"m{index}" for index in range(10, 30)]
