"""The reviewer queue (``/review/``) and one approval's page, where a reviewer decides."""

from __future__ import annotations

import json
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from approvals.errors import ApprovalError
from approvals.forms import DecisionForm
from approvals.models import Approval
from approvals.notifications import approval_summary
from approvals.selectors import approval_get, approvals_pending, preview_shown
from approvals.services import approval_decide_refusal, reviewer_can_decide

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


@require_GET
@reviewer_required
def approval_queue(request: HttpRequest) -> HttpResponse:
    pending = approvals_pending()
    return render(
        request,
        "approvals/queue.html",
        {"approvals": list(pending[:QUEUE_LIMIT]), "total": pending.count()},
    )


@require_GET
@reviewer_required
def approval_queue_json(request: HttpRequest) -> JsonResponse:
    """The queue as the websocket describes it, so the page can catch up after (re)connecting."""
    pending = approvals_pending()
    return JsonResponse({"approvals": [approval_summary(a) for a in pending[:QUEUE_LIMIT]], "total": pending.count()})


@require_http_methods(["GET", "POST"])
@reviewer_required
def approval_detail(request: HttpRequest, approval_id: int) -> HttpResponse:
    try:
        approval = approval_get(approval_id=approval_id)
    except Approval.DoesNotExist:
        raise Http404(f"No approval #{approval_id}.") from None
    if request.method == "POST":
        return _decide(request, approval)
    return _render_detail(request, approval)


def _decide(request: HttpRequest, approval: Approval) -> HttpResponse:
    form = DecisionForm(request.POST, approval=approval)
    if not form.is_valid():
        return _render_invalid(request, approval, form)
    try:
        decided = form.decide(request.user)
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
    messages.success(request, f"{DONE[form.action]} #{decided.pk} {decided.tool_name}{edited}.")
    return redirect("review:queue")


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
    first = next(iter(form.errors.values()))[0]
    return _render_detail(request, approval, form=_as_typed(request), error=first, status=400)


def _as_typed(request: HttpRequest) -> dict[str, str]:
    """What the reviewer typed, shown again with the error."""
    return {field: request.POST.get(field, "") for field in ("reason", "response", "edited_args")}


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
    form: dict[str, str] | None = None,
    error: str = "",
    field_errors: dict[str, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    args_json = _pretty_json(approval.args)
    form = form or {"reason": "", "response": "", "edited_args": args_json}
    refusal = approval_decide_refusal(approval=approval, user=request.user) if approval.is_pending else None
    context = {
        "approval": approval,
        "args_json": args_json,
        "preview": preview_shown(approval.preview),
        "edited_args_json": _pretty_json(approval.edited_args) if approval.edited_args is not None else "",
        "outcome_json": _pretty_json(approval.outcome) if approval.outcome is not None else "",
        "excerpt": _excerpt(approval),
        "events": [
            {"event": event, "data_json": _pretty_json(event.data) if event.data else ""}
            for event in approval.events.all()
        ],
        "can_decide": approval.is_pending and refusal is None,
        "cannot_decide_because": str(refusal) if refusal else "",
        "form": form,
        "args_edited": form["edited_args"].strip() not in ("", args_json.strip()),
        "error": error,
        "args_errors": {name: message for name, message in (field_errors or {}).items() if name != "response"},
        "response_error": (field_errors or {}).get("response", ""),
    }
    return render(request, "approvals/detail.html", context, status=status)
