from __future__ import annotations

from decimal import Decimal

from django.db.models import Count, Sum

from shop.errors import OrderNotFound
from shop.models import Order


def order_for_customer(*, customer_id: int, number: str) -> Order:
    """The customer's own order; another customer's order is "not found", never shown."""
    try:
        return Order.objects.get(number=number.strip().upper(), customer_id=customer_id)
    except Order.DoesNotExist:
        raise OrderNotFound(number) from None


def order_by_number(*, number: str) -> Order | None:
    """Any customer's order, for staff (reviewers judging a request); ``None`` when there is none."""
    return Order.objects.filter(number=number.strip().upper()).first()


def order_refunded(order: Order) -> Decimal:
    return order.refunds.aggregate(total=Sum("amount"))["total"] or Decimal("0.00")


def order_refunds_since(order: Order, since) -> tuple[Decimal, int]:
    """The total and the number of the order's refunds made since ``since``."""
    made = order.refunds.filter(created_at__gte=since).aggregate(total=Sum("amount"), count=Count("id"))
    return made["total"] or Decimal("0.00"), made["count"]


def order_summary(order: Order) -> dict:
    """What the agent (and so the customer) is told about an order."""
    refunded = order_refunded(order)
    return {
        "order_id": order.number,
        "description": order.description,
        "status": order.status,
        "total": float(order.total),
        "refunded": float(refunded),
        "refundable": float(order.total - refunded),
    }
