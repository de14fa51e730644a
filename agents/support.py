"""The support agent: looks up, refunds and cancels the signed-in customer's orders.

Which customer is the run's ``context["user_id"]``, set by the app, never by the model: a tool
only ever touches that customer's orders.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from agents.llm import SettingsModel
from anvia import Agent, Approval, ToolContext, ToolError, create_tool
from shop import services as shop
from shop.errors import ShopError
from shop.selectors import order_for_customer, order_summary


class OrderRef(BaseModel):
    order_id: str = Field(description="The order number, like A-1001.", max_length=20)


class RefundInput(BaseModel):
    order_id: str = Field(description="The order number, like A-1001.", max_length=20)
    amount: float = Field(gt=0, description="The amount to refund, in dollars.")


def _customer_id(ctx: ToolContext) -> int:
    customer_id = ctx.context.get("user_id")
    if customer_id is None:
        raise ToolError("No customer is signed in for this conversation.")
    return int(customer_id)


def lookup(args: OrderRef, ctx: ToolContext) -> dict:
    try:
        return order_summary(order_for_customer(customer_id=_customer_id(ctx), number=args.order_id))
    except ShopError as error:
        raise ToolError(str(error)) from None


def refund(args: RefundInput, ctx: ToolContext) -> dict:
    try:
        made = shop.refund_create(
            customer_id=_customer_id(ctx),
            order_number=args.order_id,
            amount=args.amount,
            idempotency_key=ctx.idempotency_key,
        )
    except ShopError as error:
        raise ToolError(str(error)) from None
    return {"order_id": made.order.number, "amount": float(made.amount), "refund_id": f"RF-{made.pk}"}


def cancel(args: OrderRef, ctx: ToolContext) -> dict:
    try:
        order = shop.order_cancel(customer_id=_customer_id(ctx), order_number=args.order_id)
    except ShopError as error:
        raise ToolError(str(error)) from None
    return {"order_id": order.number, "status": order.status}


lookup_order = create_tool(
    name="lookup_order",
    description="Look up one of the customer's orders: status, total, what was refunded.",
    input=OrderRef,
    execute=lookup,
)

refund_order = create_tool(
    name="refund_order",
    description="Refund part or all of one of the customer's orders.",
    input=RefundInput,
    approval=Approval(
        when=lambda call: call.args.amount > 100,
        reason=lambda call: f"Review refund of ${call.args.amount:.2f} for {call.args.order_id}.",
        reject_message="Refund was not approved.",
    ),
    execute=refund,
)

cancel_order = create_tool(
    name="cancel_order",
    description="Cancel one of the customer's orders that has not shipped yet.",
    input=OrderRef,
    approval=Approval(
        reason=lambda call: f"Review cancellation of order {call.args.order_id}.",
        reject_message="Cancellation was not approved.",
    ),
    execute=cancel,
)

support_agent = Agent(
    name="support",
    description="Customer support for the demo shop: order status, refunds, cancellations.",
    instructions=(
        "You are the support agent of a small shop. Help the customer with their orders using the "
        "tools. Refunds over $100 and every cancellation wait for a staff reviewer; if a reviewer "
        "refuses, tell the customer plainly and include the reviewer's reason."
    ),
    model=SettingsModel(),
    tools=[lookup_order, refund_order, cancel_order],
)
