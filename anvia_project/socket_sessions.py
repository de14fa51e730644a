"""Websockets that last no longer than the right to them.

A socket is authorized once, when it connects. So that logging out, a session that expires or is
deleted, a deactivated account, or (for reviewers) a withdrawn permission also end it, a socket
bound to its session:

- joins its session's group, to which ``user_logged_out`` sends ``session.ended``: closed at once;
- re-checks the session (and the consumer's own rule) every ``ANVIA_SOCKET_RECHECK_SECONDS``,
  for every other way a right ends (no signal covers a permission removed in the admin, a group
  change, or a session deleted in the database). A check costs a few primary-key queries.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from importlib import import_module
from types import SimpleNamespace

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib import auth

from anvia_project.channel_layer import group_send

logger = logging.getLogger("anvia.sockets")

SESSION_ENDED = "session.ended"
# Private-use close codes mirroring HTTP 401 and 403.
CLOSE_SIGNED_OUT = 4401
CLOSE_FORBIDDEN = 4403


def session_group(session_key: str) -> str:
    # The key itself never goes to Redis: it is the login.
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def session_user(session_key: str | None):
    """The active user signed in by this session now, or ``None`` (signed out, expired, deleted,
    password changed, account deactivated)."""
    if not session_key:
        return None
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = auth.get_user(SimpleNamespace(session=store))
    return user if user.is_authenticated else None


def close_session_sockets(sender, request, user, **kwargs) -> None:
    """``user_logged_out`` receiver: close every socket opened with the session being ended."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if not session_key:
        return
    try:
        group_send(session_group(session_key), {"type": SESSION_ENDED})
    except Exception:
        # The periodic re-check closes them within seconds anyway; logging out must not fail.
        logger.warning("could not tell the sockets of an ended session (user=%s)", user and user.pk, exc_info=True)


class SessionBoundConsumer:
    """Mixin for a websocket consumer: ``await self.bind_to_session()`` once accepted,
    ``await self.unbind_session()`` on disconnect; override ``still_authorized`` to add a rule."""

    def still_authorized(self, user) -> bool:
        """Sync, in a thread: whether ``user`` (fresh from the database) may keep this socket."""
        return True

    async def bind_to_session(self) -> None:
        session = self.scope.get("session")
        self._bound_session_key = getattr(session, "session_key", None)
        self._bound_user_id = self.scope["user"].pk
        self._session_group = session_group(self._bound_session_key) if self._bound_session_key else None
        if self._session_group:
            await self.channel_layer.group_add(self._session_group, self.channel_name)
        self._recheck_task = asyncio.create_task(self._recheck_forever())

    async def unbind_session(self) -> None:
        task = getattr(self, "_recheck_task", None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if getattr(self, "_session_group", None):
            await self.channel_layer.group_discard(self._session_group, self.channel_name)

    async def session_ended(self, event: dict) -> None:
        await self.close(code=CLOSE_SIGNED_OUT)

    async def _recheck_forever(self) -> None:
        interval = settings.ANVIA_SOCKET_RECHECK_SECONDS
        # Sockets opened together (a server restart) should not all check at the same moment.
        await asyncio.sleep(interval * random.uniform(0.5, 1.0))
        while True:
            try:
                code = await database_sync_to_async(self._refusal)()
            except Exception:
                # A database blip must not close every socket at once; the next check decides.
                logger.warning("socket re-check failed (user=%s)", self._bound_user_id, exc_info=True)
                code = None
            if code is not None:
                logger.info("socket closed code=%s user=%s: no longer authorized", code, self._bound_user_id)
                await self.close(code=code)
                return
            await asyncio.sleep(interval)

    def _refusal(self) -> int | None:
        user = session_user(self._bound_session_key)
        if user is None or user.pk != self._bound_user_id:
            return CLOSE_SIGNED_OUT
        return None if self.still_authorized(user) else CLOSE_FORBIDDEN
