"""The reviewer's standing grants page (``/review/grants/``): search, state, usage, revoke."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from approvals.errors import ApprovalError
from approvals.grants import (
    grant_revoke,
    grant_state,
    grant_total_left,
    grant_uses_left,
    grants_list,
)
from approvals.models import Grant
from approvals.views import reviewer_required

GRANTS_LIMIT = 500
STATE_WORDS = {"active": "Active", "expired": "Expired", "revoked": "Revoked", "used_up": "Used up"}
STATE_CHOICES = [("", "Any state"), *STATE_WORDS.items()]


@dataclass(frozen=True)
class GrantRow:
    grant: Grant
    state: str
    state_text: str
    uses_left: int
    total_left: Decimal | None


@require_GET
@reviewer_required
def grant_list(request: HttpRequest) -> HttpResponse:
    chosen = {name: request.GET.get(name, "").strip()[:200] for name in ("q", "state", "tool", "customer")}
    if chosen["state"] not in STATE_WORDS:
        chosen["state"] = ""
    grants = grants_list(state=chosen["state"], tool=chosen["tool"], customer=chosen["customer"], search=chosen["q"])
    now = timezone.now()
    rows = []
    for grant in grants[:GRANTS_LIMIT]:
        state = grant_state(grant, now=now)
        rows.append(GrantRow(grant, state, STATE_WORDS[state], grant_uses_left(grant), grant_total_left(grant)))
    return render(
        request,
        "approvals/grants.html",
        {"rows": rows, "chosen": chosen, "states": STATE_CHOICES, "filtered": any(chosen.values())},
    )


@require_POST
@reviewer_required
def grant_revoke_view(request: HttpRequest, grant_id: int) -> HttpResponse:
    try:
        grant, changed = grant_revoke(grant_id=grant_id, user=request.user)
    except ApprovalError as error:
        messages.error(request, str(error))
    else:
        if changed:
            messages.success(request, f"Revoked grant #{grant.pk}: it covers no more calls.")
        else:
            by = grant.revoked_by.get_username() if grant.revoked_by else "someone"
            messages.info(request, f"Grant #{grant.pk} was already revoked by {by}.")
    back = request.POST.get("next", "")
    if back and url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        return redirect(back)
    return redirect("review:grants")
