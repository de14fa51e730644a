"""Websocket routes of the approvals app."""

from __future__ import annotations

from django.urls import path

from approvals.consumers import ReviewerConsumer

websocket_urlpatterns = [
    path("ws/approvals/", ReviewerConsumer.as_asgi(), name="approvals-ws"),
]
