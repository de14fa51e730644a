"""Websockets that last no longer than the right to them.

A socket is authorized once, when it connects. So that logging out, a session that expires or is
deleted, a deactivated account, or (for reviewers) a withdrawn permission also end it, a socket
bound to its session:

- joins its session's group, to which ``user_logged_out`` sends ``session.ended``: closed at once;
- joins its user's group, to which a change of the user's permissions, groups, a group's
  permissions, or the account itself (deactivated, staff flag, password) sends ``session.recheck``:
  checked again at once (``recheck_user_sockets``, connected in ``approvals.apps``);
- re-checks the session (and the consumer's own rule) every ``ANVIA_SOCKET_RECHECK_SECONDS`` as a
  safety net, for what no signal covers (a session deleted or expired in the database, a change
  made with ``update()``). A check costs a few primary-key queries on the server's one sync
  thread: every few seconds for each of a thousand reviewer sockets would slow every broadcast,
  hence signals first and a slow net.
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
SESSION_RECHECK = "session.recheck"
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


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def recheck_user_sockets(user_ids) -> None:
    """Ask every socket of these users to check its right again now."""
    for user_id in set(user_ids):
        try:
            group_send(user_group(user_id), {"type": SESSION_RECHECK})
        except Exception:
            # The periodic re-check still closes them; changing a user must not fail.
            logger.warning("could not ask the sockets of user %s to re-check", user_id, exc_info=True)


def recheck_on_user_change(sender, instance, **kwargs) -> None:
    """``post_save`` of the user model: its account may no longer allow its sockets."""
    if not kwargs.get("created"):
        recheck_user_sockets([instance.pk])


def recheck_on_permissions_change(sender, instance, action, reverse, model, pk_set, **kwargs) -> None:
    """``m2m_changed`` of a user's permissions or groups, or of a group's permissions."""
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    User = get_user_model()
    if isinstance(instance, User):
        recheck_user_sockets([instance.pk])
    elif model is User:
        recheck_user_sockets(pk_set or [])
    elif isinstance(instance, Group):
        recheck_user_sockets(instance.user_set.values_list("pk", flat=True))
    elif model is Group and pk_set:
        recheck_user_sockets(User.objects.filter(groups__in=pk_set).values_list("pk", flat=True))
    elif pk_set:  # a permission's users or groups, from the permission's side
        users = User.objects.filter(pk__in=pk_set) if model is User else User.objects.filter(groups__in=pk_set)
        recheck_user_sockets(users.values_list("pk", flat=True))


def connect_recheck_signals() -> None:
    """Connect the receivers above (once, from an app's ``ready``)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db.models.signals import m2m_changed, post_save

    User = get_user_model()
    post_save.connect(recheck_on_user_change, sender=User, dispatch_uid="anvia.recheck_on_user_change")
    for through in (User.user_permissions.through, User.groups.through, Group.permissions.through):
        m2m_changed.connect(
            recheck_on_permissions_change, sender=through, dispatch_uid=f"anvia.recheck_on_{through.__name__}"
        )


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
        await self.channel_layer.group_add(user_group(self._bound_user_id), self.channel_name)
        self._recheck_task = asyncio.create_task(self._recheck_forever())

    async def unbind_session(self) -> None:
        task = getattr(self, "_recheck_task", None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if getattr(self, "_session_group", None):
            await self.channel_layer.group_discard(self._session_group, self.channel_name)
        if getattr(self, "_bound_user_id", None) is not None:
            await self.channel_layer.group_discard(user_group(self._bound_user_id), self.channel_name)

    async def session_ended(self, event: dict) -> None:
        await self.close(code=CLOSE_SIGNED_OUT)

    async def session_recheck(self, event: dict) -> None:
        await self._check_once()

    async def _recheck_forever(self) -> None:
        interval = settings.ANVIA_SOCKET_RECHECK_SECONDS
        # Sockets opened together (a server restart) should not all check at the same moment.
        await asyncio.sleep(interval * random.uniform(0.5, 1.0))
        while True:
            if await self._check_once():
                return
            await asyncio.sleep(interval)

    async def _check_once(self) -> bool:
        """Close the socket if its right ended; ``True`` when it did."""
        try:
            code = await database_sync_to_async(self._refusal)()
        except Exception:
            # A database blip must not close every socket at once; the next check decides.
            logger.warning("socket re-check failed (user=%s)", self._bound_user_id, exc_info=True)
            return False
        if code is None:
            return False
        logger.info("socket closed code=%s user=%s: no longer authorized", code, self._bound_user_id)
        await self.close(code=code)
        return True

    def _refusal(self) -> int | None:
        user = session_user(self._bound_session_key)
        if user is None or user.pk != self._bound_user_id:
            return CLOSE_SIGNED_OUT
        return None if self.still_authorized(user) else CLOSE_FORBIDDEN
