"""The refund tool's preview: what a reviewer needs to judge the call, with a warning when it
cannot succeed as asked; shown in the API and on the review page."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from agents.services import conversation_create, conversation_post_message, run_execute
from agents.support import refund_order
from anvia.core.tools import ToolCall, ToolHandle
from approvals.models import Approval
from shop.models import Order, Refund
from tests.factories import ReviewerFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def request_refund(user, text: str) -> Approval:
    run = conversation_post_message(conversation=conversation_create(user=user), content=text)
    run_execute(run_id=run.pk)
    return Approval.objects.filter(run_id=str(run.pk)).latest("pk")


def test_the_preview_shows_the_orders_money_and_warns_when_the_refund_cannot_succeed(suspending):
    dora = UserFactory(username="dora")
    order = Order.objects.create(number="A-1001", customer=dora, description="Espresso machine", total="249.00")
    Refund.objects.create(order=order, amount="169.00", idempotency_key="earlier")
    # Through the support agent such a call never reaches a reviewer: its policy denies it.
    run = conversation_post_message(conversation=conversation_create(user=dora), content="refund order A-1001, $150")
    run_execute(run_id=run.pk)
    assert not Approval.objects.exists()
    # A hook of your own, or Studio, may still put it to a person: the preview says it will fail.
    args = refund_order.input(order_id="A-1001", amount=150)
    call = ToolCall(
        tool_name="refund_order",
        call_id="c",
        args=args,
        run_id="r",
        context={"user_id": dora.pk},
        tool=ToolHandle(refund_order),
    )

    preview = call.preview()

    assert preview["facts"] == [
        {"name": "order", "value": "A-1001: Espresso machine (placed)"},
        {"name": "belongs_to_requester", "value": True},
        {"name": "total", "value": "$249.00"},
        {"name": "refunded_so_far", "value": "$169.00"},
        {"name": "left_to_refund", "value": "$80.00"},
        {"name": "other_pending_requests", "value": []},
    ]
    assert preview["warnings"] == ["Only $80.00 is left to refund on A-1001: $150.00 will fail as asked."]


def test_the_preview_warns_about_someone_elses_order_and_lists_other_pending_requests(suspending):
    eve = UserFactory(username="eve")
    owner = UserFactory(username="frank")
    Order.objects.create(number="B-2001", customer=owner, description="Desk", total="520.00")

    first = request_refund(eve, "refund order B-2001, $300")
    second = request_refund(eve, "refund order B-2001, $250")

    assert {"name": "belongs_to_requester", "value": False} in first.preview["facts"]
    assert "B-2001 is not this customer's order: the refund will fail." in first.preview["warnings"][0]
    assert {"name": "other_pending_requests", "value": [f"#{first.pk}: $300.00"]} in second.preview["facts"]
    assert (
        "With the 1 other pending request(s) for B-2001 ($300.00), more than the $520.00 left would be refunded: "
        "approving all of them cannot succeed."
    ) in second.preview["warnings"]


def test_reviewers_see_the_preview_in_the_api_and_on_the_page(suspending, client):
    dora = UserFactory(username="dora")
    Order.objects.create(number="A-1001", customer=dora, description="Espresso machine", total="500.00")
    request_refund(dora, "refund order A-1001, $300")
    approval = request_refund(dora, "refund order A-1001, $250")
    reviewer = ReviewerFactory()
    api = APIClient()
    api.force_authenticate(reviewer)
    client.force_login(reviewer)

    body = api.get(f"/api/approvals/{approval.pk}/").json()
    page = client.get(f"/review/{approval.pk}/").content.decode()

    warning = (
        "With the 1 other pending request(s) for A-1001 ($300.00), more than the $500.00 left would be refunded: "
        "approving all of them cannot succeed."
    )
    assert {"name": "left_to_refund", "value": "$500.00"} in body["preview"]["facts"]
    assert body["preview"]["warnings"] == [warning]
    assert "What to know before deciding" in page
    assert warning in page
    assert "Left to refund" in page
