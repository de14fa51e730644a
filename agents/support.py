"""The support agent: looks up, refunds and cancels the signed-in customer's orders.

Which customer is the run's ``context["user_id"]``, set by the app, never by the model: a tool
only ever touches that customer's orders.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone
from pydantic import BaseModel, Field

from agents.llm import SettingsModel
from agents.plain_words import ToolWords, tool_words
from anvia import Agent, Approval, ToolContext, ToolError, allow, ask, create_tool, deny
from approvals.selectors import approvals_pending_with_arg
from shop import services as shop
from shop.errors import ShopError
from shop.selectors import order_by_number, order_for_customer, order_refunded, order_refunds_since, order_summary


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


def refund_preview(args: RefundInput, ctx: ToolContext) -> dict:
    """What a reviewer needs to judge a refund: the order's money, whose it is, the other pending
    requests for it, and a warning when the refund cannot succeed as asked."""
    order = order_by_number(number=args.order_id)
    if order is None:
        return {"order": args.order_id, "warnings": [f"There is no order {args.order_id}: this refund will fail."]}
    amount = Decimal(str(args.amount)).quantize(Decimal("0.01"))
    refunded = order_refunded(order)
    left = order.total - refunded
    customer_id = ctx.context.get("user_id")
    belongs = customer_id is not None and order.customer_id == int(customer_id)
    others = [
        approval
        for approval in approvals_pending_with_arg(tool_name="refund_order", name="order_id", value=order.number)
        if (approval.run_id, approval.call_id) != (ctx.run_id, ctx.call_id)
    ]
    asked_elsewhere = sum(Decimal(str(a.args.get("amount", 0))) for a in others)
    warnings = []
    if not belongs:
        warnings.append(f"Order {order.number} is not this customer's order: the refund will fail.")
    if amount > left:
        warnings.append(f"Only ${left:.2f} is left to refund on {order.number}: ${amount:.2f} will fail as asked.")
    elif others and amount + asked_elsewhere > left:
        warnings.append(
            f"With the {len(others)} other pending request(s) for {order.number} (${asked_elsewhere:.2f}), "
            f"more than the ${left:.2f} left would be refunded: approving all of them cannot succeed."
        )
    return {
        "order": f"{order.number}: {order.description} ({order.status})",
        "belongs_to_requester": belongs,
        "total": f"${order.total:.2f}",
        "refunded_so_far": f"${refunded:.2f}",
        "left_to_refund": f"${left:.2f}",
        "other_pending_requests": [f"#{a.pk}: ${Decimal(str(a.args.get('amount', 0))):.2f}" for a in others],
        "warnings": warnings,
    }


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

# The refund policy. Splitting a refund to stay under a review threshold is the oldest trick
# there is, so the threshold counts what the order already got back in the window.
REVIEW_OVER = Decimal("100")  # refunds of an order in the window, this one included
REVIEW_WINDOW_DAYS = 30
TWO_REVIEWERS_OVER = Decimal("500")  # one refund this large needs two distinct reviewers


def refund_facts(call) -> dict:
    """What the refund rules read: the order's total and its refunds in the review window."""
    order = order_by_number(number=call.args.order_id)
    if order is None:
        return {
            "order_found": False,
            "order_total": "0.00",
            "left_to_refund": "0.00",
            "refunded_in_window": "0.00",
            "refunds_in_window": 0,
        }
    since = timezone.now() - timedelta(days=REVIEW_WINDOW_DAYS)
    refunded, count = order_refunds_since(order, since)
    return {
        "order_found": True,
        "order_total": f"{order.total:.2f}",
        "left_to_refund": f"{order.total - order_refunded(order):.2f}",
        "refunded_in_window": f"{refunded:.2f}",
        "refunds_in_window": count,
    }


def _amount(call) -> Decimal:
    return Decimal(str(call.args.amount)).quantize(Decimal("0.01"))


def _refunded(call) -> Decimal:
    return Decimal(call.facts["refunded_in_window"])


def _more_than_is_left(call) -> bool:
    return call.facts["order_found"] and _amount(call) > Decimal(call.facts["left_to_refund"])


def _refund_reason(call) -> str:
    asked = f"Review refund of ${_amount(call):.2f} for {call.args.order_id}"
    count = call.facts["refunds_in_window"]
    if not count:
        return f"{asked}."
    return (
        f"{asked}: ${_refunded(call):.2f} of ${Decimal(call.facts['order_total']):.2f} already refunded in "
        f"{count} call{'s' if count != 1 else ''} in the last {REVIEW_WINDOW_DAYS} days."
    )


refund_order = create_tool(
    name="refund_order",
    description="Refund part or all of one of the customer's orders.",
    input=RefundInput,
    approval=Approval(
        facts=refund_facts,
        policy=[
            deny(
                _more_than_is_left,
                message=lambda call: (
                    f"Only ${Decimal(call.facts['left_to_refund']):.2f} of order {call.args.order_id}'s "
                    f"${Decimal(call.facts['order_total']):.2f} is left to refund: no larger refund can be made."
                ),
                name="more than is left",
            ),
            ask(
                lambda call: _amount(call) > TWO_REVIEWERS_OVER,
                quorum=2,
                reason=_refund_reason,
                name=f"over ${TWO_REVIEWERS_OVER}: two reviewers",
            ),
            ask(
                lambda call: _refunded(call) + _amount(call) > REVIEW_OVER,
                reason=_refund_reason,
                name=f"over ${REVIEW_OVER} in {REVIEW_WINDOW_DAYS} days",
            ),
            allow(
                reason=lambda call: (
                    f"${_refunded(call) + _amount(call):.2f} refunded on {call.args.order_id} in {REVIEW_WINDOW_DAYS} "
                    f"days with this one, within ${REVIEW_OVER}"
                ),
                name="small refunds",
            ),
        ],
        reject_message="Refund was not approved.",
        grant_amount="amount",
        grant_scope=("order_id",),
    ),
    execute=refund,
    preview=refund_preview,
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


def _money(value: Any) -> str:
    return f"${Decimal(str(value)):,.2f}"


def _refund_made(result: dict) -> str:
    return f"refund {result['refund_id']} made: {_money(result['amount'])} back for order {result['order_id']}"


tool_words(
    lookup_order=ToolWords(
        doing=lambda args: f"Checking your order {args['order_id']}…",
        done=lambda order: f"Found order {order['order_id']} ({order['status']})",
    ),
    refund_order=ToolWords(
        doing=lambda args: f"Preparing a {_money(args['amount'])} refund for order {args['order_id']}…",
        asking=lambda args: f"A staff member needs to approve this {_money(args['amount'])} refund",
        done=_refund_made,
    ),
    cancel_order=ToolWords(
        doing=lambda args: f"Cancelling order {args['order_id']}…",
        asking=lambda args: f"A staff member needs to approve cancelling order {args['order_id']}",
        done=lambda result: f"order {result['order_id']} cancelled",
    ),
)

support_agent = Agent(
    name="support",
    description="Customer support for the demo shop: order status, refunds, cancellations.",
    instructions=(
        "You are the support agent of a small shop. Help the customer with their orders using the "
        "tools. Refunds that bring an order over $100 refunded in 30 days, and every cancellation, wait "
        "for a staff reviewer (over $500, for two); if a reviewer "
        "refuses, tell the customer plainly and include the reviewer's reason."
    ),
    model=SettingsModel(),
    tools=[lookup_order, refund_order, cancel_order],
)
