from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection

from shop.errors import OrderNotCancellable, OrderNotFound, RefundTooLarge
from shop.models import Order, Refund
from shop.selectors import order_summary
from shop.services import order_cancel, refund_create
from tests.factories import OrderFactory, UserFactory


@pytest.fixture
def order(db):
    return OrderFactory(number="A-1001", total=Decimal("249.00"))


def test_refund_is_idempotent_by_key(order):
    first = refund_create(customer_id=order.customer_id, order_number="a-1001", amount=150, idempotency_key="run:call")
    again = refund_create(customer_id=order.customer_id, order_number="A-1001", amount=150, idempotency_key="run:call")
    assert first.pk == again.pk
    assert Refund.objects.count() == 1
    assert order_summary(order)["refundable"] == 99.0


def test_refund_never_exceeds_what_is_left(order):
    refund_create(customer_id=order.customer_id, order_number="A-1001", amount=200, idempotency_key="k1")
    with pytest.raises(RefundTooLarge, match=r"only \$49.00 left to refund \(of \$249.00\)"):
        refund_create(customer_id=order.customer_id, order_number="A-1001", amount=50, idempotency_key="k2")
    assert Refund.objects.count() == 1


def test_a_customer_cannot_refund_or_cancel_someone_elses_order(order):
    stranger = UserFactory()
    with pytest.raises(OrderNotFound, match="A-1001 was not found among your orders"):
        refund_create(customer_id=stranger.pk, order_number="A-1001", amount=10, idempotency_key="k")
    with pytest.raises(OrderNotFound):
        order_cancel(customer_id=stranger.pk, order_number="A-1001")
    assert not Refund.objects.exists()


def test_cancel_only_before_shipping_and_twice_is_harmless(order):
    assert order_cancel(customer_id=order.customer_id, order_number="A-1001").status == "cancelled"
    assert order_cancel(customer_id=order.customer_id, order_number="A-1001").status == "cancelled"
    shipped = OrderFactory(number="A-2", customer=order.customer, total=5, status="shipped")
    with pytest.raises(OrderNotCancellable, match="already shipped"):
        order_cancel(customer_id=shipped.customer_id, order_number="A-2")


@pytest.mark.django_db(transaction=True)
def test_concurrent_refunds_never_exceed_the_total():
    customer = OrderFactory(number="A-9", total="100.00").customer
    barrier = threading.Barrier(8)
    outcomes = []

    def refund(i):
        try:
            barrier.wait()
            refund_create(customer_id=customer.pk, order_number="A-9", amount=30, idempotency_key=f"k{i}")
            outcomes.append("ok")
        except RefundTooLarge:
            outcomes.append("too large")
        finally:
            connection.close()

    threads = [threading.Thread(target=refund, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes.count("ok") == 3
    assert outcomes.count("too large") == 5
    assert sum(r.amount for r in Refund.objects.all()) == Decimal("90.00")


@pytest.mark.django_db(transaction=True)
def test_the_same_call_racing_itself_refunds_once():
    customer = OrderFactory(number="A-8", total="500.00").customer
    barrier = threading.Barrier(6)
    ids = []

    def refund():
        try:
            barrier.wait()
            ids.append(
                refund_create(customer_id=customer.pk, order_number="A-8", amount=150, idempotency_key="same").pk
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=refund) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(set(ids)) == 1
    assert len(ids) == 6
    assert Refund.objects.count() == 1


def test_seed_demo_creates_orders_once(db):
    call_command("seed_demo")
    call_command("seed_demo")
    assert list(Order.objects.values_list("number", flat=True)) == [
        "A-1001",
        "A-1002",
        "A-1003",
        "A-1004",
        "A-1005",
        "B-2001",
        "B-2002",
    ]
    assert Order.objects.get(number="A-1001").customer.username == "alice"
