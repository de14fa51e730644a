from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import BaseModel, Field

from anvia import Agent, Approval, ToolArgumentsError, ToolContext, create_tool, tool
from anvia.testing import ScriptedModel, approve_all, call
from tests.anvia.tools_fixtures import RefundInput, make_refund_tool


def test_tool_spec_carries_the_input_models_json_schema():
    spec = make_refund_tool([]).spec()
    assert spec.name == "refund_order"
    assert spec.parameters["required"] == ["order_id", "amount"]
    assert spec.parameters["properties"]["amount"]["exclusiveMinimum"] == 0


def test_parse_args_names_the_failing_field():
    refund = make_refund_tool([])
    with pytest.raises(ToolArgumentsError) as error:
        refund.parse_args('{"order_id": "A-1", "amount": -5}')
    assert error.value.fields == {"amount": "Input should be greater than 0"}
    assert "amount" in str(error.value)


def test_parse_args_rejects_broken_json_and_non_objects():
    refund = make_refund_tool([])
    with pytest.raises(ToolArgumentsError, match="not valid JSON"):
        refund.parse_args('{"order_id": ')
    with pytest.raises(ToolArgumentsError, match="must be a JSON object"):
        refund.parse_args("[1, 2]")


def test_create_tool_refuses_a_non_pydantic_input():
    with pytest.raises(TypeError, match="pydantic model"):
        create_tool(name="x", description="x", input=dict, execute=lambda args: None)


def test_approval_when_absent_means_always_and_reason_may_be_a_string():
    gate = Approval(reason="Deleting is final.")
    closes = create_tool(name="close_account", description="Close.", execute=lambda a: "closed", approval=gate)
    model = ScriptedModel([call("close_account"), "ok"])
    reasons = []
    Agent(name="a", instructions="", model=model, tools=[closes]).prompt("close it").on_event(
        lambda e: reasons.append(e.data["reason"]) if e.type == "approval_requested" else None
    ).request_hook(approve_all).send_sync()
    assert reasons == ["Deleting is final."]


def test_a_rule_that_raises_requires_approval():
    def broken_rule(call):
        raise KeyError("limit")

    guarded = Approval(when=broken_rule)
    assert guarded.is_required(_call_of(guarded)) is True


def _call_of(approval: Approval, **args):
    from pydantic import BaseModel

    from anvia.core.tools import ToolCall, ToolHandle, create_tool

    class Args(BaseModel):
        amount: float = 1.0

    definition = create_tool(name="t", description="t", input=Args, execute=lambda a: None, approval=approval)
    return ToolCall(tool_name="t", call_id="c", args=Args(**args), run_id="r", context={}, tool=ToolHandle(definition))


def test_tool_decorator_builds_the_input_model_from_the_signature():
    seen = {}

    @tool(approval=Approval(when=lambda c: c.args.amount > 100))
    def refund_order(order_id: str, amount: Annotated[float, Field(gt=0)], ctx: ToolContext, note: str = "") -> dict:
        """Issue a refund."""
        seen.update(order_id=order_id, amount=amount, note=note, key=ctx.idempotency_key)
        return {"ok": True}

    assert refund_order.name == "refund_order"
    assert refund_order.description == "Issue a refund."
    schema = refund_order.spec().parameters
    assert set(schema["properties"]) == {"order_id", "amount", "note"}
    assert schema["required"] == ["order_id", "amount"]
    model = ScriptedModel([call("refund_order", order_id="A-1", amount=20), "done"])
    response = Agent(name="a", instructions="", model=model, tools=[refund_order]).prompt("x").send_sync()
    assert seen["order_id"] == "A-1"
    assert seen["amount"] == 20
    assert seen["note"] == ""
    assert seen["key"] == f"{response.run_id}:{response.tool_calls[0].call_id}"


async def test_async_execute_and_one_argument_execute_both_work():
    async def lookup(args):
        return {"order_id": args.order_id, "status": "shipped"}

    class LookupInput(BaseModel):
        order_id: str

    lookup_order = create_tool(name="lookup_order", description="Look up.", input=LookupInput, execute=lookup)
    model = ScriptedModel([call("lookup_order", order_id="A-2"), "It shipped."])
    response = await Agent(name="a", instructions="", model=model, tools=[lookup_order]).prompt("where").send()
    assert response.tool_calls[0].result == {"order_id": "A-2", "status": "shipped"}
    assert model.requests[1].messages[-1].content == '{"order_id": "A-2", "status": "shipped"}'


def test_run_with_edited_args_validates_them():
    refund = make_refund_tool([])
    from anvia.core.tools import ToolHandle

    handle = ToolHandle(refund)
    assert handle.run({"order_id": "A-1", "amount": 90}).args == RefundInput(order_id="A-1", amount=90)
    with pytest.raises(ToolArgumentsError, match="amount"):
        handle.run({"order_id": "A-1", "amount": "lots"})
