from __future__ import annotations

from celery import shared_task

from approvals.services import approvals_expire_overdue


@shared_task(name="approvals.expire_overdue")
def expire_overdue_approvals() -> int:
    return approvals_expire_overdue()
