"""Studio's run manager: protected calls wait for the Studio reviewer, failures show, chats run at once."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from agents.models import AgentRun, Conversation, Message, RunEvent
from agents.services import run_resume_after_decision, runs_recover_orphaned
from agents.support import support_agent
from anvia import Agent
from anvia.studio.runs import StudioError, studio_run_id
from anvia.studio.selectors import approvals_panel, chat_detail, chat_list
from anvia.testing import ScriptedModel, call
from approvals.models import Approval, ApprovalEvent
from approvals.selectors import approvals_pending
from tests.factories import ReviewerFactory, UserFactory
from tests.studio.conftest import (
    finished,
    make_exploding_tool,
    make_refusing_tool,
    make_void_tool,
    pending_approval,
    refund_agent,
    until,
)

pytestmark = pytest.mark.django_db(transaction=True)


def event_types(run: AgentRun) -> list[str]:
    return list(RunEvent.objects.filter(run=run).order_by("created_at", "id").values_list("type", flat=True))


def test_a_protected_call_waits_for_the_studio_reviewer_then_runs(studio, alice):
    executed = []
    model = ScriptedModel([call("refund_order", order_id="A-1001", amount=150), "Refunded."])
    runs = studio(refund_agent(model, executed))
    run = runs.chat_start(agent_name="support", user_id=alice.pk, message="refund A-1001 $150")

    approval = pending_approval(runs)
    run.refresh_from_db()
    assert run.status == AgentRun.Status.WAITING_FOR_APPROVAL
    assert executed == []
    assert approval.reason == "Review refund of $150 for A-1001."
    assert approval.requested_by == alice
    assert approval.run_id == studio_run_id(run.pk)
    assert approvals_panel()["pending"][0]["args"] == {"amount": 150.0, "order_id": "A-1001"}

    runs.decide(approval_id=approval.pk, approved=True, reason="Looks right.")

    run = finished(runs, run)
    assert run.status == AgentRun.Status.SUCCEEDED
    assert [e[:2] for e in executed] == [("A-1001", 150)]
    assert executed[0][2] == f"{studio_run_id(run.pk)}:{approval.call_id}"
    approval.refresh_from_db()
    assert approval.status == Approval.Status.APPROVED
    assert approval.decided_by.username == "studio"
    assert approval.decision_reason == "Looks right."
    assert approval.outcome == {
        "outcome": "ran",
        "result": {"order_id": "A-1001", "amount": 150.0, "refund_id": "R-1"},
        "message": None,
    }
    assert ApprovalEvent.objects.filter(approval=approval, kind=ApprovalEvent.Kind.EXECUTED).count() == 1
    assert Message.objects.get(run=run, role=Message.Role.ASSISTANT).content == "Refunded."
    assert event_types(run) == [
        "step",
        "tool_call",
        "approval_requested",
        "approval_decided",
        "tool_result",
        "step",
        "text",
        "done",
    ]
    timeline = chat_detail(conversation_id=run.conversation_id, agents=runs.agents)["runs"][0]
    requested = next(e for e in timeline["events"] if e["type"] == "approval_requested")
    assert requested["approval"]["status"] == "approved"
    assert requested["approval"]["decided_by"] == "studio"
    result = next(e for e in timeline["events"] if e["type"] == "tool_result")
    assert result["data"]["result"] == {"order_id": "A-1001", "amount": 150.0, "refund_id": "R-1"}


def test_a_rejected_call_shows_the_reject_message_the_model_received(studio, alice):
    executed = []
    model = ScriptedModel([call("refund_order", order_id="A-1001", amount=150), "Sorry, the refund was refused."])
    runs = studio(refund_agent(model, executed))
    run = runs.chat_start(agent_name="support", user_id=alice.pk, message="refund A-1001 $150")

    approval = pending_approval(runs)
    runs.decide(approval_id=approval.pk, approved=False, reason="Refunded last week already.")

    run = finished(runs, run)
    assert run.status == AgentRun.Status.SUCCEEDED
    assert executed == []
    received = "Refund was not approved. Reviewer's reason: Refunded last week already."
    assert model.requests[1].messages[-1].content == received
    timeline = chat_detail(conversation_id=run.conversation_id, agents=runs.agents)["runs"][0]
    result = next(e for e in timeline["events"] if e["type"] == "tool_result")
    assert result["data"]["outcome"] == "skipped"
    assert result["data"]["content"] == received
    decided = next(e for e in timeline["events"] if e["type"] == "approval_decided")
    assert decided["data"]["approved"] is False
    assert decided["approval"]["decision_reason"] == "Refunded last week already."
    assert timeline["events"][-2]["data"] == {"text": "Sorry, the refund was refused.", "final": True}
    approval.refresh_from_db()
    assert approval.outcome == {"outcome": "skipped", "result": None, "message": received}


def test_a_tool_that_raises_shows_its_error_and_the_next_chats_still_work(studio, alice):
    model = ScriptedModel([call("explode"), call("refuse"), "The order could not be found.", "Hello again."])
    agent = Agent(name="fragile", instructions="Try.", model=model, tools=[make_exploding_tool(), make_refusing_tool()])
    runs = studio(agent)

    broken = finished(runs, runs.chat_start(agent_name="fragile", user_id=alice.pk, message="break it"))
    assert broken.status == AgentRun.Status.FAILED
    assert broken.error == "The tool explode failed: the ledger is on fire"
    timeline = chat_detail(conversation_id=broken.conversation_id, agents=runs.agents)
    error = timeline["runs"][0]["events"][-1]
    assert error["type"] == "error"
    assert error["data"] == {"message": "The tool explode failed: the ledger is on fire", "kind": "ToolExecutionError"}
    assert chat_list(agents=runs.agents)[0]["status"] == "failed"

    # The same chat carries on, and a ToolError goes back to the model instead of failing the run.
    again = finished(runs, runs.chat_send(conversation_id=broken.conversation_id, message="try the other one"))
    assert again.status == AgentRun.Status.SUCCEEDED
    refused = next(e for e in RunEvent.objects.filter(run=again) if e.type == "tool_result")
    assert refused.data["outcome"] == "error"
    assert refused.data["content"] == "Error: no such order"

    fresh = finished(runs, runs.chat_start(agent_name="fragile", user_id=alice.pk, message="hello"))
    assert fresh.status == AgentRun.Status.SUCCEEDED
    assert Message.objects.get(run=fresh, role=Message.Role.ASSISTANT).content == "Hello again."


def test_a_model_error_shows_in_the_timeline(studio, alice):
    def unreachable(request):
        raise ConnectionError("connection refused by 127.0.0.1:9")

    runs = studio(Agent(name="remote", instructions="Hi.", model=ScriptedModel(unreachable)))
    run = finished(runs, runs.chat_start(agent_name="remote", user_id=alice.pk, message="hello"))

    assert run.status == AgentRun.Status.FAILED
    last = RunEvent.objects.filter(run=run).last()
    assert last.type == "error"
    assert last.data["kind"] == "ModelError"
    assert "connection refused by 127.0.0.1:9" in last.data["message"]


def test_two_chats_on_two_agents_wait_at_once_and_finish_in_the_order_decided(studio, alice):
    refunds, voids = [], []
    support = refund_agent(ScriptedModel([call("refund_order", order_id="A-1", amount=500), "Refunded."]), refunds)
    billing = Agent(
        name="billing",
        instructions="Bill.",
        model=ScriptedModel([call("void_invoice", invoice_id="INV-7"), "Voided."]),
        tools=[make_void_tool(voids)],
    )
    bob = UserFactory(username="bob")
    runs = studio(support, billing)
    first = runs.chat_start(agent_name="support", user_id=alice.pk, message="refund A-1 $500")
    second = runs.chat_start(agent_name="billing", user_id=bob.pk, message="void INV-7")

    refund = pending_approval(runs, tool_name="refund_order")
    void = pending_approval(runs, tool_name="void_invoice")
    assert {a["id"] for a in approvals_panel()["pending"]} == {refund.pk, void.pk}
    with pytest.raises(StudioError, match=rf"waiting for approval #{void.pk}"):
        runs.chat_send(conversation_id=second.conversation_id, message="hurry up")

    runs.decide(approval_id=void.pk, approved=True)
    assert finished(runs, second).status == AgentRun.Status.SUCCEEDED
    first.refresh_from_db()
    assert first.status == AgentRun.Status.WAITING_FOR_APPROVAL
    assert refunds == []
    assert [v[0] for v in voids] == ["INV-7"]

    runs.decide(approval_id=refund.pk, approved=True)
    assert finished(runs, first).status == AgentRun.Status.SUCCEEDED
    assert [r[:2] for r in refunds] == [("A-1", 500)]
    chats = {c["agent"]: c for c in chat_list(agents=runs.agents)}
    assert chats["support"]["user"] == "alice"
    assert chats["billing"]["user"] == "bob"
    assert {c["status"] for c in chats.values()} == {"succeeded"}


def test_studio_approvals_are_the_apps_records_and_the_app_never_resumes_studio_runs(studio, alice):
    executed = []
    model = ScriptedModel([call("refund_order", order_id="A-1001", amount=150), "Refunded."])
    runs = studio(refund_agent(model, executed))
    run = runs.chat_start(agent_name="support", user_id=alice.pk, message="refund A-1001 $150")
    approval = pending_approval(runs)

    # The reviewer queue and admin read the same rows.
    assert list(approvals_pending()) == [approval]
    assert ApprovalEvent.objects.filter(approval=approval, kind=ApprovalEvent.Kind.REQUESTED).exists()
    # The app's Celery recovery and resume never take a Studio run, whatever its state.
    assert run_resume_after_decision(approval=approval) is False
    assert runs_recover_orphaned() == 0
    run.refresh_from_db()
    assert run.lease_expires_at is None
    assert run.lease_owner.startswith("studio:")

    # A decision made outside Studio (the admin, the reviewer queue) reaches the waiting run too.
    from approvals.services import approval_decide

    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=True)
    assert finished(runs, run).status == AgentRun.Status.SUCCEEDED
    assert len(executed) == 1
    assert run_resume_after_decision(approval=Approval.objects.get(pk=approval.pk)) is False


def test_stopping_studio_suspends_a_waiting_run_and_the_next_studio_resumes_it(studio, alice):
    executed = []
    agent = refund_agent(ScriptedModel([call("refund_order", order_id="A-1", amount=150), "Refunded."]), executed)
    first_studio = studio(agent)
    run = first_studio.chat_start(agent_name="support", user_id=alice.pk, message="refund A-1 $150")
    approval = pending_approval(first_studio)

    assert first_studio.shutdown(5)
    run.refresh_from_db()
    assert run.status == AgentRun.Status.SUSPENDED
    assert event_types(run)[-1] == "suspended"
    with pytest.raises(StudioError, match="stopping"):
        first_studio.chat_start(agent_name="support", user_id=alice.pk, message="hello?")

    second_studio = studio(agent)
    assert [r.pk for r in second_studio.resume_left_runs()] == [run.pk]
    until(second_studio, lambda: AgentRun.objects.get(pk=run.pk).status == "waiting_for_approval", what="the wait")
    assert Approval.objects.count() == 1
    second_studio.decide(approval_id=approval.pk, approved=True)
    assert finished(second_studio, run).status == AgentRun.Status.SUCCEEDED
    assert len(executed) == 1
    assert "resumed" in event_types(run)


def test_runs_left_by_a_studio_that_died_are_resumed_and_live_ones_are_not(studio, alice):
    agent = Agent(name="support", instructions="Hi.", model=ScriptedModel(lambda request: "Hello."))
    conversation = Conversation.objects.create(user=alice, agent_name="support")
    orphan, live = (
        AgentRun.objects.create(
            conversation=conversation, user=alice, agent_name="support", status="running", lease_owner=owner
        )
        for owner in ("studio:999999999", "studio:1")
    )
    for run in (orphan, live):
        Message.objects.create(conversation=conversation, run=run, role="user", content="hi")

    runs = studio(agent)
    assert [r.pk for r in runs.resume_left_runs()] == [orphan.pk]
    assert finished(runs, orphan).status == AgentRun.Status.SUCCEEDED
    live.refresh_from_db()
    assert live.status == AgentRun.Status.RUNNING


def test_the_support_agent_refunds_alices_order_once_the_studio_reviewer_approves(studio):
    call_command("seed_demo", stdout=io.StringIO())
    alice = UserFactory(username="alice")
    runs = studio(support_agent)
    run = runs.chat_start(agent_name="support", user_id=alice.pk, message="refund order A-1001, $150")

    approval = pending_approval(runs)
    assert approval.reason == "Review refund of $150.00 for A-1001."
    runs.decide(approval_id=approval.pk, approved=True)

    assert finished(runs, run).status == AgentRun.Status.SUCCEEDED
    answer = Message.objects.get(run=run, role=Message.Role.ASSISTANT).content
    assert answer.startswith("Done: I refunded $150.00 for order A-1001")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"agent_name": "nobody"}, "No agent named 'nobody' in this Studio; there are: support."),
        ({"message": "   "}, "Type a message first."),
        ({"message": "x" * 4001}, "The message is longer than 4000 characters."),
        ({"user_id": -1}, "Choose a user to act as"),
    ],
)
def test_a_chat_that_cannot_start_says_why(studio, alice, fields, message):
    runs = studio(refund_agent(ScriptedModel(["Hi."]), []))
    arguments = {"agent_name": "support", "user_id": alice.pk, "message": "hi", **fields}
    with pytest.raises(StudioError, match=message.replace("(", r"\(").replace(")", r"\)")):
        runs.chat_start(**arguments)
    assert not AgentRun.objects.exists()


def test_the_studio_reviewer_cannot_be_acted_as_and_a_decided_approval_says_by_whom(studio, alice):
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=150), "Refunded."])
    runs = studio(refund_agent(model, []))
    reviewer = runs.reviewer()
    with pytest.raises(StudioError, match="Choose a user to act as"):
        runs.chat_start(agent_name="support", user_id=reviewer.pk, message="hi")

    run = runs.chat_start(agent_name="support", user_id=alice.pk, message="refund A-1 $150")
    approval = pending_approval(runs)
    runs.decide(approval_id=approval.pk, approved=False)
    with pytest.raises(StudioError, match=rf"Approval #{approval.pk} was already rejected by studio") as refused:
        runs.decide(approval_id=approval.pk, approved=True)
    assert refused.value.status == 409
    finished(runs, run)
