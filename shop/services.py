"""Writes to the shop. Each is safe to retry with the same idempotency key."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from shop.errors import OrderNotCancellable, RefundTooLarge
from shop.models import Order, Refund
from shop.selectors import order_for_customer, order_refunded


def refund_create(
    *, customer_id: int, order_number: str, amount: Decimal | float | str, idempotency_key: str
) -> Refund:
    """Refund part or all of an order; never more than is left; once per idempotency key."""
    amount = Decimal(str(amount)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if amount <= 0:
        raise RefundTooLarge("A refund must be more than $0.00.")
    existing = Refund.objects.filter(idempotency_key=idempotency_key).select_related("order").first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            order = order_for_customer(customer_id=customer_id, number=order_number)
            # Lock the order so two refunds cannot both fit in what is left.
            order = Order.objects.select_for_update().get(pk=order.pk)
            left = order.total - order_refunded(order)
            if amount > left:
                raise RefundTooLarge(
                    f"Order {order.number} has only ${left:.2f} left to refund (of ${order.total:.2f})."
                )
            return Refund.objects.create(order=order, amount=amount, idempotency_key=idempotency_key)
    except IntegrityError:
        # The same call won a race with itself (a redelivered task): hand back the first refund.
        return Refund.objects.select_related("order").get(idempotency_key=idempotency_key)


def order_cancel(*, customer_id: int, order_number: str) -> Order:
    """Cancel an order that has not shipped. Cancelling a cancelled order changes nothing."""
    with transaction.atomic():
        order = order_for_customer(customer_id=customer_id, number=order_number)
        order = Order.objects.select_for_update().get(pk=order.pk)
        if order.status == Order.Status.CANCELLED:
            return order
        if order.status != Order.Status.PLACED:
            raise OrderNotCancellable(f"Order {order.number} has already {order.status} and can't be cancelled.")
        order.status = Order.Status.CANCELLED
        order.cancelled_at = timezone.now()
        order.save(update_fields=["status", "cancelled_at"])
        return order
