"""The chat websocket (``/ws/conversations/<id>/``): one conversation's runs, live, for its owner."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from agents.selectors import conversation_owner_id, timeline_item
from agents.services import conversation_group
from anvia_project.socket_sessions import SessionBoundConsumer

# Private-use close codes (4000-4999) mirroring HTTP 403 and 404, like the reviewer socket's.
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


def refusal_code(user, conversation_id: int) -> int | None:
    """Why this socket may not follow the conversation, as a close code; ``None`` for its owner."""
    # Anonymous visitors learn nothing, not even whether the conversation exists.
    if user is None or not user.is_authenticated:
        return CLOSE_FORBIDDEN
    owner_id = conversation_owner_id(conversation_id=conversation_id)
    if owner_id is None:
        return CLOSE_NOT_FOUND
    return None if owner_id == user.pk else CLOSE_FORBIDDEN


class ConversationConsumer(SessionBoundConsumer, AsyncJsonWebsocketConsumer):
    """Forwards ``run.event`` / ``run.finished`` / ``run.suspended`` to the conversation's owner.

    The socket is one-way: messages are sent through the page or the API, never through it. It
    closes when the owner's session ends (at once on logout).
    """

    async def connect(self) -> None:
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        refusal = await database_sync_to_async(refusal_code)(self.scope.get("user"), conversation_id)
        if refusal is not None:
            await self.close(code=refusal)
            return
        self.group = conversation_group(conversation_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.bind_to_session()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        await self.unbind_session()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs) -> None:
        """Ignore anything a client sends."""

    async def run_event(self, event: dict) -> None:
        # The plain words go along, so the page shows exactly what a reload renders.
        item = timeline_item(event["event"], event.get("data"))
        await self.send_json(
            {
                "type": "run.event",
                "run_id": event["run_id"],
                "event": event["event"],
                "data": event.get("data", {}),
                "item": {"kind": item.kind, "text": item.text, "key": item.key} if item else None,
            }
        )

    async def run_finished(self, event: dict) -> None:
        await self.send_json(
            {"type": "run.finished", "run_id": event["run_id"], "status": event["status"], "text": event["text"]}
        )

    async def run_suspended(self, event: dict) -> None:
        await self.send_json({"type": "run.suspended", "run_id": event["run_id"]})
