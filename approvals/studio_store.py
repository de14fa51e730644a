"""Studio's approvals as this app's ``Approval`` rows: ``Studio([agent], store=ApprovalsStore())``.

Requests go through the approval runtime (``approval_request``), so they show in the Django admin
and the reviewer queue like any other (with the tool's preview); Studio decides them as the
``studio`` user through ``approval_decide`` (approve, reject, respond or terminate), and a decision
made in the admin wakes the waiting Studio run too. A Studio run is not an ``AgentRun``: its run id
names no run of the app, so the app's resume-on-decision never picks its approvals up.
"""

from __future__ import annotations

import threading
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection, connections, transaction
from django.db.models import QuerySet

from anvia.studio.store import (
    ActingUser,
    Action,
    AlreadyDecided,
    ApprovalNotFound,
    ApprovalRecord,
    DecisionRefused,
    InvalidDecision,
    StoreError,
)
from anvia.studio.store import ApprovalRequest as StudioRequest
from approvals.errors import AlreadyDecided as AlreadyDecidedError
from approvals.errors import ApprovalError, ApprovalExpired, NotAReviewer, SelfApprovalRefused
from approvals.errors import InvalidDecision as InvalidDecisionError
from approvals.models import Approval
from approvals.services import (
    ApprovalRequest,
    approval_cancel,
    approval_decide,
    approval_record_outcome,
    approval_request,
    approval_wait,
)

REVIEWER_USERNAME = "studio"
# What Studio's request and the approval runtime's request both carry, under the same names.
SHARED_REQUEST_FIELDS = (
    "run_id",
    "call_id",
    "tool_name",
    "args",
    "reason",
    "reject_message",
    "agent_name",
    "input_schema",
    "preview",
)


@transaction.atomic
def studio_reviewer_ensure():
    """The ``studio`` user every Studio decision is attributed to: staff, allowed to decide,
    and unable to log in to the app (it has no password)."""
    User = get_user_model()
    reviewer, created = User.objects.get_or_create(
        username=REVIEWER_USERNAME, defaults={"is_staff": True, "is_active": True}
    )
    if created:
        reviewer.set_unusable_password()
        reviewer.save(update_fields=["password"])
    elif not (reviewer.is_staff and reviewer.is_active):
        reviewer.is_staff = reviewer.is_active = True
        reviewer.save(update_fields=["is_staff", "is_active"])
    reviewer.user_permissions.add(
        Permission.objects.get(content_type__app_label="approvals", codename="decide_approval")
    )
    # A fresh instance: the one above may have cached its permissions before the grant.
    return User.objects.get(pk=reviewer.pk)


def studio_acting_users() -> QuerySet:
    """Who a developer can chat as in Studio: active users but the reviewer (nobody decides their
    own request), customers first."""
    User = get_user_model()
    return (
        User.objects.filter(is_active=True)
        .exclude(username=REVIEWER_USERNAME)
        .order_by("is_staff", "is_superuser", User.USERNAME_FIELD)
    )


class ApprovalsStore:
    """Anvia Studio's ``ApprovalStore`` on this app's approval runtime. It answers only for the
    requests it recorded itself; the app's own approvals are not Studio's to list or decide."""

    reviewer = REVIEWER_USERNAME

    def __init__(self) -> None:
        self._ids: set[int] = set()
        self._lock = threading.Lock()

    def __str__(self) -> str:
        settings = connection.settings_dict
        engine = settings["ENGINE"].rsplit(".", 1)[-1]
        where = f" on {settings['HOST']}" if settings.get("HOST") else ""
        return f"as the approvals app's records ({engine} {settings['NAME']}{where}): the Django admin shows them"

    def request(self, request: StudioRequest) -> ApprovalRecord:
        try:
            approval, _ = approval_request(
                request=ApprovalRequest(
                    **{name: getattr(request, name) for name in SHARED_REQUEST_FIELDS},
                    requested_by_id=int(request.requested_by.id) if request.requested_by else None,
                )
            )
        except ApprovalError as error:
            raise _store_error(error) from error
        with self._lock:
            self._ids.add(approval.pk)
        return self.get(approval.pk)

    def get(self, approval_id: int) -> ApprovalRecord:
        approval = self._rows().filter(pk=approval_id).first()
        if approval is None:
            raise ApprovalNotFound(f"There is no Studio approval #{approval_id}.")
        return _record(approval)

    def pending(self) -> list[ApprovalRecord]:
        rows = self._rows().filter(status=Approval.Status.PENDING).order_by("created_at", "id")
        return [_record(approval) for approval in rows]

    def decide(
        self,
        approval_id: int,
        *,
        action: Action | None = None,
        reason: str = "",
        response: str = "",
        approved: bool | None = None,
    ) -> ApprovalRecord:
        self.get(approval_id)
        try:
            approval_decide(
                approval_id=approval_id,
                reviewer=studio_reviewer_ensure(),
                approved=approved,
                action=action,
                reason=reason,
                response=response,
            )
        except ApprovalError as error:
            raise _store_error(error) from error
        return self.get(approval_id)

    def wait(self, approval_id: int, timeout: float) -> ApprovalRecord:
        self.get(approval_id)
        approval_wait(approval_id=approval_id, timeout=timeout)
        return self.get(approval_id)

    def cancel(self, approval_id: int, *, reason: str) -> ApprovalRecord:
        self.get(approval_id)
        approval_cancel(approval_id=approval_id, reason=reason)
        return self.get(approval_id)

    def record_outcome(self, approval_id: int, outcome: dict[str, Any]) -> None:
        self.get(approval_id)
        approval_record_outcome(approval_id=approval_id, outcome=outcome)

    def users(self) -> list[ActingUser]:
        return [
            ActingUser(id=user.pk, label=user.get_username(), note="staff" if user.is_staff else "")
            for user in studio_acting_users()
        ]

    def thread_done(self) -> None:
        """Close the database connections Studio's threads opened (the main thread keeps its own)."""
        if threading.current_thread() is not threading.main_thread():
            connections.close_all()

    def _rows(self) -> QuerySet:
        with self._lock:
            ids = list(self._ids)
        return Approval.objects.filter(pk__in=ids).select_related("requested_by", "decided_by")


def _record(approval: Approval) -> ApprovalRecord:
    return ApprovalRecord(
        id=approval.pk,
        run_id=approval.run_id,
        call_id=approval.call_id,
        tool_name=approval.tool_name,
        args=approval.args,
        reason=approval.reason,
        reject_message=approval.reject_message,
        agent_name=approval.agent_name,
        requested_by=approval.requested_by.get_username() if approval.requested_by else None,
        status=approval.status,
        created_at=approval.created_at.timestamp(),
        decided_by=approval.decided_by.get_username() if approval.decided_by else None,
        decision_reason=approval.decision_reason,
        decided_at=approval.decided_at.timestamp() if approval.decided_at else None,
        edited_args=approval.edited_args,
        preview=approval.preview,
        action=approval.action,
        response=approval.response,
    )


def _store_error(error: ApprovalError) -> StoreError:
    if isinstance(error, InvalidDecisionError):
        refused = InvalidDecision(str(error), field=next(iter(error.fields), None))
        refused.status = error.status_code
        return refused
    kind = {
        AlreadyDecidedError: AlreadyDecided,
        ApprovalExpired: AlreadyDecided,
        NotAReviewer: DecisionRefused,
        SelfApprovalRefused: DecisionRefused,
    }.get(type(error), StoreError)
    refused = kind(str(error))
    refused.status = error.status_code
    return refused
