"""Telling reviewers over the channel layer. Sent after commit, never inside a transaction."""

from __future__ import annotations

import logging

from anvia_project.channel_layer import group_send
from approvals.models import Approval

logger = logging.getLogger("anvia.approvals")

REVIEWERS_GROUP = "approval_reviewers"
REASON_PREVIEW_CHARS = 300


def approval_summary(approval: Approval) -> dict:
    """The small payload every reviewer socket receives; the args stay on the detail page."""
    return {
        "id": approval.pk,
        "status": approval.status,
        "tool_name": approval.tool_name,
        "reason": approval.reason[:REASON_PREVIEW_CHARS],
        "requested_by": approval.requested_by.get_username() if approval.requested_by else None,
        "created_at": approval.created_at.isoformat(),
        "decided_by": approval.decided_by.get_username() if approval.decided_by else None,
        "decided_at": approval.decided_at.isoformat() if approval.decided_at else None,
        "decision_reason": approval.decision_reason[:REASON_PREVIEW_CHARS],
    }


def notify_reviewers(kind: str, approval: Approval) -> None:
    """``kind`` is ``approval.created``, ``approval.decided`` or ``approval.expired``."""
    try:
        group_send(REVIEWERS_GROUP, {"type": kind, "approval": approval_summary(approval)})
    except Exception:
        # Reviewers refresh to the truth; a missed live update must not fail the decision.
        logger.warning("approval %s: could not notify reviewers of %s", approval.pk, kind, exc_info=True)
