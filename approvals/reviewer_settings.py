"""A reviewer's own notification settings (``/review/settings/``): email on or off."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from approvals.notifications import reviewer_email_enabled, reviewer_email_set
from approvals.views import reviewer_required


@require_http_methods(["GET", "POST"])
@reviewer_required
def reviewer_settings(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        enabled = request.POST.get("email") == "on"
        reviewer_email_set(user=request.user, enabled=enabled)
        messages.success(
            request,
            "You will get an email when a request you may decide is waiting."
            if enabled
            else "Emails are off: new requests show only in the review queue.",
        )
        return redirect("review:settings")
    return render(
        request,
        "approvals/settings.html",
        {"email_enabled": reviewer_email_enabled(request.user), "has_address": bool(request.user.email)},
    )
