from __future__ import annotations

import asyncio
import threading

import pytest
from pydantic import BaseModel

from anvia import (
    Agent,
    AgentRunError,
    MaxStepsExceeded,
    ToolError,
    ToolExecutionError,
    create_hook,
    create_tool,
)
from anvia.testing import ScriptedModel, approve_all, call, reject_all
from tests.anvia.tools_fixtures import make_refund_tool


def support_agent(model, executed, *extra_tools):
    return Agent(
        name="support", instructions="Help customers.", model=model, tools=[make_refund_tool(executed), *extra_tools]
    )


def test_a_protected_call_is_skipped_with_its_reject_message_when_no_hook_decides():
    executed = []
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=150), "Sorry."])
    response = support_agent(model, executed).prompt("refund").send_sync()
    assert executed == []
    assert response.tool_calls[0].outcome == "skipped"
    assert model.requests[1].messages[-1].content == "Refund was not approved."


def test_an_unprotected_call_runs_without_a_hook():
    executed = []
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=50), "Refunded."])
    response = support_agent(model, executed).prompt("refund").send_sync()
    assert [e[:2] for e in executed] == [("A-1", 50)]
    assert response.text == "Refunded."
    assert response.tool_calls[0].requires_approval is False


def test_the_reference_hook_works_as_written():
    """The guide's hook: guard refund_order by name, ask the app's runtime, run or skip."""
    executed, asked = [], []

    class ApprovalRuntime:
        def wait_for_decision(self, *, user_id, conversation_id, tool_name, args):
            asked.append((user_id, conversation_id, tool_name, args))
            return args["amount"] < 1000

    approval_runtime = ApprovalRuntime()

    def create_approval_hook(*, user_id, conversation_id):
        async def on_tool_call(call):
            if call.tool_name != "refund_order":
                return call.tool.run()
            approved = approval_runtime.wait_for_decision(
                user_id=user_id, conversation_id=conversation_id, tool_name=call.tool_name, args=call.args_json
            )
            return call.tool.run() if approved else call.tool.skip("Refund was not approved.")

        return create_hook(on_tool_call=on_tool_call)

    model = ScriptedModel(
        [
            [call("refund_order", order_id="A-1", amount=150), call("refund_order", order_id="A-2", amount=5000)],
            "One refund went through.",
        ]
    )
    response = (
        support_agent(model, executed)
        .prompt("refund both")
        .request_hook(create_approval_hook(user_id="u1", conversation_id="c1"))
        .send_sync()
    )
    assert [e[:2] for e in executed] == [("A-1", 150)]
    assert [c.outcome for c in response.tool_calls] == ["ran", "skipped"]
    assert asked[0] == ("u1", "c1", "refund_order", {"order_id": "A-1", "amount": 150.0})
    assert response.text == "One refund went through."


def test_sync_hooks_run_in_the_calling_thread_under_send_sync():
    threads = []

    def on_tool_call(call):
        threads.append(threading.get_ident())
        return call.tool.run()

    model = ScriptedModel([call("refund_order", order_id="A-1", amount=150), "done"])
    support_agent(model, []).prompt("x").request_hook(create_hook(on_tool_call=on_tool_call)).send_sync()
    assert threads == [threading.get_ident()]


def test_a_hook_returning_none_defers_to_the_next_hook_and_then_fails_closed():
    executed = []
    abstain = create_hook(on_tool_call=lambda call: None)
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=150), "no"])
    response = support_agent(model, executed).prompt("x").request_hook(abstain).send_sync()
    assert executed == []
    assert response.tool_calls[0].outcome == "skipped"

    model = ScriptedModel([call("refund_order", order_id="A-1", amount=150), "yes"])
    support_agent(model, executed).prompt("x").request_hook(abstain).request_hook(approve_all).send_sync()
    assert len(executed) == 1


def test_a_hook_returning_something_else_fails_the_run_without_running_the_tool():
    executed = []
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=150)])
    bad = create_hook(on_tool_call=lambda call: True)
    with pytest.raises(AgentRunError, match=r"call\.tool\.run\(\)"):
        support_agent(model, executed).prompt("x").request_hook(bad).send_sync()
    assert executed == []


def test_invalid_arguments_go_back_to_the_model_naming_the_field():
    executed = []
    model = ScriptedModel(
        [call("refund_order", order_id="A-1", amount=-3), call("refund_order", "{oops"), "I'm sorry."]
    )
    response = support_agent(model, executed).prompt("x").request_hook(approve_all).send_sync()
    assert executed == []
    first, second = (r.messages[-1].content for r in model.requests[1:])
    assert first.startswith("Error: Invalid arguments for refund_order: amount:")
    assert "not valid JSON" in second
    assert [c.outcome for c in response.tool_calls] == ["invalid", "invalid"]
    assert response.text == "I'm sorry."


def test_an_unknown_tool_goes_back_to_the_model_with_the_available_tools():
    model = ScriptedModel([call("delete_everything"), "Can't do that."])
    response = support_agent(model, []).prompt("x").send_sync()
    assert model.requests[1].messages[-1].content == (
        "Error: Unknown tool 'delete_everything'. Available tools: refund_order."
    )
    assert response.text == "Can't do that."


def test_max_steps_stops_a_looping_model_with_a_clear_error():
    model = ScriptedModel(lambda request: call("refund_order", order_id="A-1", amount=5))
    agent = Agent(name="loop", instructions="", model=model, tools=[make_refund_tool([])], max_steps=3)
    with pytest.raises(MaxStepsExceeded, match="stopped after 3 steps") as error:
        agent.prompt("x").send_sync()
    assert model.calls == 3
    assert error.value.state.status == "failed"


def test_tool_error_goes_to_the_model_but_other_exceptions_fail_the_run():
    class Empty(BaseModel):
        pass

    def out_of_stock(args):
        raise ToolError("That item is out of stock.")

    def crash(args):
        raise RuntimeError("database is on fire")

    tools = [
        create_tool(name="reserve", description="", input=Empty, execute=out_of_stock),
        create_tool(name="crash", description="", input=Empty, execute=crash),
    ]
    model = ScriptedModel([call("reserve"), "Out of stock, sorry."])
    response = Agent(name="a", instructions="", model=model, tools=tools).prompt("x").send_sync()
    assert model.requests[1].messages[-1].content == "Error: That item is out of stock."
    assert response.text == "Out of stock, sorry."

    events = []
    model = ScriptedModel([call("crash")])
    with pytest.raises(ToolExecutionError, match="The tool crash failed: database is on fire"):
        Agent(name="a", instructions="", model=model, tools=tools).prompt("x").on_event(events.append).send_sync()
    assert events[-1].type == "error"


async def test_events_arrive_in_order_with_async_sinks_and_async_hooks():
    events = []

    async def sink(event):
        await asyncio.sleep(0)
        events.append(event)

    async def decide(call):
        return call.tool.run()

    model = ScriptedModel([call("refund_order", order_id="A-1", amount=150), "Refunded $150."])
    response = await (
        support_agent(model, []).prompt("x").on_event(sink).request_hook(create_hook(on_tool_call=decide)).send()
    )
    assert [e.type for e in events] == [
        "step",
        "tool_call",
        "approval_requested",
        "approval_decided",
        "tool_result",
        "step",
        "text",
        "done",
    ]
    requested = events[2].data
    assert requested["reason"] == "Review refund of $150 for A-1."
    assert requested["args"] == {"order_id": "A-1", "amount": 150.0}
    assert events[3].data["approved"] is True
    assert {e.run_id for e in events} == {response.run_id}


def test_a_failing_event_sink_does_not_break_the_run():
    def broken_sink(event):
        raise ConnectionError("websocket gone")

    model = ScriptedModel(["Hello."])
    assert support_agent(model, []).prompt("hi").on_event(broken_sink).send_sync().text == "Hello."


def test_the_response_has_text_history_tool_calls_and_usage():
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=150), "Refund refused."])
    response = support_agent(model, []).prompt("refund A-1").request_hook(reject_all).send_sync()
    assert response.text == "Refund refused."
    assert [m.role for m in response.messages] == ["user", "assistant", "tool", "assistant"]
    record = response.tool_calls[0]
    assert (record.tool_name, record.outcome, record.approved) == ("refund_order", "skipped", False)
    assert record.approval_reason == "Review refund of $150 for A-1."
    assert response.usage.model_calls == 2


def test_model_sees_the_instructions_history_and_tools():
    from anvia import Message

    model = ScriptedModel(["Sure."])
    history = [Message.user("hi"), Message(role="assistant", content="Hello!")]
    support_agent(model, []).prompt("refund please", history=history).send_sync()
    request = model.requests[0]
    assert request.instructions == "Help customers."
    assert [m.content for m in request.messages] == ["hi", "Hello!", "refund please"]
    assert [t.name for t in request.tools] == ["refund_order"]


def test_repeated_call_ids_from_a_model_are_made_unique_per_run():
    executed = []
    model = ScriptedModel(
        [
            call("refund_order", order_id="A-1", amount=5, id="call_0"),
            call("refund_order", order_id="A-2", amount=6, id="call_0"),
            "done",
        ]
    )
    support_agent(model, executed).prompt("x").send_sync()
    keys = [e[2] for e in executed]
    assert len(keys) == 2
    assert len(set(keys)) == 2


def test_duplicate_tool_names_are_refused():
    with pytest.raises(ValueError, match="several tools named refund_order"):
        Agent(name="a", instructions="", model=ScriptedModel([]), tools=[make_refund_tool([]), make_refund_tool([])])
