"""Routing: which reviewers a request is for (its tool's group and permission, and, once escalated,
its ``escalate_to`` group). One rule, in three shapes that must agree: for one user and one
approval (``approval_routed_to``), as a query for the lists (``approvals_routed_to``), and for a
socket that cannot query per frame (``ReviewerScope`` + ``approval_routing``).

Superusers pass, as they pass every permission check: an administrator is never locked out of a
request. Being routed a request is not enough to decide it: ``approval_decide_refusal`` also asks
for the reviewer permission and refuses the requester.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q, QuerySet

from approvals.models import Approval


@dataclass(frozen=True)
class ReviewerScope:
    """What routing needs to know about a reviewer: their groups and permissions."""

    superuser: bool
    groups: frozenset[str]
    permissions: frozenset[str]

    @classmethod
    def of(cls, user) -> ReviewerScope:
        if not (user and user.is_authenticated and user.is_active):
            return cls(False, frozenset(), frozenset())
        return cls(
            superuser=user.is_superuser,
            groups=frozenset(user.groups.values_list("name", flat=True)),
            permissions=frozenset(user.get_all_permissions()),
        )

    def admits(self, routing: dict) -> bool:
        """Whether a request with this ``approval_routing`` is for this reviewer."""
        if self.superuser:
            return True
        group, permission = routing.get("group") or "", routing.get("permission") or ""
        if (not group or group in self.groups) and (not permission or permission in self.permissions):
            return True
        escalate_to = routing.get("escalate_to") or ""
        return bool(routing.get("escalated") and escalate_to and escalate_to in self.groups)


def approval_routing(approval: Approval) -> dict:
    """The routing of ``approval`` as plain data (sockets carry it, then strip it)."""
    return {
        "group": approval.reviewer_group,
        "permission": approval.reviewer_permission,
        "escalate_to": approval.escalate_to,
        "escalated": approval.escalated_at is not None,
    }


def approval_routed_to(approval: Approval, user) -> bool:
    """Whether ``approval`` is for ``user`` (its group and permission, or its escalation group)."""
    return ReviewerScope.of(user).admits(approval_routing(approval))


def approvals_routed_to(approvals: QuerySet[Approval], user) -> QuerySet[Approval]:
    """``approvals`` without the requests that are not for ``user``: what lists show them."""
    scope = ReviewerScope.of(user)
    if scope.superuser:
        return approvals
    routed = (Q(reviewer_group="") | Q(reviewer_group__in=scope.groups)) & (
        Q(reviewer_permission="") | Q(reviewer_permission__in=scope.permissions)
    )
    escalated = Q(escalated_at__isnull=False) & ~Q(escalate_to="") & Q(escalate_to__in=scope.groups)
    return approvals.filter(routed | escalated)


def routing_refusal_text(approval: Approval) -> str:
    """Why a reviewer outside the routing may not decide ``approval``, in words."""
    needs = []
    if approval.reviewer_group:
        needs.append(f"in the “{approval.reviewer_group}” group")
    if approval.reviewer_permission:
        needs.append(f"with the “{approval.reviewer_permission}” permission")
    who = "reviewers " + " ".join(needs) if needs else "other reviewers"
    also = f" (and, since it was escalated, the “{approval.escalate_to}” group)" if approval.escalated_at else ""
    return f"Approval #{approval.pk} is for {who}{also}; you are not one of them. Ask one of them to decide it."
