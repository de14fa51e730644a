"""The approval hook drives a real agent run against the approval runtime."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from anvia import Agent, create_hook
from anvia.testing import ScriptedModel, call
from approvals.hooks import approval_hook
from approvals.models import Approval
from approvals.services import ApprovalRequest, approval_decide, wait_for_decision
from tests.anvia.tools_fixtures import make_refund_tool
from tests.factories import ReviewerFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def refund_agent(model, executed):
    return Agent(name="support", instructions="Help.", model=model, tools=[make_refund_tool(executed)])


def decide_when_requested(waiters, *, approved, reason="", edited_args=None, reviewer=None):
    """A reviewer in another thread who decides the first approval as soon as a run waits on it."""
    reviewer = reviewer or ReviewerFactory()
    outcome = {}

    def review():
        try:
            outcome["approval"] = approval_decide(
                approval_id=waiters.first(timeout=10),
                reviewer=reviewer,
                approved=approved,
                reason=reason,
                edited_args=edited_args,
            )
        finally:
            connection.close()

    thread = threading.Thread(target=review)
    thread.start()
    return thread, outcome


def test_an_approved_call_runs_and_the_record_says_who_asked_and_why(alice, decision_waiters):
    executed = []
    customer = alice
    thread, _ = decide_when_requested(decision_waiters, approved=True, reason="Looks right.")
    model = ScriptedModel([call("refund_order", order_id="A-1001", amount=150), "Refunded."])
    response = (
        refund_agent(model, executed)
        .prompt("refund A-1001 $150", context={"user": "alice"})
        .request_hook(approval_hook(user=customer, conversation_id=7, agent_name="support", block_seconds=10))
        .send_sync()
    )
    thread.join(10)
    assert [e[:2] for e in executed] == [("A-1001", 150)]
    assert response.text == "Refunded."
    approval = Approval.objects.get()
    assert approval.status == "approved"
    assert approval.requested_by == customer
    assert approval.conversation_id == "7"
    assert approval.reason == "Review refund of $150 for A-1001."
    assert approval.required_by_rule is True
    assert approval.conversation_excerpt == [{"role": "user", "content": "refund A-1001 $150"}]
    assert approval.input_schema["required"] == ["order_id", "amount"]


def test_a_rejected_call_is_skipped_and_the_model_hears_the_reviewers_reason(decision_waiters):
    executed = []
    thread, _ = decide_when_requested(decision_waiters, approved=False, reason="Customer already refunded.")
    model = ScriptedModel([call("refund_order", order_id="A-1001", amount=150), "Sorry."])
    response = (
        refund_agent(model, executed)
        .prompt("refund")
        .request_hook(approval_hook(user=UserFactory(), block_seconds=10))
        .send_sync()
    )
    thread.join(10)
    assert executed == []
    assert model.requests[1].messages[-1].content == (
        "Refund was not approved. Reviewer's reason: Customer already refunded."
    )
    assert response.tool_calls[0].approved is False


def test_edited_args_run_exactly_and_the_model_is_told(decision_waiters):
    executed = []
    thread, _ = decide_when_requested(decision_waiters, approved=True, edited_args={"order_id": "A-1001", "amount": 90})
    model = ScriptedModel([call("refund_order", order_id="A-1001", amount=150), "Refunded $90."])
    response = (
        refund_agent(model, executed)
        .prompt("refund")
        .request_hook(approval_hook(user=UserFactory(), block_seconds=10))
        .send_sync()
    )
    thread.join(10)
    assert [e[:2] for e in executed] == [("A-1001", 90)]
    told = model.requests[1].messages[-1].content
    assert "A reviewer changed the arguments" in told
    assert '"amount": 90' in told
    assert response.tool_calls[0].arguments == {"order_id": "A-1001", "amount": 90.0}


def test_an_unprotected_call_runs_without_a_record():
    executed = []
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=20), "Done."])
    refund_agent(model, executed).prompt("x").request_hook(approval_hook(block_seconds=1)).send_sync()
    assert len(executed) == 1
    assert not Approval.objects.exists()


def test_past_the_block_budget_the_run_suspends_and_resumes_after_the_decision():
    executed = []
    customer = UserFactory()
    model = ScriptedModel([call("refund_order", order_id="A-1001", amount=150)])
    hook = approval_hook(user=customer, block_seconds=0.2)
    suspended = refund_agent(model, executed).prompt("refund").request_hook(hook).send_sync()
    assert suspended.suspended
    assert executed == []
    approval = Approval.objects.get()
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=True)

    resumed_model = ScriptedModel(["Refunded after review."])
    resumed = refund_agent(resumed_model, executed).resume(suspended.state.to_json()).request_hook(hook).send_sync()
    assert resumed.text == "Refunded after review."
    assert [e[:2] for e in executed] == [("A-1001", 150)]
    assert Approval.objects.count() == 1


def test_the_reference_style_hand_written_hook_works_with_the_runtime(decision_waiters):
    """The guide's hook, in Python: guard one tool by name, ask the runtime, run or skip."""
    executed = []
    customer = UserFactory()

    def create_approval_hook(*, user, conversation_id):
        def on_tool_call(call):
            if call.tool_name != "refund_order":
                return call.tool.run()
            decision = wait_for_decision(
                request=ApprovalRequest(
                    run_id=call.run_id,
                    call_id=call.call_id,
                    tool_name=call.tool_name,
                    args=call.args_json,
                    reason=f"Refund of ${call.args.amount:g}",
                    requested_by_id=user.pk,
                    conversation_id=conversation_id,
                    required_by_rule=None,
                ),
                timeout=10,
            )
            return call.tool.run() if decision.approved else call.tool.skip("Refund was not approved.")

        return create_hook(on_tool_call=on_tool_call)

    thread, _ = decide_when_requested(decision_waiters, approved=True)
    model = ScriptedModel([call("refund_order", order_id="A-7", amount=30), "Refunded."])
    refund_agent(model, executed).prompt("x").request_hook(
        create_approval_hook(user=customer, conversation_id="c-1")
    ).send_sync()
    thread.join(10)
    assert [e[:2] for e in executed] == [("A-7", 30)]
    approval = Approval.objects.get()
    assert approval.status == "approved"
    assert approval.required_by_rule is None
