"""Telling reviewers: live over the channel layer, and by email and an optional webhook for those
who do not have the queue open. All sent after commit, never inside a transaction; email and the
webhook from Celery tasks with retries (approvals/tasks.py), so a slow mail server or a failing
webhook never touches the decision path."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.urls import reverse

from anvia_project.channel_layer import group_send
from approvals.models import Approval, ApprovalEvent, ReviewerPreference
from approvals.reviewers import approval_routing

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
        "quorum": approval.quorum,
        "approvals": approval.approvers,
    }


def notify_reviewers(kind: str, approval: Approval) -> None:
    """``kind`` is ``approval.created``, ``approval.voted`` (one approval of a quorum),
    ``approval.escalated``, ``approval.decided`` or ``approval.expired``. The frame carries the
    request's ``routing``: each reviewer socket forwards it only to a reviewer it is for, without it."""
    try:
        frame = {"type": kind, "approval": approval_summary(approval), "routing": approval_routing(approval)}
        group_send(REVIEWERS_GROUP, frame)
    except Exception:
        # Reviewers refresh to the truth; a missed live update must not fail the decision.
        logger.warning("approval %s: could not notify reviewers of %s", approval.pk, kind, exc_info=True)


# ---- beyond the open page: email and a Slack-compatible webhook --------------------------------

EMAIL_CHANNEL = "email"
ESCALATION_EMAIL_CHANNEL = "escalation_email"
WEBHOOK_CHANNEL = "webhook"


def approval_link(approval: Approval) -> str:
    """The absolute address of the request's page. It only opens the page: deciding still needs a
    signed-in reviewer."""
    return settings.ANVIA_PUBLIC_URL + reverse("review:detail", args=[approval.pk])


def reviewer_email_enabled(user) -> bool:
    preference = ReviewerPreference.objects.filter(user=user).first()
    return preference is None or preference.email


def reviewer_email_set(*, user, enabled: bool) -> ReviewerPreference:
    preference, _ = ReviewerPreference.objects.update_or_create(user=user, defaults={"email": enabled})
    return preference


def approval_email_recipients(approval: Approval, *, group: str = "") -> list:
    """The reviewers who may decide ``approval`` (the one rule, ``approval_decide_refusal``), have an
    address, and have not turned email off (``group``: only its members). Never the requester: the
    rule refuses them."""
    from approvals.services import approval_decide_refusal  # services imports this module

    muted = ReviewerPreference.objects.filter(email=False).values("user_id")
    candidates = (
        get_user_model()
        .objects.filter(is_active=True, is_staff=True)
        .exclude(email="")
        .exclude(pk__in=muted)
        .order_by("pk")
    )
    if group:
        candidates = candidates.filter(groups__name=group)
    return [user for user in candidates if approval_decide_refusal(approval=approval, user=user) is None]


def _already_told(approval: Approval, channel: str) -> set:
    told: set = set()
    for data in ApprovalEvent.objects.filter(approval=approval, kind=ApprovalEvent.Kind.NOTIFIED).values_list(
        "data", flat=True
    ):
        if isinstance(data, dict) and data.get("channel") == channel:
            told.update(data.get("to") or [True])
    return told


def _record_told(approval: Approval, channel: str, to: Iterable) -> None:
    ApprovalEvent.objects.create(
        approval=approval, kind=ApprovalEvent.Kind.NOTIFIED, data={"channel": channel, "to": list(to)}
    )


def _request_summary(approval: Approval) -> str:
    requester = approval.requested_by.get_username() if approval.requested_by else "an agent run"
    return f"Approval #{approval.pk} is waiting: {approval.reason[:REASON_PREVIEW_CHARS]} (asked by {requester})"


def approval_email_reviewers(*, approval_id: int, escalation: bool = False) -> int:
    """Email each reviewer who may decide the request, once each (a retry skips those already
    emailed); nothing once it is no longer pending. ``escalation``: the members of its
    ``escalate_to`` group, once each, whether or not they were emailed of the request before.
    Returns how many were emailed now."""
    approval = Approval.objects.select_related("requested_by").filter(pk=approval_id).first()
    if approval is None or not approval.is_pending or (escalation and approval.escalated_at is None):
        return 0
    channel = ESCALATION_EMAIL_CHANNEL if escalation else EMAIL_CHANNEL
    told = _already_told(approval, channel)
    group = approval.escalate_to if escalation else ""
    recipients = [user for user in approval_email_recipients(approval, group=group) if user.pk not in told]
    if not recipients:
        return 0
    link = approval_link(approval)
    subject = f"Approval #{approval.pk} waiting: {approval.tool_name}"
    if escalation:
        subject = f"Escalated to {approval.escalate_to}: {subject}"
    body = (
        f"{_request_summary(approval)}.\n\n"
        f"Open it to approve or reject (you will be asked to sign in):\n{link}\n\n"
        "The link only opens the page; nothing is decided until you choose.\n"
        "To stop these emails, turn them off on your review settings page: "
        f"{settings.ANVIA_PUBLIC_URL}{reverse('review:settings')}\n"
    )
    sent: list[int] = []
    try:
        with get_connection() as connection:
            for user in recipients:
                # One message each: reviewers do not see each other's addresses.
                EmailMessage(subject, body, to=[user.email], connection=connection).send()
                sent.append(user.pk)
    finally:
        if sent:
            _record_told(approval, channel, sent)
    return len(sent)


def approval_post_webhook(*, approval_id: int) -> bool:
    """POST ``{"text": ...}`` (plain text with the link) to ``ANVIA_SLACK_WEBHOOK_URL``, once per
    request; raises on a failure so the task retries. ``False`` when there is nothing to send."""
    url = settings.ANVIA_SLACK_WEBHOOK_URL
    approval = Approval.objects.select_related("requested_by").filter(pk=approval_id).first()
    if not url or approval is None or not approval.is_pending or _already_told(approval, WEBHOOK_CHANNEL):
        return False
    if not url.startswith(("https://", "http://")):
        raise ValueError("ANVIA_SLACK_WEBHOOK_URL must be an http(s) URL.")
    text = f"{_request_summary(approval)}. Review it: {approval_link(approval)}"
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        url,
        data=json.dumps({"text": webhook_plain_text(text)}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=settings.ANVIA_WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
        response.read(1024)
    # Not the URL: a webhook URL is a secret.
    _record_told(approval, WEBHOOK_CHANNEL, [WEBHOOK_CHANNEL])
    return True


def webhook_plain_text(text: str) -> str:
    """Slack reads ``&``, ``<`` and ``>`` as markup (``<!channel>``, ``<url|label>``): escape them,
    so a model-written reason can neither ping a channel nor disguise a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
