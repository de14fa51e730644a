"""The reviewer queue (``/review/``)."""

from __future__ import annotations

from django.urls import path

from approvals import grant_views, reviewer_settings, views

app_name = "review"
urlpatterns = [
    path("", views.approval_queue, name="queue"),
    path("bulk/", views.approval_queue_bulk, name="bulk"),
    path("pending.json", views.approval_queue_json, name="pending"),
    path("<int:approval_id>/", views.approval_detail, name="detail"),
    path("<int:approval_id>/viewing/", views.approval_viewing_now, name="viewing"),
    path("settings/", reviewer_settings.reviewer_settings, name="settings"),
    path("grants/", grant_views.grant_list, name="grants"),
    path("grants/<int:grant_id>/revoke/", grant_views.grant_revoke_view, name="grant-revoke"),
]
