"""What the pages say of an approval: its status with the outcome, and its edits."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import Approval
from approvals.selectors import approval_arg_changes, approval_outcome_text, approvals_queue, queue_row
from tests.factories import ApprovalFactory, UserFactory

pytestmark = pytest.mark.django_db

APPROVED = {"status": Approval.Status.APPROVED, "action": Approval.Action.APPROVE}


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        pytest.param({}, "Pending", id="pending"),
        pytest.param(APPROVED, "Approved — not run yet", id="approved-not-run"),
        pytest.param(
            {
                **APPROVED,
                "outcome": {
                    "outcome": "ran",
                    "result": {"order_id": "A-1001", "amount": 105.0, "refund_id": "RF-12"},
                    "message": None,
                },
            },
            "Approved — refund RF-12",
            id="ran",
        ),
        pytest.param(
            {
                **APPROVED,
                "outcome": {
                    "outcome": "error",
                    "result": None,
                    "message": "Order A-1001 has only $80.00 left to refund (of $200.00).",
                },
            },
            "Approved — failed: Order A-1001 has only $80.00 left to refund (of $200.00).",
            id="failed",
        ),
        pytest.param({"status": Approval.Status.REJECTED, "action": Approval.Action.REJECT}, "Rejected", id="rejected"),
        pytest.param(
            {"status": Approval.Status.REJECTED, "action": Approval.Action.RESPOND},
            "Answered instead of running",
            id="responded",
        ),
        pytest.param({"status": Approval.Status.EXPIRED}, "Expired", id="expired"),
    ],
)
def test_the_status_says_what_came_of_the_decision(fields, text):
    assert approval_outcome_text(ApprovalFactory(**fields)) == text


def test_edits_read_proposed_then_approved():
    approval = ApprovalFactory(
        args={"order_id": "A-1001", "amount": 118.0}, edited_args={"order_id": "A-1001", "amount": 105}
    )
    changes = {c.name: (c.proposed, c.approved, c.changed) for c in approval_arg_changes(approval)}
    assert changes == {"order_id": ("A-1001", "A-1001", False), "amount": ("118", "105", True)}


def test_the_queue_filters_searches_and_sorts():
    carol = UserFactory(username="carol")
    small = ApprovalFactory(args={"order_id": "A-1", "amount": 120.0}, requested_by=carol)
    big = ApprovalFactory(args={"order_id": "B-2", "amount": 900.0})
    other = ApprovalFactory(tool_name="cancel_order", args={"order_id": "C-3"})
    Approval.objects.filter(pk=small.pk).update(created_at=timezone.now() - timedelta(hours=2))
    ApprovalFactory(status=Approval.Status.REJECTED)

    assert list(approvals_queue()) == [small, big, other]
    assert list(approvals_queue(tool="cancel_order")) == [other]
    assert list(approvals_queue(requester="CAROL")) == [small]
    assert list(approvals_queue(older_than="1h")) == [small]
    assert list(approvals_queue(search="B-2")) == [big]
    assert list(approvals_queue(sort="amount"))[:2] == [big, small]
    assert len(approvals_queue(status="all")) == 4


def test_a_queue_row_has_amount_customer_and_age_colours():
    approval = ApprovalFactory(args={"order_id": "A-1", "amount": 131.0}, requested_by=UserFactory(username="carol"))
    Approval.objects.filter(pk=approval.pk).update(created_at=timezone.now() - timedelta(hours=2))
    approval.refresh_from_db()
    row = queue_row(approval)
    assert (row.amount, row.customer, row.age_tone, row.status.text) == ("$131", "carol", "old", "Pending")
    assert row.expiry_text.startswith("in ")
