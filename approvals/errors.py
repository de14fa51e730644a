"""What can go wrong when deciding an approval; each maps to one HTTP status."""

from __future__ import annotations


class ApprovalError(Exception):
    status_code = 400


class NotAReviewer(ApprovalError):
    status_code = 403


class SelfApprovalRefused(ApprovalError):
    status_code = 403


class AlreadyDecided(ApprovalError):
    """Somebody else decided first. ``approval`` is the row as that decision left it."""

    status_code = 409

    def __init__(self, approval):
        self.approval = approval
        who = approval.decided_by.get_username() if approval.decided_by else "the system"
        when = approval.decided_at.strftime("%Y-%m-%d %H:%M:%S UTC") if approval.decided_at else "earlier"
        super().__init__(f"Approval #{approval.pk} was already {approval.status} by {who} at {when}.")


class ApprovalExpired(ApprovalError):
    status_code = 409


class InvalidEditedArgs(ApprovalError):
    """Edited args fail the tool's input schema; ``fields`` maps each field to what is wrong."""

    status_code = 400

    def __init__(self, message: str, fields: dict[str, str]):
        super().__init__(message)
        self.fields = fields


class ApprovalMismatch(ApprovalError):
    """The approval on record for this run + call id was asked for another call (another tool or
    other arguments): its decision must not act on this one."""

    status_code = 409


class TooManyPendingApprovals(ApprovalError):
    """The user already has ``ANVIA_APPROVAL_MAX_PENDING_PER_USER`` approvals waiting for a reviewer."""

    status_code = 429
