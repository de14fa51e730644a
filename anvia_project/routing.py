"""Websocket routes of every app, in one list."""

from __future__ import annotations

websocket_urlpatterns: list = []
