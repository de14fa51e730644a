"""Streaming against the real llama.cpp server: the text arrives in several pieces that add up to
the answer, and a forced tool call streamed in pieces (llama.cpp repeats its 60+ character id and
the name in every piece) comes out as one whole call. The protocol is asserted, never the wording."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field

import anvia
from tests.model_server.conftest import ModelServer

pytestmark = pytest.mark.model_server


class RefundInput(BaseModel):
    order_id: str = Field(description="The order number, like A-1001.")
    amount: float = Field(description="The amount to refund, in dollars.")


def collect(events: list[anvia.Event]):
    return events.append


async def test_the_answer_arrives_in_pieces(model_server: ModelServer):
    events: list[anvia.Event] = []
    agent = anvia.Agent(name="chat", instructions="Answer in two short sentences.", model=model_server.client())

    response = await agent.prompt("Say hello to a customer and ask how you can help.").on_event(collect(events)).send()

    pieces = [e.data["text"] for e in events if e.type == "text_delta"]
    assert response.state.status == "done"
    assert len(pieces) >= 3
    assert "".join(pieces) == response.text
    assert [e.data for e in events if e.type == "text"] == [{"text": response.text, "final": True}]
    # llama-cpp-python ignores stream_options.include_usage: one call, whatever the token counts.
    assert response.usage.model_calls == 1


async def test_a_streamed_tool_call_comes_out_whole(model_server: ModelServer):
    executed: list[RefundInput] = []
    events: list[anvia.Event] = []

    def refund(args: RefundInput) -> dict:
        executed.append(args)
        return {"order_id": args.order_id, "amount": args.amount, "status": "refunded"}

    tool = anvia.create_tool(name="refund_order", description="Refund an order.", input=RefundInput, execute=refund)
    agent = anvia.Agent(
        name="support",
        instructions="You are the support agent of a shop. Use the tools.",
        model=model_server.client(),
        tools=[tool],
        tool_choice=lambda state: "refund_order" if state.step == 1 else "none",
    )

    response = await agent.prompt("Refund order A-1001, $20.").on_event(collect(events)).send()

    calls = response.messages[1].tool_calls
    assert len(calls) == 1
    assert calls[0].name == "refund_order"
    assert calls[0].id.startswith("call_")
    # The pieces' JSON was put back together (what the small model put in it is its business).
    assert isinstance(json.loads(calls[0].arguments), dict)
    assert [e.data["tool_name"] for e in events if e.type == "tool_call"] == ["refund_order"]
    assert len(response.tool_calls) == 1
    assert response.tool_calls[0].outcome in ("ran", "invalid")
    assert len(executed) == (1 if response.tool_calls[0].outcome == "ran" else 0)
    assert response.state.status == "done"
    assert response.usage.model_calls == 2
    final_pieces = [e.data["text"] for e in events if e.type == "text_delta" and e.step == 2]
    assert "".join(final_pieces) == (response.text or "")
