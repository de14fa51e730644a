"""Websocket clients on the real ASGI application (origin check, session auth, routing included)."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from anvia_project.asgi import application

# The default 1 s is too tight for the consumer's auth and group_add on a loaded 2-core machine.
CONNECT_TIMEOUT = 10
RECEIVE_TIMEOUT = 5


@database_sync_to_async
def session_cookie_for(user) -> str:
    """The session cookie of ``user``, logged in."""
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def socket(
    path: str, *, session: str | None = None, origin: bytes | None = b"http://testserver"
) -> WebsocketCommunicator:
    """A browser's socket to ``path``: from ``origin``, with the ``session`` cookie if given."""
    headers = [(b"host", b"testserver")]
    if origin is not None:
        headers.append((b"origin", origin))
    if session is not None:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)
