"""The reviewer websocket (``/ws/approvals/``): live queue updates for staff who may decide."""

from __future__ import annotations

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from anvia_project.socket_sessions import SessionBoundConsumer
from approvals.notifications import REVIEWERS_GROUP
from approvals.reviewers import ReviewerScope
from approvals.services import reviewer_can_decide

# Private-use close code (4000-4999) mirroring HTTP 403, so a client can tell "not allowed" apart.
CLOSE_FORBIDDEN = 4403
FORWARDED_TYPES = ("approval.created", "approval.voted", "approval.escalated", "approval.decided", "approval.expired")


def reviewer_scope_if_allowed(user) -> ReviewerScope | None:
    """The reviewer's routing scope, or ``None`` if they may not hold the socket."""
    return ReviewerScope.of(user) if reviewer_can_decide(user) else None


class ReviewerConsumer(SessionBoundConsumer, AsyncJsonWebsocketConsumer):
    """Forwards ``approval.created`` / ``.voted`` / ``.escalated`` / ``.decided`` / ``.expired``
    to one reviewer, only for the requests routed to them (the frame's ``routing``, checked against
    their groups and permissions as of the last (re)check, which group changes trigger at once).

    The socket is one-way: reviewers decide through the pages, never through this socket. It
    closes on logout at once, and within ``ANVIA_SOCKET_RECHECK_SECONDS`` when the reviewer's
    session ends or they lose the permission.
    """

    async def dispatch(self, message: dict) -> None:
        # Channels closes stale DB connections before every handler, one hop to the single shared
        # sync thread each: a broadcast to 1,000 reviewers queued 1,000 hops (~40 % of the server's
        # time, bench/reviewer_fanout.py). The forwarding handlers touch no database.
        if message.get("type") in FORWARDED_TYPES:
            await getattr(self, get_handler_name(message))(message)
            return
        await super().dispatch(message)

    async def connect(self) -> None:
        # The lazy scope user and has_perm() both query the database.
        scope = await database_sync_to_async(reviewer_scope_if_allowed)(self.scope.get("user"))
        if scope is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.reviewer_scope = scope
        await self.channel_layer.group_add(REVIEWERS_GROUP, self.channel_name)
        self.joined = True
        await self.accept()
        await self.bind_to_session()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "joined", False):
            await self.channel_layer.group_discard(REVIEWERS_GROUP, self.channel_name)
        await self.unbind_session()

    def still_authorized(self, user) -> bool:
        scope = reviewer_scope_if_allowed(user)
        if scope is None:
            return False
        self.reviewer_scope = scope  # groups may have changed: route by the new ones
        return True

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs) -> None:
        """Ignore anything a client sends."""

    async def approval_created(self, event: dict) -> None:
        await self._forward(event)

    async def approval_voted(self, event: dict) -> None:
        await self._forward(event)

    async def approval_escalated(self, event: dict) -> None:
        await self._forward(event)

    async def approval_decided(self, event: dict) -> None:
        await self._forward(event)

    async def approval_expired(self, event: dict) -> None:
        await self._forward(event)

    async def _forward(self, event: dict) -> None:
        routing = event.get("routing")
        if routing is not None and not self.reviewer_scope.admits(routing):
            return
        await self.send_json({"type": event["type"], "approval": event["approval"]})
