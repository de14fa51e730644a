"""The conversations and runs REST API (``/api/conversations/...``, ``/api/runs/...``)."""

from __future__ import annotations

urlpatterns: list = []
