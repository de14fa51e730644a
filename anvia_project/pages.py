"""The home page and where signing in lands: each person sees, and lands on, what they may use."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from approvals.services import reviewer_can_decide


def landing_url(user) -> str:
    """Reviewers start at their queue, everyone else at their conversations."""
    return reverse("review:queue") if reviewer_can_decide(user) else reverse("chat:index")


def home(request: HttpRequest) -> HttpResponse:
    user = request.user
    return render(
        request,
        "home.html",
        {
            "can_review": reviewer_can_decide(user),
            "can_admin": bool(user.is_authenticated and user.is_active and user.is_staff),
        },
    )


class LoginView(auth_views.LoginView):
    """A ``next`` (a link from a reviewer's email) wins; without one, land where the user works."""

    def get_default_redirect_url(self) -> str:
        return landing_url(self.request.user)
