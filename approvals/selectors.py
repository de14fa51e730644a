"""Reading approvals: the queries the API, the reviewer queue and the admin share."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from approvals.models import Approval, ApprovalEvent


def approval_list(*, status: str | None = None) -> QuerySet[Approval]:
    """Approvals newest first (ties by id, so pages are stable), with the users each row names.

    ``status`` (one of ``Approval.Status``) keeps only the approvals in that state.
    """
    approvals = Approval.objects.select_related("requested_by", "decided_by").order_by("-created_at", "-id")
    if status is not None:
        approvals = approvals.filter(status=status)
    return approvals


def approvals_pending() -> QuerySet[Approval]:
    """The reviewer queue: pending approvals, oldest first, as they expire in that order too."""
    return approval_list(status=Approval.Status.PENDING).order_by("created_at", "id")


def approval_get(*, approval_id: int) -> Approval:
    """One approval with its users and its event log (each event's actor loaded).

    Raises ``Approval.DoesNotExist`` for an unknown id.
    """
    events = ApprovalEvent.objects.select_related("actor").order_by("created_at", "id")
    return (
        Approval.objects.select_related("requested_by", "decided_by")
        .prefetch_related(Prefetch("events", queryset=events))
        .get(pk=approval_id)
    )
