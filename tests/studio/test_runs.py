"""Studio's runs on the in-memory store: protected calls wait for a decision, failures show,
chats run side by side, stopping cancels what still waits."""

from __future__ import annotations

import pytest

from anvia import Agent
from anvia.studio.runs import StudioError
from anvia.testing import ScriptedModel, call
from tests.studio.conftest import (
    ALICE,
    BOB,
    event_types,
    finished,
    make_exploding_tool,
    make_refusing_tool,
    make_void_tool,
    pending_approval,
    previewed_refund_agent,
    refund_agent,
    until,
)


def test_a_protected_call_waits_for_a_decision_then_runs_with_the_acting_user(studio_runs, store):
    executed = []
    model = ScriptedModel([call("refund_order", order_id="A-1001", amount=150), "Refunded."])
    runs = studio_runs(refund_agent(model, executed))
    chat = runs.chat_start(agent_name="support", user_id=ALICE.id, message="refund A-1001 $150")

    approval = pending_approval(runs)
    assert runs.chat_detail(chat.id)["status"] == "waiting_for_approval"
    assert executed == []
    assert (approval.reason, approval.requested_by) == ("Review refund of $150 for A-1001.", "alice")
    assert runs.approvals_panel()["pending"][0]["args"] == {"order_id": "A-1001", "amount": 150.0}
    assert runs.approvals_panel()["pending"][0]["chat_id"] == chat.id

    runs.decide(approval_id=approval.id, approved=True, reason="Looks right.")

    detail = finished(runs, chat.id)
    run = detail["runs"][0]
    assert (detail["status"], detail["user"], run["answer"]) == ("succeeded", "alice", "Refunded.")
    assert [e[:2] for e in executed] == [("A-1001", 150)]
    assert executed[0][2] == f"{run['id']}:{approval.call_id}"
    assert model.requests[0].messages[-1].content == "refund A-1001 $150"
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
    requested = next(e for e in run["events"] if e["type"] == "approval_requested")
    assert (requested["approval"]["status"], requested["approval"]["decided_by"]) == ("approved", "studio")
    assert store.outcome(approval.id) == {
        "outcome": "ran",
        "result": {"order_id": "A-1001", "amount": 150.0, "refund_id": "R-1"},
        "message": None,
    }
    assert runs.approvals_panel() == {"pending": [], "recent": [runs.approval_summary(store.get(approval.id))]}


def test_the_acting_user_is_the_runs_user_id_and_a_second_message_carries_the_history(studio_runs):
    voided = []
    model = ScriptedModel([call("void_invoice", invoice_id="INV-7"), "Voided.", "You asked me to void INV-7."])
    runs = studio_runs(Agent(name="billing", instructions="Bill.", model=model, tools=[make_void_tool(voided)]))
    chat = runs.chat_start(agent_name="billing", user_id=str(BOB.id), message="void INV-7")
    runs.decide(approval_id=pending_approval(runs).id, approved=True)
    finished(runs, chat.id)
    assert voided == [("INV-7", BOB.id)]

    runs.chat_send(chat_id=chat.id, message="what did I ask?")
    assert finished(runs, chat.id)["runs"][1]["answer"] == "You asked me to void INV-7."
    assert [(m.role, m.content) for m in model.requests[2].messages] == [
        ("user", "void INV-7"),
        ("assistant", "Voided."),
        ("user", "what did I ask?"),
    ]


def test_a_rejected_call_shows_the_message_the_model_received(studio_runs):
    executed = []
    model = ScriptedModel([call("refund_order", order_id="A-1001", amount=150), "Sorry, the refund was refused."])
    runs = studio_runs(refund_agent(model, executed))
    chat = runs.chat_start(agent_name="support", user_id=ALICE.id, message="refund A-1001 $150")

    runs.decide(approval_id=pending_approval(runs).id, approved=False, reason="Refunded last week already.")

    run = finished(runs, chat.id)["runs"][0]
    assert executed == []
    received = "Refund was not approved. Reviewer's reason: Refunded last week already."
    assert model.requests[1].messages[-1].content == received
    result = next(e for e in run["events"] if e["type"] == "tool_result")
    assert (result["data"]["outcome"], result["data"]["content"]) == ("skipped", received)
    decided = next(e for e in run["events"] if e["type"] == "approval_decided")
    assert decided["data"]["approved"] is False
    assert decided["approval"]["decision_reason"] == "Refunded last week already."
    assert run["answer"] == "Sorry, the refund was refused."


def test_a_tool_that_raises_shows_its_error_and_the_next_chats_still_work(studio_runs):
    model = ScriptedModel([call("explode"), call("refuse"), "The order could not be found.", "Hello again."])
    agent = Agent(name="fragile", instructions="Try.", model=model, tools=[make_exploding_tool(), make_refusing_tool()])
    runs = studio_runs(agent)

    broken = finished(runs, runs.chat_start(agent_name="fragile", user_id=ALICE.id, message="break it").id)
    assert broken["status"] == "failed"
    assert broken["runs"][0]["error"] == "The tool explode failed: the ledger is on fire"
    error = broken["runs"][0]["events"][-1]
    assert error["type"] == "error"
    assert error["data"] == {"message": "The tool explode failed: the ledger is on fire", "kind": "ToolExecutionError"}
    assert runs.chat_list()[0]["status"] == "failed"

    # The same chat carries on, and a ToolError goes back to the model instead of failing the run.
    runs.chat_send(chat_id=broken["id"], message="try the other one")
    again = finished(runs, broken["id"])["runs"][1]
    assert again["status"] == "succeeded"
    refused = next(e for e in again["events"] if e["type"] == "tool_result")
    assert (refused["data"]["outcome"], refused["data"]["content"]) == ("error", "Error: no such order")

    fresh = finished(runs, runs.chat_start(agent_name="fragile", user_id=ALICE.id, message="hello").id)
    assert fresh["runs"][0]["answer"] == "Hello again."


def test_a_model_error_shows_in_the_timeline(studio_runs):
    def unreachable(request):
        raise ConnectionError("connection refused by 127.0.0.1:9")

    runs = studio_runs(Agent(name="remote", instructions="Hi.", model=ScriptedModel(unreachable)))
    run = finished(runs, runs.chat_start(agent_name="remote", user_id=ALICE.id, message="hello").id)["runs"][0]

    assert run["status"] == "failed"
    assert run["events"][-1]["type"] == "error"
    assert run["events"][-1]["data"]["kind"] == "ModelError"
    assert "connection refused by 127.0.0.1:9" in run["events"][-1]["data"]["message"]


def test_a_store_that_fails_shows_in_the_timeline_and_studio_keeps_serving(studio_runs, store):
    def broken_request(request):
        raise OSError("the approvals database is gone")

    runs = studio_runs(refund_agent(ScriptedModel([call("refund_order", order_id="A-1", amount=500), "Hi."]), []))
    store.request = broken_request
    run = finished(runs, runs.chat_start(agent_name="support", user_id=ALICE.id, message="refund").id)["runs"][0]
    assert run["status"] == "failed"
    assert run["events"][-1]["data"]["kind"] == "AgentRunError"
    assert "the approvals database is gone" in run["error"]


def test_two_chats_on_two_agents_wait_at_once_and_finish_in_the_order_decided(studio_runs):
    refunds, voids = [], []
    support = refund_agent(ScriptedModel([call("refund_order", order_id="A-1", amount=500), "Refunded."]), refunds)
    billing = Agent(
        name="billing",
        instructions="Bill.",
        model=ScriptedModel([call("void_invoice", invoice_id="INV-7"), "Voided."]),
        tools=[make_void_tool(voids)],
    )
    runs = studio_runs(support, billing)
    first = runs.chat_start(agent_name="support", user_id=ALICE.id, message="refund A-1 $500")
    second = runs.chat_start(agent_name="billing", user_id=BOB.id, message="void INV-7")

    refund = pending_approval(runs, tool_name="refund_order")
    void = pending_approval(runs, tool_name="void_invoice")
    assert {a["id"] for a in runs.approvals_panel()["pending"]} == {refund.id, void.id}
    with pytest.raises(StudioError, match=rf"waiting for approval #{void.id}") as busy:
        runs.chat_send(chat_id=second.id, message="hurry up")
    assert busy.value.status == 409

    runs.decide(approval_id=void.id, approved=True)
    assert finished(runs, second.id)["status"] == "succeeded"
    assert runs.chat_detail(first.id)["status"] == "waiting_for_approval"
    assert refunds == []

    runs.decide(approval_id=refund.id, approved=True)
    assert finished(runs, first.id)["status"] == "succeeded"
    assert [r[:2] for r in refunds] == [("A-1", 500)]
    chats = {c["agent"]: c for c in runs.chat_list()}
    assert (chats["support"]["user"], chats["billing"]["user"]) == ("alice", "bob")
    with pytest.raises(StudioError, match=rf"Approval #{refund.id} was already approved by studio") as again:
        runs.decide(approval_id=refund.id, approved=False)
    assert again.value.status == 409


def test_stopping_cancels_the_request_a_run_still_waits_on(studio_runs, store):
    executed = []
    runs = studio_runs(refund_agent(ScriptedModel([call("refund_order", order_id="A-1", amount=150)]), executed))
    chat = runs.chat_start(agent_name="support", user_id=ALICE.id, message="refund A-1 $150")
    approval = pending_approval(runs)

    assert runs.shutdown(5)
    run = runs.chat_detail(chat.id)["runs"][0]
    assert (run["status"], event_types(run)[-1]) == ("stopped", "suspended")
    assert store.get(approval.id).status == "cancelled"
    assert store.get(approval.id).decision_reason == "Studio stopped before anyone decided."
    assert executed == []
    with pytest.raises(StudioError, match="stopping"):
        runs.chat_start(agent_name="support", user_id=ALICE.id, message="hello?")


def test_a_decision_made_elsewhere_reaches_the_waiting_run(studio_runs, store):
    executed = []
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=150), "Refunded."])
    runs = studio_runs(refund_agent(model, executed))
    chat = runs.chat_start(agent_name="support", user_id=ALICE.id, message="refund A-1 $150")
    store.decide(pending_approval(runs).id, approved=True)  # not through Studio
    assert finished(runs, chat.id)["status"] == "succeeded"
    assert len(executed) == 1


@pytest.mark.parametrize(
    ("fields", "message", "field"),
    [
        ({"agent_name": "nobody"}, "No agent named 'nobody' in this Studio; there are: support.", "agent"),
        ({"message": "   "}, "Type a message first.", "message"),
        ({"message": "x" * 4001}, "The message is longer than 4000 characters.", "message"),
        ({"user_id": 99}, "Choose a user to act as, from the list the page offers.", "user_id"),
        ({"user_id": None}, "Choose a user to act as, from the list the page offers.", "user_id"),
    ],
)
def test_a_chat_that_cannot_start_says_why(studio_runs, fields, message, field):
    runs = studio_runs(refund_agent(ScriptedModel(["Hi."]), []))
    arguments = {"agent_name": "support", "user_id": ALICE.id, "message": "hi", **fields}
    with pytest.raises(StudioError) as refused:
        runs.chat_start(**arguments)
    assert (str(refused.value), refused.value.field, refused.value.status) == (message, field, 400)
    assert runs.chat_list() == []


def test_a_store_without_users_chats_as_nobody(studio_runs):
    from anvia.studio import MemoryStore

    runs = studio_runs(Agent(name="plain", instructions="Hi.", model=ScriptedModel(["Hello."])), on=MemoryStore())
    chat = finished(runs, runs.chat_start(agent_name="plain", user_id=None, message="hi").id)
    assert (chat["user"], chat["runs"][0]["answer"]) == (None, "Hello.")
    until(runs, lambda: runs.open_runs() == 0, what="the run thread to end")


def two_refunds(studio_runs, store, executed: list, answer: str = "Handled."):
    """A chat whose model asks for two protected refunds in one step; both pending, nothing run."""
    model = ScriptedModel(
        [[call("refund_order", order_id="A-1", amount=150), call("refund_order", order_id="A-2", amount=120)], answer]
    )
    runs = studio_runs(previewed_refund_agent(model, executed))
    chat = runs.chat_start(agent_name="support", user_id=ALICE.id, message="refund A-1 $150 and A-2 $120")
    both = until(runs, lambda: len(store.pending()) == 2 and store.pending(), what="both refunds pending at once")
    assert runs.chat_detail(chat.id)["status"] == "waiting_for_approval"
    assert executed == []
    return runs, model, chat, both


def test_a_steps_calls_are_pending_together_with_their_previews_and_decided_one_by_one(studio_runs, store):
    executed = []
    runs, model, chat, (first, second) = two_refunds(studio_runs, store, executed)
    assert [(r.args["order_id"], r.preview["warnings"]) for r in (first, second)] == [
        ("A-1", ["Only $80.00 is left to refund on A-1."]),
        ("A-2", ["Only $80.00 is left to refund on A-2."]),
    ]
    assert runs.approvals_panel()["pending"][0]["preview"] == {
        "warnings": ["Only $80.00 is left to refund on A-1."],
        "facts": [
            {"name": "order", "value": "A-1"},
            {"name": "left_to_refund", "value": "$80.00"},
            {"name": "belongs_to_requester", "value": True},
        ],
    }

    # The second is decided first: still nothing runs until the first has its decision too.
    runs.decide(approval_id=second.id, action="respond", response="A-2 was refunded by phone (RF-77).")
    assert runs.chat_detail(chat.id)["status"] == "waiting_for_approval"
    assert executed == []
    runs.decide(approval_id=first.id, action="approve")

    run = finished(runs, chat.id)["runs"][0]
    assert (run["status"], run["answer"]) == ("succeeded", "Handled.")
    assert [e[:2] for e in executed] == [("A-1", 150)]
    tool_results = [m for m in model.requests[1].messages if m.role == "tool"]
    assert [m.content for m in tool_results][1] == "A-2 was refunded by phone (RF-77)."
    decided = [e for e in run["events"] if e["type"] == "approval_decided"]
    assert [(e["data"]["action"], e["approval"]["action"]) for e in decided] == [
        ("approve", "approve"),
        ("respond", "respond"),
    ]
    assert decided[1]["approval"]["response"] == "A-2 was refunded by phone (RF-77)."
    responded = [e["data"]["outcome"] for e in run["events"] if e["type"] == "tool_result"]
    assert responded == ["ran", "responded"]
    assert store.outcome(second.id)["outcome"] == "responded"


def test_terminate_stops_the_run_cancels_the_other_call_and_runs_nothing(studio_runs, store):
    executed = []
    runs, model, chat, (first, second) = two_refunds(studio_runs, store, executed)

    runs.decide(approval_id=second.id, action="terminate", reason="This account is under review.")

    detail = finished(runs, chat.id)
    run = detail["runs"][0]
    assert (detail["status"], run["status"], run["answer"]) == ("stopped", "stopped", None)
    assert run["error"] == "This account is under review."
    assert executed == []
    assert len(model.requests) == 1  # the model is not asked again
    cancelled = store.get(first.id)
    assert (cancelled.status, cancelled.decision_reason) == (
        "cancelled",
        f"studio stopped the whole run (approval #{second.id}).",
    )
    assert event_types(run)[-1] == "terminated"
    assert run["events"][-1]["data"]["message"] == "This account is under review."
    assert runs.approvals_panel()["pending"] == []

    # A stop without a reason still says who stopped it; the chat takes the next message.
    runs.chat_send(chat_id=chat.id, message="and now?")
    assert finished(runs, chat.id)["runs"][1]["status"] == "succeeded"


def test_a_stop_without_a_reason_says_who_stopped_the_run(studio_runs, store):
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=150)])
    runs = studio_runs(refund_agent(model, []))
    chat = runs.chat_start(agent_name="support", user_id=ALICE.id, message="refund A-1 $150")
    runs.decide(approval_id=pending_approval(runs).id, action="terminate")
    assert finished(runs, chat.id)["runs"][0]["error"] == "studio stopped this run."


@pytest.mark.parametrize(
    ("decision", "message", "field"),
    [
        ({"action": "respond", "response": " "}, "Write what the model should receive instead", "response"),
        ({"action": "shrug"}, "'shrug' is not an action", "action"),
        ({}, "Say what to do", "action"),
        ({"action": "respond", "response": "x" * 10001}, "The response is longer than 10000 characters.", "response"),
    ],
)
def test_a_decision_that_says_nothing_names_the_field(studio_runs, store, decision, message, field):
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=150), "Refunded."])
    runs = studio_runs(refund_agent(model, []))
    runs.chat_start(agent_name="support", user_id=ALICE.id, message="refund A-1 $150")
    approval = pending_approval(runs)
    with pytest.raises(StudioError, match=message) as refused:
        runs.decide(approval_id=approval.id, **decision)
    assert (refused.value.field, refused.value.status) == (field, 400)
    assert store.get(approval.id).pending
    runs.decide(approval_id=approval.id, approved=False)
