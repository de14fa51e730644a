"""The approvals REST API (``/api/approvals/...``)."""

from __future__ import annotations

urlpatterns: list = []
