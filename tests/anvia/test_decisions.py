"""Decisions that fit real calls: every protected call of a step is put to the hooks at once and
decided on its own; the step goes on only when each has a verdict; run, skip, respond, terminate;
a reviewer's note reaches the model beside the tool's result, never inside it."""

from __future__ import annotations

import json

from anvia import Agent, OfflineModel, create_hook
from anvia.core.state import RunState
from anvia.testing import ScriptedModel, call
from tests.anvia.tools_fixtures import make_refund_tool

THREE_REFUNDS = [
    call("refund_order", order_id="A-1", amount=150, id="c1"),
    call("refund_order", order_id="A-2", amount=20, id="c2"),  # under the rule: runs at once
    call("refund_order", order_id="A-3", amount=300, id="c3"),
    call("refund_order", order_id="A-4", amount=400, id="c4"),
]


def agent_with(model, executed, **kwargs) -> Agent:
    return Agent(name="support", instructions="Help.", model=model, tools=[make_refund_tool(executed)], **kwargs)


def deciding(verdicts, log):
    """A hook that records what it is told and answers each call from ``verdicts`` by call id."""

    def announced(calls):
        log.append(("announced", [c.call_id for c in calls]))

    def on_tool_call(call):
        if not call.requires_approval:
            return None
        log.append(("asked", call.call_id))
        return verdicts[call.call_id](call)

    return create_hook(on_tool_call=on_tool_call, on_approvals_requested=announced)


def test_every_protected_call_of_a_step_is_announced_at_once_and_each_decided_on_its_own():
    executed, log = [], []
    model = ScriptedModel([THREE_REFUNDS, "Done."])
    verdicts = {
        "c1": lambda c: c.tool.run(),
        "c3": lambda c: c.tool.skip("Over the limit."),
        "c4": lambda c: c.tool.respond("The refund was already made by phone: RF-77."),
    }

    response = agent_with(model, executed).prompt("refund all").request_hook(deciding(verdicts, log)).send_sync()

    # The unprotected call ran first; the protected ones were announced together, then asked.
    assert log == [("announced", ["c1", "c3", "c4"]), ("asked", "c1"), ("asked", "c3"), ("asked", "c4")]
    assert [e[:2] for e in executed] == [("A-2", 20), ("A-1", 150)]
    outcomes = {r.call_id: (r.outcome, r.approved) for r in response.tool_calls}
    assert outcomes == {
        "c1": ("ran", True),
        "c2": ("ran", None),
        "c3": ("skipped", False),
        "c4": ("responded", False),
    }
    results = {m.tool_call_id: m.content for m in model.requests[1].messages if m.role == "tool"}
    assert results["c3"] == "Over the limit."
    assert results["c4"] == "The refund was already made by phone: RF-77."
    assert response.text == "Done."


def test_one_suspend_holds_the_whole_step_and_the_resume_asks_only_what_is_left():
    executed, log = [], []
    model = ScriptedModel([THREE_REFUNDS[:1] + THREE_REFUNDS[2:3], "Done."])
    first = {"c1": lambda c: c.tool.run(), "c3": lambda c: c.tool.suspend()}

    suspended = agent_with(model, executed).prompt("refund").request_hook(deciding(first, log)).send_sync()

    assert suspended.suspended
    assert executed == []  # c1 was approved, but nothing of the step runs before c3 is decided
    state = RunState.from_json(suspended.state.to_json())
    assert [c.id for c in state.pending_calls()] == ["c1", "c3"]

    second = {"c1": lambda c: c.tool.run(), "c3": lambda c: c.tool.run()}
    resumed = agent_with(model, executed).resume(state).request_hook(deciding(second, log)).send_sync()

    assert resumed.text == "Done."
    assert [e[:2] for e in executed] == [("A-1", 150), ("A-3", 300)]
    assert model.calls == 2  # the model was not asked again for the step


def test_terminate_ends_the_run_and_nothing_else_of_it_runs():
    executed, log = [], []
    model = ScriptedModel([[*THREE_REFUNDS[:1], *THREE_REFUNDS[2:3]], "never asked"])
    verdicts = {"c1": lambda c: c.tool.run(), "c3": lambda c: c.tool.terminate("This looks like fraud.")}
    events = []

    response = (
        agent_with(model, executed)
        .prompt("refund")
        .request_hook(deciding(verdicts, log))
        .on_event(lambda e: events.append(e.type))
        .send_sync()
    )

    assert executed == []
    assert model.calls == 1
    assert response.state.status == "terminated"
    assert response.state.terminated == "This looks like fraud."
    assert events[-1] == "terminated"
    # Sent again, a terminated run stays as it is.
    again = agent_with(model, executed).resume(response.state).request_hook(deciding(verdicts, log)).send_sync()
    assert again.state.status == "terminated"
    assert model.calls == 1


def test_a_reviewers_note_reaches_the_model_beside_the_result_never_inside_it():
    executed = []
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=118, id="c1"), "Refunded $105."])

    def edit(call):
        return call.tool.run(args={"order_id": "A-1", "amount": 105}, note="A reviewer lowered it to $105.")

    response = agent_with(model, executed).prompt("refund").request_hook(create_hook(on_tool_call=edit)).send_sync()

    assert [e[:2] for e in executed] == [("A-1", 105)]
    *_, tool_result, note = model.requests[1].messages
    assert tool_result.role == "tool"
    assert json.loads(tool_result.content) == {"order_id": "A-1", "amount": 105.0, "refund_id": "R-1"}
    assert note.role == "system"
    assert "A reviewer lowered it to $105." in note.content
    assert response.tool_calls[0].note == "A reviewer lowered it to $105."


def test_the_offline_model_understands_two_refunds_in_one_message_and_says_what_a_reviewer_changed():
    executed = []
    refund = make_refund_tool(executed)
    agent = Agent(name="support", instructions="Help.", model=OfflineModel(), tools=[refund])

    def approve_lower(call):
        if call.args.order_id == "A-1001":
            return call.tool.run(args={"order_id": "A-1001", "amount": 105}, note="Lowered to $105.")
        return call.tool.run()

    response = (
        agent.prompt("refund order A-1001, $118 and order A-1002, $120")
        .request_hook(create_hook(on_tool_call=approve_lower))
        .send_sync()
    )

    assert sorted(e[:2] for e in executed) == [("A-1001", 105), ("A-1002", 120)]
    assert "I refunded $105.00 (a reviewer changed it from $118.00) for order A-1001" in response.text
    assert "I refunded $120.00 for order A-1002" in response.text
    assert "changed it from $120.00" not in response.text


def test_a_tools_preview_reaches_the_hook_and_a_broken_one_says_so_instead_of_failing():
    from anvia import Approval as ApprovalRule
    from anvia import create_tool
    from tests.anvia.tools_fixtures import RefundInput

    def preview(args, ctx):
        if args.order_id == "A-2":
            raise LookupError("the shop is down")
        return {"left_to_refund": 80, "warnings": [f"Only $80 left on {args.order_id}."], "run": ctx.run_id}

    refund = create_tool(
        name="refund_order",
        description="Refund.",
        input=RefundInput,
        approval=ApprovalRule(),
        execute=lambda args: {"ok": True},
        preview=preview,
    )
    seen = []

    def look(call):
        seen.append(call.preview())
        return call.tool.skip("No.")

    model = ScriptedModel(
        [[call("refund_order", order_id="A-1", amount=150), call("refund_order", order_id="A-2", amount=5)], "Ok."]
    )
    Agent(name="s", instructions="", model=model, tools=[refund]).prompt("x", run_id="r1").request_hook(
        create_hook(on_tool_call=look)
    ).send_sync()

    assert seen[0] == {
        "warnings": ["Only $80 left on A-1."],
        "facts": [{"name": "left_to_refund", "value": 80}, {"name": "run", "value": "r1"}],
    }
    assert seen[1] == {"warnings": ["The preview could not be built: LookupError: the shop is down"], "facts": []}
