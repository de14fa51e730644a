"""What can go wrong when deciding an approval; each carries its HTTP status and API code.

The codes are part of the API contract, so spelled out rather than derived from class names.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.settings import api_settings

from anvia_project.errors import ApplicationError


class ApprovalError(ApplicationError):
    code = "approval_error"


class NotAReviewer(ApprovalError):
    status_code = 403
    code = "not_a_reviewer"


class SelfApprovalRefused(ApprovalError):
    status_code = 403
    code = "self_approval_refused"


class NotRoutedToReviewer(ApprovalError):
    """The tool names who may decide it (a group, a permission), and this reviewer is not one."""

    status_code = 403
    code = "not_routed_to_reviewer"


class AlreadyVoted(ApprovalError):
    """A request that needs several reviewers: this one already approved it."""

    status_code = 409
    code = "already_voted"


class AlreadyDecided(ApprovalError):
    """Somebody else decided first. ``approval`` is the row as that decision left it."""

    status_code = 409
    code = "already_decided"

    def __init__(self, approval):
        self.approval = approval
        who = approval.decided_by.get_username() if approval.decided_by else "the system"
        when = approval.decided_at.strftime("%Y-%m-%d %H:%M:%S UTC") if approval.decided_at else "earlier"
        super().__init__(f"Approval #{approval.pk} was already {approval.status} by {who} at {when}.")

    def body(self) -> dict[str, Any]:
        decided = self.approval
        return {
            **super().body(),
            "status": decided.status,
            "decided_by": decided.decided_by.get_username() if decided.decided_by else None,
            "decided_at": serializers.DateTimeField().to_representation(decided.decided_at),
        }


class ApprovalExpired(ApprovalError):
    status_code = 409
    code = "approval_expired"


class InvalidDecision(ApprovalError):
    """The decision itself is wrong; ``fields`` maps each field to what is wrong
    (``"response"``, ``"args.amount"``, or ``"args"`` for the args as a whole)."""

    status_code = 400

    def __init__(self, message: str, fields: dict[str, str]):
        super().__init__(message)
        self.fields = fields

    def body(self) -> dict[str, Any]:
        """``{"args.amount": msg, "args": msg}`` → ``{"args": {"amount": [msg]}}`` / ``{"args": [msg]}``."""
        errors: dict[str, Any] = {}
        for name, message in self.fields.items():
            field, _, argument = name.partition(".")
            current = errors.get(field)
            if argument:
                if isinstance(current, list):  # the field already has messages as a whole: keep them
                    current = {api_settings.NON_FIELD_ERRORS_KEY: current}
                errors[field] = current = current or {}
                current.setdefault(argument, []).append(message)
            elif isinstance(current, dict):
                current.setdefault(api_settings.NON_FIELD_ERRORS_KEY, []).append(message)
            else:
                errors.setdefault(field, []).append(message)
        return errors


class InvalidEditedArgs(InvalidDecision):
    """Edited args fail the tool's input schema."""


class ApprovalMismatch(ApprovalError):
    """The approval on record for this run + call id was asked for another call (another tool or
    other arguments): its decision must not act on this one."""

    status_code = 409
    code = "approval_mismatch"


class TooManyPendingApprovals(ApprovalError):
    """The user already has ``ANVIA_APPROVAL_MAX_PENDING_PER_USER`` approvals waiting for a reviewer."""

    status_code = 429
    code = "too_many_pending_approvals"


# The codes a decision can answer, for the API's documentation.
DECISION_ERROR_CODES = [
    cls.code
    for cls in (
        NotAReviewer,
        NotRoutedToReviewer,
        SelfApprovalRefused,
        AlreadyDecided,
        AlreadyVoted,
        ApprovalExpired,
        ApprovalError,
    )
]
