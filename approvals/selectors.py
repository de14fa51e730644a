"""Reading approvals: the queries the API, the reviewer queue and the admin share."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import F, Prefetch, Q, QuerySet
from django.utils import timezone
from django.utils.timesince import timeuntil

from approvals.arg_schema import arg_fields, arg_value_text
from approvals.models import Approval, ApprovalEvent
from approvals.reviewers import approvals_routed_to


def approval_list(*, status: str | None = None, reviewer=None) -> QuerySet[Approval]:
    """Approvals newest first (ties by id, so pages are stable), with the users each row names
    and who approved so far.

    ``status`` (one of ``Approval.Status``) keeps only the approvals in that state; ``reviewer``
    only the requests routed to that reviewer (``approvals.reviewers``).
    """
    approvals = (
        Approval.objects.select_related("requested_by", "decided_by")
        .prefetch_related("votes__reviewer")
        .order_by("-created_at", "-id")
    )
    if status is not None:
        approvals = approvals.filter(status=status)
    if reviewer is not None:
        approvals = approvals_routed_to(approvals, reviewer)
    return approvals


def approvals_pending(*, reviewer=None) -> QuerySet[Approval]:
    """The reviewer queue: pending approvals, oldest first, as they expire in that order too."""
    return approval_list(status=Approval.Status.PENDING, reviewer=reviewer).order_by("created_at", "id")


def approval_get(*, approval_id: int) -> Approval:
    """One approval with its users and its event log (each event's actor loaded).

    Raises ``Approval.DoesNotExist`` for an unknown id.
    """
    events = ApprovalEvent.objects.select_related("actor").order_by("created_at", "id")
    return (
        Approval.objects.select_related("requested_by", "decided_by")
        .prefetch_related(Prefetch("events", queryset=events), "votes__reviewer")
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
    facts = [(fact.get("name", ""), fact.get("value")) for fact in preview.get("facts") or [] if isinstance(fact, dict)]
    return PreviewShown(warnings, facts_shown(facts))


def facts_shown(facts: list[tuple[Any, Any]]) -> list[tuple[str, str]]:
    """Named values in words, labelled as a person reads them ("left_to_refund" → "Left to refund")."""
    return [(str(name).replace("_", " ").capitalize(), _fact(value)) for name, value in facts]


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


@dataclass(frozen=True)
class StatusShown:
    """An approval's status with what came of it, e.g. "Approved — failed: only $80 left";
    ``tone`` (pending, ok, bad, muted) picks the colour."""

    text: str
    tone: str

    def __str__(self) -> str:
        return self.text


OUTCOME_MESSAGE_CHARS = 160
DECIDED_WORDS = {
    Approval.Action.RESPOND: "Answered instead of running",
    Approval.Action.TERMINATE: "Run stopped",
}


def approval_outcome(approval: Approval) -> StatusShown:
    """The one wording of an approval's status and outcome, for the queue, detail, admin and API."""
    if approval.status == Approval.Status.PENDING:
        if approval.quorum > 1:
            return StatusShown(f"{len(approval.approvers)} of {approval.quorum} approvals", "pending")
        return StatusShown("Pending", "pending")
    if approval.status != Approval.Status.APPROVED:
        words = DECIDED_WORDS.get(approval.action) or approval.get_status_display()
        return StatusShown(words, "bad" if approval.status == Approval.Status.REJECTED else "muted")
    outcome = approval.outcome if isinstance(approval.outcome, dict) else None
    if outcome is None:
        return StatusShown("Approved — not run yet", "ok")
    kind = outcome.get("outcome")
    message = _short(str(outcome.get("message") or ""))
    if kind == "ran":
        made = _result_words(outcome.get("result"), approval.approved_args)
        return StatusShown(f"Approved — {made}" if made else "Approved — done", "ok")
    if kind in ("error", "invalid"):
        return StatusShown(f"Approved — failed: {message}" if message else "Approved — failed", "bad")
    if kind == "terminated":
        return StatusShown("Approved — the run was stopped first", "muted")
    return StatusShown(f"Approved — not run: {message}" if message else "Approved — not run", "muted")


def approval_outcome_text(approval: Approval) -> str:
    return approval_outcome(approval).text


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= OUTCOME_MESSAGE_CHARS else text[: OUTCOME_MESSAGE_CHARS - 1] + "…"


def _result_words(result: Any, args: Any) -> str:
    """What a run made, by the ids in its result the call did not already name ("refund RF-12")."""
    if isinstance(result, str):
        return _short(result)
    if not isinstance(result, dict):
        return ""
    made = [f"{key.removesuffix('_id').replace('_', ' ')} {value}" for key, value in result_ids(result, args)]
    return _short(", ".join(made))


def result_ids(result: Any, args: Any) -> list[tuple[str, str]]:
    """The ids a tool's result adds to its call, by key: each ``*_id`` whose value the call's
    arguments did not already name (``[("refund_id", "RF-12")]``)."""
    if not isinstance(result, dict):
        return []
    known = set(map(str, args.values())) if isinstance(args, dict) else set()
    return [
        (key, str(value))
        for key, value in sorted(result.items())
        if key.endswith("_id") and isinstance(value, str | int) and str(value) not in known
    ]


@dataclass(frozen=True)
class ArgChange:
    """One argument as proposed, as approved, and whether the reviewer changed it."""

    name: str
    proposed: str
    approved: str

    @property
    def changed(self) -> bool:
        return self.proposed != self.approved


def approval_arg_changes(approval: Approval) -> list[ArgChange]:
    """Every argument proposed → approved, in the schema's order (then the rest, by name)."""
    fields = {field.name: field for field in arg_fields(approval.input_schema) or []}
    proposed = approval.args if isinstance(approval.args, dict) else {}
    approved = approval.approved_args if isinstance(approval.approved_args, dict) else {}
    names = [name for name in fields if name in proposed or name in approved]
    names += sorted((set(proposed) | set(approved)) - set(names))

    def shown(values: dict, name: str) -> str:
        if name not in values:
            return "(none)"
        value = values[name]
        if isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        return arg_value_text(value)

    return [ArgChange(name, shown(proposed, name), shown(approved, name)) for name in names]


QUEUE_SORTS = {
    "oldest": ("created_at", "id"),
    "newest": ("-created_at", "-id"),
    "expiring": ("expires_at", "id"),
    "amount": (F("args__amount").desc(nulls_last=True), "created_at", "id"),
}
QUEUE_AGES = {"1h": timedelta(hours=1), "4h": timedelta(hours=4), "1d": timedelta(days=1)}
STATUS_ALL = "all"


def approvals_queue(
    *,
    status: str = Approval.Status.PENDING,
    tool: str = "",
    requester: str = "",
    older_than: str = "",
    search: str = "",
    sort: str = "oldest",
    reviewer=None,
) -> QuerySet[Approval]:
    """The reviewer queue filtered and sorted; unknown filter values are ignored.

    ``status`` is one of ``Approval.Status`` or ``"all"``; ``older_than`` one of ``QUEUE_AGES``;
    ``search`` matches the reason, the tool, the requester and the arguments' text.
    """
    approvals = approval_list(reviewer=reviewer)
    if status in Approval.Status.values:
        approvals = approvals.filter(status=status)
    if tool:
        approvals = approvals.filter(tool_name=tool)
    if requester:
        approvals = approvals.filter(requested_by__username__iexact=requester)
    if older_than in QUEUE_AGES:
        approvals = approvals.filter(created_at__lte=timezone.now() - QUEUE_AGES[older_than])
    for word in search.split()[:5]:
        approvals = approvals.filter(
            Q(reason__icontains=word)
            | Q(tool_name__icontains=word)
            | Q(requested_by__username__icontains=word)
            | Q(args__icontains=word)
        )
    return approvals.order_by(*QUEUE_SORTS.get(sort, QUEUE_SORTS["oldest"]))


def approval_tool_names() -> list[str]:
    return list(Approval.objects.order_by("tool_name").values_list("tool_name", flat=True).distinct())


def approval_next_pending(*, reviewer, after: Approval) -> Approval | None:
    """The oldest pending request ``reviewer`` may decide other than ``after``: what opens next."""
    candidates = approvals_pending(reviewer=reviewer).exclude(pk=after.pk).exclude(requested_by=reviewer)
    return candidates.filter(created_at__gte=after.created_at).first() or candidates.first()


@dataclass(frozen=True)
class QueueRow:
    """What a queue row shows of an approval beyond its fields."""

    approval: Approval
    amount: str
    customer: str
    status: StatusShown
    age_tone: str  # fresh, waiting, old
    expiry_text: str
    expiry_tone: str  # "", soon, overdue


AMOUNT_KEYS = ("amount", "total", "price")
CUSTOMER_KEYS = ("customer", "customer_id", "customer_email", "email")
CUSTOMER_FACTS = ("customer", "customer_email")


def queue_row(approval: Approval, *, now: datetime | None = None) -> QueueRow:
    now = now or timezone.now()
    args = approval.args if isinstance(approval.args, dict) else {}
    amount = next((args[key] for key in AMOUNT_KEYS if isinstance(args.get(key), int | float)), None)
    facts = {
        str(fact.get("name")): fact.get("value")
        for fact in (approval.preview or {}).get("facts", [])
        if isinstance(approval.preview, dict) and isinstance(fact, dict)
    }
    customer = next((str(args[key]) for key in CUSTOMER_KEYS if args.get(key)), "") or next(
        (str(facts[key]) for key in CUSTOMER_FACTS if facts.get(key)), ""
    )
    if not customer and approval.requested_by:
        customer = approval.requested_by.get_username()
    waited = now - approval.created_at
    age_tone = "old" if waited >= timedelta(hours=1) else "waiting" if waited >= timedelta(minutes=15) else "fresh"
    expiry_text, expiry_tone = "", ""
    if approval.is_pending:
        left = approval.expires_at - now
        if left <= timedelta(0):
            expiry_text, expiry_tone = "overdue", "overdue"
        else:
            expiry_text = "in " + timeuntil(approval.expires_at, now, depth=1)
            lifetime = approval.expires_at - approval.created_at
            expiry_tone = "soon" if left <= max(timedelta(minutes=30), lifetime / 4) else ""
    return QueueRow(
        approval=approval,
        amount=arg_value_text(amount, money=True) if amount is not None else "",
        customer=customer,
        status=approval_outcome(approval),
        age_tone=age_tone,
        expiry_text=expiry_text,
        expiry_tone=expiry_tone,
    )
