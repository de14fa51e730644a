"""The reviewer queue (``/review/``) and one approval's page, where a reviewer decides."""

from __future__ import annotations

import json
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from approvals.errors import AlreadyDecided, ApprovalError, ApprovalExpired
from approvals.forms import DecisionForm, GrantForm, arg_input_name, grant_offer
from approvals.models import Approval
from approvals.notifications import approval_summary
from approvals.presence import VIEWING_REFRESH_SECONDS, approval_viewing, approval_viewing_stopped
from approvals.reviewers import approval_routed_to, routing_refusal_text
from approvals.selectors import (
    QUEUE_AGES,
    QUEUE_SORTS,
    STATUS_ALL,
    approval_arg_changes,
    approval_get,
    approval_next_pending,
    approval_outcome,
    approval_tool_names,
    approvals_pending,
    approvals_queue,
    facts_shown,
    preview_shown,
    queue_row,
)
from approvals.services import approval_decide_refusal, approvals_decide_each, reviewer_can_decide

QUEUE_LIMIT = 500
DONE = {
    Approval.Action.APPROVE: "Approved",
    Approval.Action.REJECT: "Rejected",
    Approval.Action.RESPOND: "Answered instead of",
    Approval.Action.TERMINATE: "Stopped the run of",
}


def reviewer_required(view):
    """Anonymous visitors go to the login page; signed-in non-reviewers get a 403 page saying why."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not reviewer_can_decide(request.user):
            return render(request, "approvals/forbidden.html", status=403)
        return view(request, *args, **kwargs)

    return wrapper


QUEUE_FILTERS = ("status", "tool", "requester", "older_than", "q", "sort")
BULK_REASONS = {True: "Approved in bulk from the review queue", False: "Rejected in bulk from the review queue"}


@require_GET
@reviewer_required
def approval_queue(request: HttpRequest) -> HttpResponse:
    chosen = {name: request.GET.get(name, "").strip()[:200] for name in QUEUE_FILTERS}
    chosen["status"] = chosen["status"] or Approval.Status.PENDING
    queue = approvals_queue(
        status=chosen["status"],
        tool=chosen["tool"],
        requester=chosen["requester"],
        older_than=chosen["older_than"],
        search=chosen["q"],
        sort=chosen["sort"],
        reviewer=request.user,
    )
    now = timezone.now()
    rows = [queue_row(approval, now=now) for approval in queue[:QUEUE_LIMIT]]
    # A reviewer cannot decide their own requests: they wait apart, for someone else.
    mine = [row for row in rows if row.approval.requested_by_id == request.user.pk]
    theirs = [row for row in rows if row.approval.requested_by_id != request.user.pk]
    filtered = any(chosen[name] for name in ("tool", "requester", "older_than", "q")) or (
        chosen["status"] != Approval.Status.PENDING
    )
    return render(
        request,
        "approvals/queue.html",
        {
            "rows": theirs,
            "mine": mine,
            "approvals": [row.approval for row in theirs],
            "total": approvals_pending(reviewer=request.user).count(),
            "shown": len(rows),
            "chosen": chosen,
            "filtered": filtered,
            "live": chosen["status"] == Approval.Status.PENDING and not filtered,
            "statuses": [*Approval.Status.choices, (STATUS_ALL, "All")],
            "status_label": dict([*Approval.Status.choices, (STATUS_ALL, "All")]).get(chosen["status"], "all"),
            "tools": approval_tool_names(),
            "ages": [("", "Any age"), *((key, f"Older than {key}") for key in QUEUE_AGES)],
            "sorts": [(key, SORT_WORDS[key]) for key in QUEUE_SORTS],
        },
    )


SORT_WORDS = {
    "oldest": "Oldest first",
    "newest": "Newest first",
    "expiring": "Expiring soonest",
    "amount": "Largest amount",
}


@require_POST
@reviewer_required
def approval_queue_bulk(request: HttpRequest) -> HttpResponse:
    """Approve or reject the ticked rows, each through ``approval_decide``; each failure is named."""
    decision = request.POST.get("decision")
    ids = [int(value) for value in request.POST.getlist("ids") if value.isdigit()]
    if decision not in ("approve", "reject") or not ids:
        messages.error(request, "Tick the requests to decide, then choose Approve selected or Reject selected.")
        return redirect("review:queue")
    approved = decision == "approve"
    reason = request.POST.get("reason", "").strip()[:2000] or BULK_REASONS[approved]
    results = approvals_decide_each(approval_ids=ids, reviewer=request.user, approved=approved, reason=reason)
    done = [result.approval_id for result in results if result.decided is not None and not result.decided.is_pending]
    for result in results:
        if result.decided is not None and result.decided.is_pending:  # one approval of several
            status = approval_outcome(result.decided)
            messages.success(request, f"Approved #{result.approval_id}: {status}; it needs another reviewer.")
    if done:
        verb = "Approved" if approved else "Rejected"
        messages.success(request, f"{verb} {len(done)}: " + ", ".join(f"#{pk}" for pk in done) + ".")
    for result in results:
        if result.error is not None:
            already = isinstance(result.error, AlreadyDecided | ApprovalExpired)
            text = str(result.error) if already else f"Approval #{result.approval_id}: {result.error}"
            messages.error(request, text)
    return redirect("review:queue")


@require_GET
@reviewer_required
def approval_queue_json(request: HttpRequest) -> JsonResponse:
    """The queue as the websocket describes it, so the page can catch up after (re)connecting."""
    pending = approvals_pending(reviewer=request.user)
    now = timezone.now()
    approvals = []
    for approval in pending[:QUEUE_LIMIT]:
        row = queue_row(approval, now=now)
        approvals.append(
            {
                **approval_summary(approval),
                "outcome_text": row.status.text,
                "mine": approval.requested_by_id == request.user.pk,
                "amount": row.amount,
                "customer": row.customer,
            }
        )
    return JsonResponse({"approvals": approvals, "total": pending.count()})


@require_http_methods(["GET", "POST"])
@reviewer_required
def approval_detail(request: HttpRequest, approval_id: int) -> HttpResponse:
    try:
        approval = approval_get(approval_id=approval_id)
    except Approval.DoesNotExist:
        raise Http404(f"No approval #{approval_id}.") from None
    if not approval_routed_to(approval, request.user):
        # Never shown to a reviewer it is not for; the page says whom it is for.
        return render(request, "approvals/not_routed.html", {"why": routing_refusal_text(approval)}, status=403)
    if request.method == "POST":
        return _decide(request, approval)
    return _render_detail(request, approval)


def _decide(request: HttpRequest, approval: Approval) -> HttpResponse:
    form = DecisionForm(request.POST, approval=approval)
    if not form.is_valid():
        return _render_invalid(request, approval, form)
    grant = None
    if request.POST.get("grant") == "on":
        grant_form = GrantForm(request.POST, approval=approval)
        if not grant_form.is_valid():
            return _render_detail(
                request, approval, form=_as_typed(request), error=grant_form.first_error(), status=400
            )
        grant = grant_form.terms()
    try:
        decided = form.decide(request.user, grant=grant)
    except ApprovalError as error:
        return _render_detail(
            request,
            approval_get(approval_id=approval.pk),
            form=_as_typed(request),
            error=str(error),
            field_errors=getattr(error, "fields", None) or {},
            status=error.status_code,
        )
    edited = " with edited arguments" if decided.edited_args is not None else ""
    given = decided.grants_given.first() if grant else None
    granted = f" Granted #{given.pk} to {decided.requested_by.get_username()}." if given else ""
    if decided.is_pending:  # one approval of several
        messages.success(request, f"Approved #{decided.pk} {decided.tool_name}: {approval_outcome(decided)}.")
    else:
        messages.success(request, f"{DONE[form.action]} #{decided.pk} {decided.tool_name}{edited}.{granted}")
    following = approval_next_pending(reviewer=request.user, after=decided)
    if following is None:
        return redirect("review:queue")
    return redirect("review:detail", approval_id=following.pk)


def _render_invalid(request: HttpRequest, approval: Approval, form: DecisionForm) -> HttpResponse:
    if "edited_args" in form.errors:
        problem = form.errors["edited_args"][0]
        return _render_detail(
            request,
            approval,
            form=_as_typed(request),
            error=(
                f"The edited arguments could not be read. {problem} "
                "Fix them, or empty the box to approve the call as requested."
            ),
            field_errors={"edited_args": problem},
            status=400,
        )
    if form.arg_errors:
        return _render_detail(
            request,
            approval,
            form=_as_typed(request),
            error="The edited arguments are not valid: " + " ".join(form.arg_errors.values()),
            field_errors={f"args.{name}": problem for name, problem in form.arg_errors.items()},
            status=400,
        )
    first = next(iter(form.errors.values()))[0]
    confirm_drop = form.data.get("decision") == "reject" and "__all__" in form.errors
    return _render_detail(
        request, approval, form=_as_typed(request), error=first, status=400, confirm_drop_edits=confirm_drop
    )


GRANT_FIELDS = ("grant", "grant_hours", "grant_uses", "grant_max_total")


def _as_typed(request: HttpRequest) -> dict[str, Any]:
    """What the reviewer typed, shown again with the error."""
    names = ("reason", "response", "edited_args")
    typed = {field: request.POST.get(field, "") for field in names}
    typed.update({name: value for name, value in request.POST.items() if name.startswith("arg__")})
    typed.update({name: request.POST.get(name, "") for name in GRANT_FIELDS if name in request.POST})
    typed["grant_match"] = request.POST.getlist("grant_match")
    return typed


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _excerpt(approval: Approval) -> list[dict[str, str]]:
    # Stored JSON written by the agents app: tolerate shapes other than {role, content}.
    entries = approval.conversation_excerpt if isinstance(approval.conversation_excerpt, list) else []
    rows = []
    for item in entries:
        role, content = (item.get("role", ""), item.get("content", "")) if isinstance(item, dict) else ("", item)
        rows.append(
            {"role": str(role or "message"), "content": content if isinstance(content, str) else _pretty_json(content)}
        )
    return rows


def _render_detail(
    request: HttpRequest,
    approval: Approval,
    *,
    form: dict[str, Any] | None = None,
    error: str = "",
    field_errors: dict[str, str] | None = None,
    status: int = 200,
    confirm_drop_edits: bool = False,
) -> HttpResponse:
    args_json = _pretty_json(approval.args)
    decision_form = DecisionForm(approval=approval)
    typed = decision_form.arg_fields
    form = form or {"reason": "", "response": "", "edited_args": "" if typed else args_json}
    field_errors = field_errors or {}
    refusal = approval_decide_refusal(approval=approval, user=request.user) if approval.is_pending else None
    arg_inputs = _arg_inputs(decision_form, form, field_errors)
    changes = approval_arg_changes(approval)
    context = {
        "approval": approval,
        "status": approval_outcome(approval),
        "args_json": args_json,
        "arg_changes": changes,
        "arg_changed": any(change.changed for change in changes),
        "preview": preview_shown(approval.preview),
        # What the policy read, labelled as the preview's facts are ("Refunded in window: 100.00").
        "policy_facts": facts_shown(list(approval.facts.items())),
        "edited_args_json": _pretty_json(approval.edited_args) if approval.edited_args is not None else "",
        "outcome_json": _pretty_json(approval.outcome) if approval.outcome is not None else "",
        "excerpt": _excerpt(approval),
        "events": [
            {"event": event, "data_json": _pretty_json(event.data) if event.data else ""}
            for event in approval.events.all()
        ],
        "approvers": approval.approvers,
        "i_approved": approval.quorum > 1 and request.user.get_username() in approval.approvers,
        "can_decide": approval.is_pending and refusal is None,
        "cannot_decide_because": str(refusal) if refusal else "",
        "form": form,
        "arg_inputs": arg_inputs,
        "args_edited": bool(form["edited_args"].strip()) and form["edited_args"].strip() != args_json.strip(),
        "typed_edited": any(item["value"] != item["initial"] for item in arg_inputs),
        "confirm_drop_edits": confirm_drop_edits,
        "error": error,
        "args_errors": {
            name: message
            for name, message in field_errors.items()
            if name != "response" and not name.startswith("grant")
        },
        "response_error": field_errors.get("response", ""),
        "grant_offer": grant_offer(approval, form) if refusal is None else None,
        # "grant.hours" -> "hours", "grant" (the grant as a whole) -> "grant": template-friendly keys.
        "grant_errors": {
            name.partition(".")[2] or name: message
            for name, message in field_errors.items()
            if name.startswith("grant")
        },
        "grants_given": list(approval.grants_given.all()),
    }
    return render(request, "approvals/detail.html", context, status=status)


def _arg_inputs(decision_form: DecisionForm, typed: dict[str, str], field_errors: dict[str, str]) -> list[dict]:
    """One input per schema field: its value (as typed, else as proposed), limits and error."""
    args = decision_form.approval.args if isinstance(decision_form.approval.args, dict) else {}
    inputs = []
    for field in decision_form.arg_fields:
        name = arg_input_name(field)
        initial = _input_text(args.get(field.name))
        inputs.append(
            {
                "field": field,
                "name": name,
                "id": "id_" + name,
                "initial": initial,
                "value": typed.get(name, initial),
                "choices": [str(choice) for choice in field.choices],
                "error": field_errors.get(f"args.{field.name}", ""),
                "html_min": field.minimum,
                "html_max": field.maximum,
            }
        )
    return inputs


def _input_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@require_POST
@reviewer_required
def approval_viewing_now(request: HttpRequest, approval_id: int) -> JsonResponse:
    """The detail page's heartbeat: who else has this approval open (``?closing=1``: it closes)."""
    approval = Approval.objects.filter(pk=approval_id).first()
    if approval is None or not approval_routed_to(approval, request.user):
        return JsonResponse({"viewers": [], "detail": f"No approval #{approval_id} for you."}, status=404)
    username = request.user.get_username()
    if request.GET.get("closing") == "1":
        approval_viewing_stopped(approval_id=approval_id, username=username)
        return JsonResponse({"viewers": []})
    viewers = approval_viewing(approval_id=approval_id, username=username)
    return JsonResponse({"viewers": viewers, "refresh_seconds": VIEWING_REFRESH_SECONDS})
