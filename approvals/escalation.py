"""Escalation: a request still pending past its tool's ``escalate_after`` is also put to the
``escalate_to`` group, once. It changes who may decide and who is told, never the outcome: the
expiry stays the final answer."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals.models import Approval, ApprovalEvent
from approvals.notifications import notify_reviewers

logger = logging.getLogger("anvia.approvals")


def approval_escalate(*, approval_id: int) -> bool:
    """Escalate one pending request whose ``escalate_at`` has passed. ``True`` if this call did:
    one conditional update, so two sweeps racing escalate (and notify) it exactly once."""
    now = timezone.now()
    with transaction.atomic():
        escalated = (
            Approval.objects.filter(
                pk=approval_id,
                status=Approval.Status.PENDING,
                escalated_at__isnull=True,
                escalate_at__lte=now,
                expires_at__gt=now,
            )
            .exclude(escalate_to="")
            .update(escalated_at=now)
        )
        if not escalated:
            return False
        approval = Approval.objects.select_related("requested_by", "decided_by").get(pk=approval_id)
        ApprovalEvent.objects.create(
            approval=approval,
            kind=ApprovalEvent.Kind.ESCALATED,
            data={"to": approval.escalate_to, "after_seconds": round((now - approval.created_at).total_seconds())},
        )
        # The group's members may decide it now: their queues gain the row, and each member gets
        # the escalation email (even one told of the request before: it is still waiting).
        transaction.on_commit(lambda: notify_reviewers("approval.escalated", approval))
        transaction.on_commit(lambda: approval_email_escalation(approval_id=approval_id), robust=True)
    logger.info("approval escalated id=%s run=%s to=%s", approval_id, approval.run_id, approval.escalate_to)
    return True


def approval_email_escalation(*, approval_id: int) -> None:
    """Queue the escalation email (a Celery task with retries), where reviewer emails are on."""
    from approvals.tasks import email_reviewers

    if settings.ANVIA_REVIEWER_NOTIFICATIONS:
        email_reviewers.delay(approval_id, True)


def approvals_escalate_overdue(*, limit: int = 1000) -> int:
    """Escalate every pending request past its ``escalate_at`` (the beat task). Returns how many."""
    now = timezone.now()
    due = (
        Approval.objects.filter(
            status=Approval.Status.PENDING, escalated_at__isnull=True, escalate_at__lte=now, expires_at__gt=now
        )
        .exclude(escalate_to="")
        .order_by("escalate_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(approval_escalate(approval_id=pk) for pk in list(due))
