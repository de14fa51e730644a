"""The framework's OpenAI-compatible client against a real server (llama-cpp-python), not ours.

These assert the protocol and the framework's behaviour, never the model's wording: a 135M model
chooses tools and arguments badly, so where a tool call is needed the agent forces it with
``tool_choice``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import pytest
from pydantic import AfterValidator, BaseModel, Field

import anvia
from anvia import ModelRequest, ToolCallRequest
from anvia.core.messages import Message, ToolSpec
from tests.model_server.conftest import ModelServer

pytestmark = pytest.mark.model_server


class RefundInput(BaseModel):
    order_id: str = Field(description="The order number, like A-1001.")
    amount: float = Field(description="The amount to refund, in dollars.")


def _no_such_order(value: str) -> str:
    raise ValueError("there is no order with that number")


class StrictRefundInput(BaseModel):
    # Not in the JSON schema the model sees, so whatever it sends fails validation.
    order_id: Annotated[str, AfterValidator(_no_such_order)] = Field(description="The order number.")
    amount: float


def first_step_only(choice: str):
    return lambda state: choice if state.step == 1 else "none"


def refund_agent(model_server: ModelServer, *, execute, input=RefundInput, tool_choice=None) -> anvia.Agent:
    refund = anvia.create_tool(name="refund_order", description="Refund an order.", input=input, execute=execute)
    return anvia.Agent(
        name="support",
        instructions="You are the support agent of a shop. Use the tools.",
        model=model_server.client(),
        tools=[refund],
        tool_choice=tool_choice or first_step_only("refund_order"),
    )


def test_ten_runs_in_one_thread_each_on_its_own_event_loop(model_server):
    """One model object, a new ``async_to_sync`` loop per run: the way a Celery thread runs."""
    agent = anvia.Agent(name="chat", instructions="Answer in one short sentence.", model=model_server.client())

    responses = [agent.prompt(f"Say hello to customer number {n}.").send_sync() for n in range(10)]

    assert all(r.state.status == "done" for r in responses)
    assert all(r.text for r in responses)
    assert sum(r.usage.model_calls for r in responses) >= 10


def test_tools_reach_the_prompt_only_because_tool_choice_is_sent(model_server):
    """llama.cpp's server adds the tool definitions to the prompt only when the request names a
    tool_choice: the prompt grows by the tools' size with it."""
    client = model_server.client(max_tokens=1)
    tools = [ToolSpec(name="refund_order", description="Refund an order.", parameters=RefundInput.model_json_schema())]
    messages = [Message.user("Refund order A-1001.")]

    async def prompt_tokens(**request) -> int:
        reply = await client.complete(ModelRequest(instructions="You are support.", messages=messages, **request))
        return reply.usage.input_tokens

    without_tools = asyncio.run(prompt_tokens())
    with_tools = asyncio.run(prompt_tokens(tools=tools))  # the client sends tool_choice "auto"

    assert with_tools > without_tools + 50


def test_a_forced_tool_call_runs_and_the_follow_up_with_its_result_is_accepted(model_server):
    executed: list[tuple[RefundInput, str]] = []

    def refund(args: RefundInput, ctx: anvia.ToolContext) -> dict:
        executed.append((args, ctx.idempotency_key))
        return {"refund_id": "RF-1", "amount": args.amount}

    response = (
        refund_agent(model_server, execute=refund).prompt("Refund $150 on order A-1001.", run_id="r1").send_sync()
    )

    assert response.state.status == "done"
    (record,) = response.tool_calls
    assert record.outcome == "ran"
    assert record.tool_name == "refund_order"
    # llama.cpp's own id shape, kept whole, and the key made of it.
    assert record.call_id.startswith("call_")
    assert len(record.call_id) > 40
    assert [key for _, key in executed] == [f"r1:{record.call_id}"]
    # The server accepted the turn that carries the assistant's tool call and the tool's result.
    assert response.usage.model_calls >= 2
    assistant, tool_result = response.messages[1], response.messages[2]
    assert assistant.tool_calls[0].id == record.call_id
    assert tool_result.tool_call_id == record.call_id


def test_arguments_that_fail_validation_go_back_to_the_model_as_a_tool_error(model_server):
    ran: list[object] = []
    agent = refund_agent(model_server, execute=lambda args: ran.append(args), input=StrictRefundInput)

    response = agent.prompt("Refund $150 on order A-1001.").send_sync()

    assert ran == []
    (record,) = response.tool_calls
    assert record.outcome == "invalid"
    assert "order_id" in record.message
    tool_result = response.messages[2]
    assert tool_result.role == "tool"
    assert tool_result.content.startswith("Error:")
    assert "there is no order with that number" in tool_result.content
    assert response.state.status == "done"  # the server took the error and the model answered


def test_a_protected_call_is_decided_by_a_hook_and_the_run_goes_on(model_server):
    refund = anvia.create_tool(
        name="refund_order",
        description="Refund an order.",
        input=RefundInput,
        approval=anvia.Approval(reason="Review the refund.", reject_message="The refund was not approved."),
        execute=lambda args: {"refund_id": "RF-1"},
    )
    agent = anvia.Agent(
        name="support",
        instructions="You are the support agent of a shop. Use the tools.",
        model=model_server.client(),
        tools=[refund],
        tool_choice=first_step_only("refund_order"),
    )
    seen: list[anvia.ToolCall] = []

    def reviewer(call: anvia.ToolCall):
        seen.append(call)
        return call.tool.skip("A reviewer said no: the order is outside the refund window.")

    response = (
        agent.prompt("Refund $150 on order A-1001.").request_hook(anvia.create_hook(on_tool_call=reviewer)).send_sync()
    )

    assert [c.tool_name for c in seen] == ["refund_order"]
    assert seen[0].requires_approval
    (record,) = response.tool_calls
    assert (record.outcome, record.approved) == ("skipped", False)
    assert response.messages[2].content == "A reviewer said no: the order is outside the refund window."
    assert response.state.status == "done"


@pytest.mark.parametrize("request_id", ["call_0", "x" * 300])
def test_call_ids_of_any_shape_are_accepted_back_by_the_server(model_server, request_id):
    """What the client sends back after a tool call, with an id another server might have made."""
    client = model_server.client()
    turn = [
        Message.user("Refund $150 on order A-1001."),
        Message(
            role="assistant",
            content=None,
            tool_calls=[
                ToolCallRequest(id=request_id, name="refund_order", arguments='{"order_id": "A-1001", "amount": 150}')
            ],
        ),
        Message.tool_result(call_id=request_id, name="refund_order", content='{"refund_id": "RF-1"}'),
    ]
    tools = [ToolSpec(name="refund_order", description="Refund an order.", parameters=RefundInput.model_json_schema())]

    reply = asyncio.run(
        client.complete(ModelRequest(instructions="You are support.", messages=turn, tools=tools, tool_choice="none"))
    )

    assert reply.usage.model_calls == 1
    assert reply.usage.input_tokens > 0
