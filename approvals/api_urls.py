"""The approvals REST API (``/api/approvals/...``)."""

from __future__ import annotations

from django.urls import path

from approvals.api import ApprovalDecisionView, ApprovalDetailView, ApprovalListView
from approvals.grant_api import GrantDetailView, GrantListView

app_name = "api"
urlpatterns = [
    path("approvals/", ApprovalListView.as_view(), name="approval-list"),
    path("approvals/<int:pk>/", ApprovalDetailView.as_view(), name="approval-detail"),
    path("approvals/<int:pk>/decision/", ApprovalDecisionView.as_view(), name="approval-decision"),
    path("grants/", GrantListView.as_view(), name="grant-list"),
    path("grants/<int:pk>/", GrantDetailView.as_view(), name="grant-detail"),
]
