"""The conversations and runs REST API (``/api/conversations/...``, ``/api/runs/...``)."""

from __future__ import annotations

from django.urls import path

from agents.api import ConversationDetailView, ConversationListView, ConversationMessagesView, RunDetailView

app_name = "chat_api"
urlpatterns = [
    path("conversations/", ConversationListView.as_view(), name="conversation-list"),
    path("conversations/<int:pk>/", ConversationDetailView.as_view(), name="conversation-detail"),
    path("conversations/<int:pk>/messages/", ConversationMessagesView.as_view(), name="conversation-messages"),
    path("runs/<uuid:pk>/", RunDetailView.as_view(), name="run-detail"),
]
