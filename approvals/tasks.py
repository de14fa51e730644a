"""Celery tasks of the approvals app: thin, each imports its service inside its body (the services
queue them after commit, so there is no import cycle)."""

from __future__ import annotations

from celery import shared_task

# A mail server or webhook that is down for a while: retried for about half an hour, then given up
# (the queue page and its live updates still show the request).
NOTIFY_RETRIES = 6
NOTIFY_RETRY_SECONDS = 30


@shared_task(name="approvals.expire_overdue")
def expire_overdue_approvals() -> int:
    from approvals.services import approvals_expire_overdue

    return approvals_expire_overdue()


@shared_task(name="approvals.escalate_overdue")
def escalate_overdue_approvals() -> int:
    from approvals.escalation import approvals_escalate_overdue

    return approvals_escalate_overdue()


@shared_task(
    name="approvals.email_reviewers",
    bind=True,
    max_retries=NOTIFY_RETRIES,
    default_retry_delay=NOTIFY_RETRY_SECONDS,
)
def email_reviewers(self, approval_id: int, escalation: bool = False) -> int:
    from approvals.notifications import approval_email_reviewers

    try:
        return approval_email_reviewers(approval_id=approval_id, escalation=escalation)
    except Exception as error:
        raise self.retry(exc=error, countdown=NOTIFY_RETRY_SECONDS * (2**self.request.retries)) from error


@shared_task(
    name="approvals.post_webhook",
    bind=True,
    max_retries=NOTIFY_RETRIES,
    default_retry_delay=NOTIFY_RETRY_SECONDS,
)
def post_webhook(self, approval_id: int) -> bool:
    from approvals.notifications import approval_post_webhook

    try:
        return approval_post_webhook(approval_id=approval_id)
    except Exception as error:
        raise self.retry(exc=error, countdown=NOTIFY_RETRY_SECONDS * (2**self.request.retries)) from error
