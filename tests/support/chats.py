"""A customer's message, posted the way the chat posts it."""

from __future__ import annotations

from agents.models import AgentRun
from agents.services import conversation_create, conversation_post_message


def ask(customer, text: str = "help me with my order") -> AgentRun:
    """A new conversation of ``customer``'s with ``text`` posted: the run it queued."""
    return conversation_post_message(conversation=conversation_create(user=customer), content=text)
