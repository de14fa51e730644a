"""Escalation: a request pending past its tool's ``escalate_after`` is put to a second group once,
recorded as an event; the expiry stays the final answer."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.core import mail
from django.utils import timezone

from approvals import tasks
from approvals.errors import NotRoutedToReviewer
from approvals.escalation import approvals_escalate_overdue
from approvals.models import Approval, ApprovalEvent
from approvals.services import ApprovalRequest, approval_decide, approval_request, approvals_expire_overdue
from tests.factories import ApprovalFactory, ReviewerFactory, UserFactory

from .test_services import in_thread


def in_group(user, name: str):
    user.groups.add(Group.objects.get_or_create(name=name)[0])
    return user


def overdue(**kwargs) -> Approval:
    return ApprovalFactory(
        reviewer_group="support",
        escalate_to="managers",
        escalate_at=timezone.now() - timedelta(seconds=1),
        **kwargs,
    )


@pytest.mark.django_db
def test_the_request_asks_for_escalation_after_the_tools_delay():
    approval, _ = approval_request(
        request=ApprovalRequest(
            run_id="run-1",
            call_id="call_1",
            tool_name="refund_order",
            args={"order_id": "A-1004", "amount": 900.0},
            reason="Refund $900?",
            reviewer_group="support",
            escalate_after=600,
            escalate_to="managers",
        )
    )
    waited = approval.escalate_at - approval.created_at
    assert timedelta(seconds=599) < waited < timedelta(seconds=601)
    assert approvals_escalate_overdue() == 0  # not yet


@pytest.mark.django_db
def test_an_overdue_request_is_escalated_once_and_the_group_may_decide(django_capture_on_commit_callbacks):
    approval = overdue()
    manager = in_group(ReviewerFactory(), "managers")
    with pytest.raises(NotRoutedToReviewer, match="support"):
        approval_decide(approval_id=approval.pk, reviewer=manager, approved=True)

    with django_capture_on_commit_callbacks(execute=True):
        assert approvals_escalate_overdue() == 1
    assert approvals_escalate_overdue() == 0

    row = Approval.objects.get(pk=approval.pk)
    assert row.escalated_at is not None
    assert row.is_pending
    event = row.events.get(kind="escalated")
    assert event.data["to"] == "managers"
    assert approval_decide(approval_id=approval.pk, reviewer=manager, approved=True).status == "approved"


@pytest.mark.django_db
def test_decided_expired_and_unescalatable_requests_are_left_alone():
    ApprovalFactory(escalate_to="managers", escalate_at=timezone.now() - timedelta(seconds=1), status="approved")
    ApprovalFactory(escalate_at=timezone.now() - timedelta(seconds=1))  # no group to escalate to
    ApprovalFactory(escalate_to="managers", escalate_at=timezone.now() + timedelta(minutes=5))
    ApprovalFactory(
        escalate_to="managers",
        escalate_at=timezone.now() - timedelta(seconds=1),
        expires_at=timezone.now() - timedelta(seconds=1),
    )
    assert approvals_escalate_overdue() == 0
    assert not ApprovalEvent.objects.filter(kind="escalated").exists()


@pytest.mark.django_db
def test_the_expiry_stays_the_final_answer():
    approval = overdue()
    approvals_escalate_overdue()
    Approval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert approvals_expire_overdue() == 1
    row = Approval.objects.get(pk=approval.pk)
    assert row.status == "expired"
    assert [e.kind for e in row.events.all()] == ["escalated", "expired"]


@pytest.mark.django_db
def test_the_escalation_group_is_emailed_once_and_the_first_group_not_again(
    monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(tasks.email_reviewers, "delay", lambda *args: tasks.email_reviewers.apply(args=args))
    in_group(ReviewerFactory(username="sue", email="sue@example.com"), "support")
    in_group(ReviewerFactory(username="max", email="max@example.com"), "managers")
    ReviewerFactory(username="oscar", email="oscar@example.com")  # neither group
    with django_capture_on_commit_callbacks(execute=True):
        approval, _ = approval_request(
            request=ApprovalRequest(
                run_id="run-1",
                call_id="call_1",
                tool_name="refund_order",
                args={"order_id": "A-1004", "amount": 900.0},
                reason="Refund $900?",
                requested_by_id=UserFactory().pk,
                reviewer_group="support",
                escalate_after=0,
                escalate_to="managers",
            )
        )
    assert [message.to for message in mail.outbox] == [["sue@example.com"]]

    with django_capture_on_commit_callbacks(execute=True):
        assert approvals_escalate_overdue() == 1
    assert [message.to for message in mail.outbox[1:]] == [["max@example.com"]]
    assert mail.outbox[1].subject == f"Escalated to managers: Approval #{approval.pk} waiting: refund_order"
    assert tasks.email_reviewers.apply(args=(approval.pk, True)).result == 0  # a retry emails nobody twice


@pytest.mark.django_db
def test_a_manager_told_of_the_request_before_still_hears_it_was_escalated(
    monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(tasks.email_reviewers, "delay", lambda *args: tasks.email_reviewers.apply(args=args))
    in_group(ReviewerFactory(username="max", email="max@example.com"), "managers")
    with django_capture_on_commit_callbacks(execute=True):
        approval, _ = approval_request(
            request=ApprovalRequest(
                run_id="run-1",
                call_id="call_1",
                tool_name="refund_order",
                args={"order_id": "A-1004", "amount": 900.0},
                reason="Refund $900?",
                escalate_after=0,
                escalate_to="managers",
            )
        )
    with django_capture_on_commit_callbacks(execute=True):
        approvals_escalate_overdue()
    assert [m.subject for m in mail.outbox] == [
        f"Approval #{approval.pk} waiting: refund_order",
        f"Escalated to managers: Approval #{approval.pk} waiting: refund_order",
    ]


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_racing_escalate_each_request_exactly_once(monkeypatch):
    notified: list[int] = []
    monkeypatch.setattr("approvals.escalation.notify_reviewers", lambda kind, approval: notified.append(approval.pk))
    monkeypatch.setattr("approvals.escalation.approval_email_escalation", lambda **kwargs: None)
    for attempt in range(5):
        approvals = [overdue() for _ in range(5)]
        barrier = threading.Barrier(2)

        def sweep(barrier=barrier):
            barrier.wait()
            return approvals_escalate_overdue()

        runs = [in_thread(sweep) for _ in range(2)]
        for thread, _ in runs:
            thread.join(30)
        assert [r.get("error") for _, r in runs] == [None, None], runs
        assert sum(r["value"] for _, r in runs) == 5, f"attempt {attempt}"
        for approval in approvals:
            assert ApprovalEvent.objects.filter(approval=approval, kind="escalated").count() == 1
        assert sorted(notified) == sorted(a.pk for a in approvals)
        notified.clear()


def test_beat_runs_the_escalation_sweep_next_to_the_expiry():
    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"approvals.escalate_overdue", "approvals.expire_overdue"} <= schedule
    assert tasks.escalate_overdue_approvals.name == "approvals.escalate_overdue"
