"""Reading approvals: the queries the API, the reviewer queue and the admin share."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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


def approvals_pending_with_arg(*, tool_name: str, name: str, value: Any) -> QuerySet[Approval]:
    """Pending requests for ``tool_name`` whose argument ``name`` is ``value``, oldest first."""
    return approvals_pending().filter(tool_name=tool_name, **{f"args__{name}": value})


@dataclass(frozen=True)
class PreviewShown:
    """A tool's preview as pages show it: warnings first, then labelled facts (all plain text)."""

    warnings: list[str]
    facts: list[tuple[str, str]]

    def __bool__(self) -> bool:
        return bool(self.warnings or self.facts)


def preview_shown(preview: Any) -> PreviewShown:
    """The stored preview (``ToolCall.preview()``'s shape) in words: warnings, then the facts."""
    if not isinstance(preview, dict):
        return PreviewShown([], [])
    warnings = preview.get("warnings") or []
    warnings = [str(w) for w in warnings] if isinstance(warnings, list) else [str(warnings)]
    facts = [
        (str(fact.get("name", "")).replace("_", " ").capitalize(), _fact(fact.get("value")))
        for fact in preview.get("facts") or []
        if isinstance(fact, dict)
    ]
    return PreviewShown(warnings, facts)


def _fact(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "—"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "; ".join(value) or "none"
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
