"""The customer chat (``/chat/``)."""

from __future__ import annotations

from django.urls import path

from agents import views

app_name = "chat"
urlpatterns = [
    path("", views.conversation_index, name="index"),
    path("new/", views.conversation_new, name="new"),
    path("<int:conversation_id>/", views.conversation_detail, name="detail"),
]
