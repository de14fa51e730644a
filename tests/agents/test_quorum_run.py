"""The two-person rule end to end: alice's $900 refund on A-1004 waits for two reviewers; one
approval leaves the run suspended, the second resumes it once and the refund is made once."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from agents.models import AgentRun, Message, RunEvent
from agents.selectors import timeline_item
from agents.services import run_execute
from approvals.errors import AlreadyVoted, SelfApprovalRefused
from approvals.models import Approval
from approvals.services import approval_decide
from shop.models import Refund
from tests.factories import OrderFactory, ReviewerFactory, UserFactory
from tests.support.chats import ask

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued(suspending):
    return suspending


@pytest.fixture
def alice():
    customer = UserFactory(username="alice")
    OrderFactory(number="A-1004", customer=customer, description="Roaster", total="900.00", status="delivered")
    return customer


def test_a_900_refund_runs_once_after_the_second_of_two_approvals(alice, queued):
    run = ask(alice, "refund order A-1004, $900")
    assert run_execute(run_id=run.pk).status == "suspended"
    approval = Approval.objects.get()
    assert (approval.quorum, approval.status, approval.args) == (2, "pending", {"amount": 900.0, "order_id": "A-1004"})
    assert "two reviewers" in approval.policy_rule
    customer_sees = [timeline_item(e.type, e.data) for e in RunEvent.objects.filter(run=run, type="approval_requested")]
    assert [item.text for item in customer_sees] == [
        "A staff member needs to approve this $900.00 refund; a second staff member must agree."
    ]

    bob, carol = ReviewerFactory(username="bob"), ReviewerFactory(username="carol")
    # Even were alice a reviewer, her own request would not count.
    alice.is_staff = True
    alice.save()
    alice.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    with pytest.raises(SelfApprovalRefused):
        approval_decide(approval_id=approval.pk, reviewer=type(alice).objects.get(pk=alice.pk), approved=True)
    approval_decide(approval_id=approval.pk, reviewer=bob, approved=True, reason="Receipt checked.")
    with pytest.raises(AlreadyVoted):
        approval_decide(approval_id=approval.pk, reviewer=bob, approved=True)
    assert queued == [str(run.pk)]  # the post only: one approval of two resumes nothing
    assert AgentRun.objects.get(pk=run.pk).status == "suspended"
    assert not Refund.objects.exists()

    approval_decide(approval_id=approval.pk, reviewer=carol, approved=True)
    assert queued == [str(run.pk), str(run.pk)]  # now, once

    assert run_execute(run_id=run.pk).status == "succeeded"
    assert [(r.order.number, r.amount) for r in Refund.objects.all()] == [("A-1004", 900)]
    assert "I refunded $900.00 for order A-1004" in Message.objects.get(run=run, role="assistant").content
    assert Approval.objects.get().approvers == ["bob", "carol"]


def test_one_rejection_of_the_two_refuses_the_refund(alice, queued):
    run = ask(alice, "refund order A-1004, $900")
    run_execute(run_id=run.pk)
    approval = Approval.objects.get()
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=True)
    approval_decide(approval_id=approval.pk, reviewer=ReviewerFactory(), approved=False, reason="Not delivered.")
    assert queued.count(str(run.pk)) == 2
    assert run_execute(run_id=run.pk).status == "succeeded"
    assert not Refund.objects.exists()
    assert "Not delivered." in Message.objects.get(run=run, role="assistant").content
