"""A small refund tool, shared by the framework tests."""

from __future__ import annotations

from pydantic import BaseModel, Field

from anvia import Approval, create_tool


class RefundInput(BaseModel):
    order_id: str
    amount: float = Field(gt=0)


def make_refund_tool(executed: list):
    """A refund tool guarded above $100 that records each execution's args and idempotency key."""

    def refund(args: RefundInput, ctx):
        executed.append((args.order_id, args.amount, ctx.idempotency_key))
        return {"order_id": args.order_id, "amount": args.amount, "refund_id": f"R-{len(executed)}"}

    return create_tool(
        name="refund_order",
        description="Issue a refund.",
        input=RefundInput,
        approval=Approval(
            when=lambda call: call.args.amount > 100,
            reason=lambda call: f"Review refund of ${call.args.amount:g} for {call.args.order_id}.",
            reject_message="Refund was not approved.",
        ),
        execute=refund,
    )
