"""Routing: a tool names who may decide it (a group, a permission); each reviewer sees, decides and
hears of only the requests routed to them. One rule, in three shapes that must agree."""

from __future__ import annotations

import itertools

import pytest
from django.contrib.auth.models import Group, Permission
from django.core import mail
from django.utils import timezone

from approvals.errors import NotRoutedToReviewer
from approvals.models import Approval
from approvals.reviewers import ReviewerScope, approval_routed_to, approval_routing, approvals_routed_to
from approvals.services import approval_decide, approval_decide_refusal
from tests.factories import AdminFactory, ApprovalFactory, ReviewerFactory

pytestmark = pytest.mark.django_db

SECRET_REASON = "Refund <b>$900</b> for the finance-only order"


def in_group(user, name: str):
    user.groups.add(Group.objects.get_or_create(name=name)[0])
    return user


def with_permission(user, codename: str):
    user.user_permissions.add(Permission.objects.get(codename=codename))
    return type(user).objects.get(pk=user.pk)  # fresh: the permission cache is per instance


@pytest.fixture
def finance_request() -> Approval:
    return ApprovalFactory(reviewer_group="finance", reason=SECRET_REASON)


@pytest.fixture
def outsider():
    return ReviewerFactory(username="oscar")


@pytest.fixture
def member():
    return in_group(ReviewerFactory(username="fiona"), "finance")


def test_a_reviewer_outside_the_group_is_refused_saying_whom_it_is_for(finance_request, outsider, member):
    refusal = approval_decide_refusal(approval=finance_request, user=outsider)
    assert isinstance(refusal, NotRoutedToReviewer)
    assert refusal.status_code == 403
    assert str(refusal) == (
        f"Approval #{finance_request.pk} is for reviewers in the “finance” group; you are not one of them. "
        "Ask one of them to decide it."
    )
    with pytest.raises(NotRoutedToReviewer):
        approval_decide(approval_id=finance_request.pk, reviewer=outsider, approved=False)
    assert approval_decide(approval_id=finance_request.pk, reviewer=member, approved=True).status == "approved"


def test_the_api_answers_403_to_an_outsider_and_lists_only_routed_requests(finance_request, outsider, member, api_for):
    open_to_all = ApprovalFactory()
    as_outsider = api_for(outsider)

    listed = as_outsider.get("/api/approvals/?status=pending").json()
    assert [row["id"] for row in listed["results"]] == [open_to_all.pk]
    detail = as_outsider.get(f"/api/approvals/{finance_request.pk}/")
    assert detail.status_code == 403
    assert detail.json()["code"] == "not_routed_to_reviewer"
    assert SECRET_REASON not in detail.content.decode()
    decided = as_outsider.post(f"/api/approvals/{finance_request.pk}/decision/", {"approved": True}, format="json")
    assert decided.status_code == 403
    assert decided.json()["code"] == "not_routed_to_reviewer"
    assert Approval.objects.get(pk=finance_request.pk).is_pending

    as_member = api_for(member)
    assert {row["id"] for row in as_member.get("/api/approvals/").json()["results"]} == {
        finance_request.pk,
        open_to_all.pk,
    }
    assert as_member.get(f"/api/approvals/{finance_request.pk}/").status_code == 200


def test_the_queue_pages_never_show_an_outsider_the_request(finance_request, outsider, client):
    open_to_all = ApprovalFactory()
    client.force_login(outsider)

    queue = client.get("/review/").content.decode()
    assert SECRET_REASON not in queue
    assert "Refund &lt;b&gt;$900" not in queue
    assert f'data-approval-id="{open_to_all.pk}"' in queue
    assert f'data-approval-id="{finance_request.pk}"' not in queue
    pending = client.get("/review/pending.json").json()
    assert ([row["id"] for row in pending["approvals"]], pending["total"]) == ([open_to_all.pk], 1)
    everything = client.get("/review/?status=all").content.decode()
    assert f'data-approval-id="{finance_request.pk}"' not in everything

    detail = client.get(f"/review/{finance_request.pk}/")
    assert detail.status_code == 403
    page = detail.content.decode()
    assert "is for reviewers in the “finance” group" in page
    assert "Refund &lt;b&gt;$900" not in page
    posted = client.post(f"/review/{finance_request.pk}/", {"decision": "approve", "reason": ""})
    assert posted.status_code == 403
    bulk = client.post("/review/bulk/", {"decision": "approve", "ids": [finance_request.pk]}, follow=True)
    assert "you are not one of them" in bulk.content.decode()
    assert Approval.objects.get(pk=finance_request.pk).is_pending


def test_after_deciding_the_next_request_opened_is_one_routed_to_the_reviewer(finance_request, outsider, client):
    mine_to_decide = ApprovalFactory()
    following = ApprovalFactory()
    client.force_login(outsider)
    response = client.post(f"/review/{mine_to_decide.pk}/", {"decision": "reject", "reason": "no"})
    assert response.url == f"/review/{following.pk}/"


def test_the_admin_hides_it_from_an_outsider(finance_request, outsider, member, client):
    client.force_login(outsider)
    assert f"/{finance_request.pk}/change/" not in client.get("/admin/approvals/approval/").content.decode()
    assert client.get(f"/admin/approvals/approval/{finance_request.pk}/change/").status_code in (302, 404)
    client.force_login(member)
    assert client.get(f"/admin/approvals/approval/{finance_request.pk}/change/").status_code == 200


def test_a_permission_routes_too(outsider):
    approval = ApprovalFactory(reviewer_permission="shop.view_order")
    assert isinstance(approval_decide_refusal(approval=approval, user=outsider), NotRoutedToReviewer)
    clerk = with_permission(ReviewerFactory(), "view_order")
    assert approval_decide_refusal(approval=approval, user=clerk) is None


def test_superusers_are_never_locked_out(finance_request):
    admin = AdminFactory()
    assert approval_decide_refusal(approval=finance_request, user=admin) is None
    assert list(approvals_routed_to(Approval.objects.all(), admin)) == [finance_request]


def test_once_escalated_the_escalation_group_may_decide_too():
    approval = ApprovalFactory(reviewer_group="finance", escalate_to="managers", escalate_at=timezone.now())
    manager = in_group(ReviewerFactory(), "managers")
    assert isinstance(approval_decide_refusal(approval=approval, user=manager), NotRoutedToReviewer)
    Approval.objects.filter(pk=approval.pk).update(escalated_at=timezone.now())
    approval.refresh_from_db()
    assert approval_decide_refusal(approval=approval, user=manager) is None


def test_the_check_the_query_and_the_socket_scope_agree():
    """Every combination of routing and reviewer: the three shapes of the rule give one answer."""
    Group.objects.get_or_create(name="finance")
    Group.objects.get_or_create(name="managers")
    reviewers = [
        ReviewerFactory(),
        in_group(ReviewerFactory(), "finance"),
        in_group(ReviewerFactory(), "managers"),
        with_permission(in_group(ReviewerFactory(), "finance"), "view_order"),
        with_permission(ReviewerFactory(), "view_order"),
        AdminFactory(),
    ]
    approvals = [
        ApprovalFactory(
            reviewer_group=group,
            reviewer_permission=permission,
            escalate_to=escalate_to,
            escalated_at=timezone.now() if escalated else None,
        )
        for group, permission, escalate_to, escalated in itertools.product(
            ["", "finance"], ["", "shop.view_order"], ["", "managers"], [False, True]
        )
    ]
    for reviewer in reviewers:
        listed = set(approvals_routed_to(Approval.objects.all(), reviewer).values_list("pk", flat=True))
        scope = ReviewerScope.of(reviewer)
        for approval in approvals:
            one = approval_routed_to(approval, reviewer)
            assert (approval.pk in listed) == one == scope.admits(approval_routing(approval)), (
                reviewer.username,
                approval_routing(approval),
            )


def test_email_goes_only_to_the_reviewers_it_is_for(member, outsider, django_capture_on_commit_callbacks):
    from approvals.notifications import approval_email_reviewers

    Approval.objects.all().delete()
    member.email, outsider.email = "fiona@example.com", "oscar@example.com"
    member.save()
    outsider.save()
    approval = ApprovalFactory(reviewer_group="finance")
    assert approval_email_reviewers(approval_id=approval.pk) == 1
    assert [message.to for message in mail.outbox] == [["fiona@example.com"]]


def test_who_else_is_viewing_is_not_told_to_an_outsider(finance_request, outsider, member, client):
    client.force_login(member)
    assert client.post(f"/review/{finance_request.pk}/viewing/").status_code == 200
    client.force_login(outsider)
    response = client.post(f"/review/{finance_request.pk}/viewing/")
    assert response.status_code == 404
    assert response.json()["viewers"] == []
