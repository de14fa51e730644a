"""Websocket routes of every app, in one list."""

from __future__ import annotations

from agents.routing import websocket_urlpatterns as agents_websocket_urlpatterns
from approvals.routing import websocket_urlpatterns as approvals_websocket_urlpatterns

websocket_urlpatterns: list = [
    *approvals_websocket_urlpatterns,
    *agents_websocket_urlpatterns,
]
